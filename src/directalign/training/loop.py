"""The training loop: setup -> data -> model -> train loop -> checkpoint, on accelerate.

It assumes neither one process nor one device: micro-batches are sliced per process, the model goes through
accelerator.prepare, and all device placement asks the accelerator. `accelerate launch` scales it out.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from directalign.data.batching import build_batch
from directalign.data.pipeline import prepare_data
from directalign.errors import TrainingError
from directalign.evaluation.preference import evaluate_preferences
from directalign.models.loading import load_model, load_tokenizer
from directalign.models.logprobs import ResponseLogProbs, sequence_logps
from directalign.models.reference import AdapterReference, FrozenReference
from directalign.training.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from directalign.training.config import TrainConfig
from directalign.training.metrics import MetricsWriter, RunningMean
from directalign.training.objective import pair_loss, pair_metrics, pair_terms


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    eval_before: dict | None
    eval_after: dict | None
    last_metrics: dict


def build_policy(cfg: TrainConfig):
    model = load_model(cfg.model, attn_implementation=cfg.attn_implementation)
    if cfg.use_peft:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=cfg.lora_target_modules,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    return model


class MicroBatches:
    """Deterministic micro-batch schedule: a function of (seed, step), so a resumed run sees the same data."""

    def __init__(self, n_records: int, batch_size: int, accumulation: int, seed: int, num_processes: int = 1):
        self.n, self.seed = n_records, seed
        self.global_batch = batch_size * num_processes
        self.accumulation = accumulation
        self.per_epoch = math.ceil(n_records / self.global_batch)

    def steps_for(self, epochs: float) -> int:
        return max(1, math.ceil(epochs * self.per_epoch / self.accumulation))

    def indices(self, step: int, micro: int) -> list[int]:
        g = step * self.accumulation + micro
        epoch, j = divmod(g, self.per_epoch)
        order = np.random.default_rng(self.seed + epoch).permutation(self.n)
        return order[j * self.global_batch : (j + 1) * self.global_batch].tolist()

    def epoch_at(self, step: int) -> float:
        return step * self.accumulation / self.per_epoch


def train(cfg: TrainConfig, on_step=None) -> TrainResult:
    """Run (or resume) a training job; `on_step(step, metrics)` is called after every optimizer step."""
    cfg.validate()
    out = Path(cfg.output_dir)
    accelerator = Accelerator(mixed_precision="bf16" if cfg.bf16 else "no")
    set_seed(cfg.seed)
    log = accelerator.print

    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(cfg, tokenizer)
    log(f"data: {data.description}")
    for note in data.notes:
        log(f"  {note}")
    if not data.train:
        raise TrainingError("no training records left after loading and tokenisation")

    model = build_policy(cfg)
    policy = ResponseLogProbs(model, cfg.logits_chunk_size)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, betas=(cfg.adam_beta1, cfg.adam_beta2)
    )
    schedule = MicroBatches(
        len(data.train),
        cfg.per_device_train_batch_size,
        cfg.gradient_accumulation_steps,
        cfg.seed,
        accelerator.num_processes,
    )
    total_steps = cfg.max_steps if cfg.max_steps > 0 else schedule.steps_for(cfg.num_train_epochs)
    warmup = cfg.warmup_steps or int(round(cfg.warmup_ratio * total_steps))
    scheduler = get_scheduler(
        cfg.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps
    )
    policy, optimizer = accelerator.prepare(policy, optimizer)
    inner = accelerator.unwrap_model(policy)
    reference = None
    if cfg.needs_reference:
        reference = AdapterReference(inner) if cfg.use_peft else FrozenReference.copy_of(inner.model)

    start_step = 0
    checkpoints = list_checkpoints(out) if cfg.resume else []
    if checkpoints:
        state = load_checkpoint(checkpoints[-1], inner, optimizer, scheduler)
        start_step = state["step"]
        log(f"resuming from {checkpoints[-1]} (step {start_step} of {total_steps})")
    metrics_file = MetricsWriter(out / "metrics.jsonl", resume_from_step=start_step if checkpoints else None)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    def evaluate(tag: str, step: int) -> dict | None:
        if not data.eval:
            return None
        result = evaluate_preferences(
            inner,
            data.eval,
            pad_token_id=tokenizer.pad_token_id,
            beta=cfg.beta,
            reference=reference,
            batch_size=cfg.per_device_eval_batch_size,
            layout=cfg.layout,
            device=accelerator.device,
        )
        metrics_file.write({"step": step, "split": "eval", "tag": tag, **result})
        log(f"eval ({tag}, step {step}): " + ", ".join(f"{k} {v:.4g}" for k, v in result.items()))
        return result

    eval_before = evaluate("before", 0) if cfg.eval_before_training and start_step == 0 else None
    policy.train()
    running = RunningMean()
    last: dict = {}
    bar = tqdm(
        total=total_steps,
        initial=start_step,
        desc="train",
        unit="step",
        disable=not accelerator.is_local_main_process,
        dynamic_ncols=True,
    )
    window_start, window_pairs, window_tokens = time.perf_counter(), 0, 0
    for step in range(start_step, total_steps):
        for micro in range(cfg.gradient_accumulation_steps):
            idx = schedule.indices(step, micro)[accelerator.process_index :: accelerator.num_processes]
            records = [data.train[i] for i in idx]
            batch = build_batch(records, tokenizer.pad_token_id, cfg.layout, cfg.max_tokens_per_row)
            batch = batch.to(accelerator.device)
            with accelerator.autocast():
                policy_logps = sequence_logps(policy(batch), batch)
            ref_logps = reference.sequence_logps(batch) if reference is not None else None
            terms = pair_terms(policy_logps.float(), ref_logps, batch)
            loss, chosen_r, rejected_r = pair_loss(cfg, terms)
            loss = loss.mean()
            if not torch.isfinite(loss):
                kept = list_checkpoints(out)
                where = (
                    f"the last good checkpoint is {kept[-1]}"
                    if kept
                    else "no checkpoint had been written yet"
                )
                raise TrainingError(
                    f"non-finite loss ({loss.item()}) at step {step + 1} on records "
                    f"{[r.source for r in records][:4]}; {where}. Lower learning_rate or beta."
                )
            accelerator.backward(loss / cfg.gradient_accumulation_steps)
            running.add(pair_metrics(terms, loss, chosen_r, rejected_r))
            window_pairs += int(batch.chosen_index.numel())
            window_tokens += batch.num_tokens
        grad_norm = accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        running.add({"grad_norm": float(grad_norm)})
        done = step + 1
        bar.update(1)
        if done % cfg.logging_steps == 0 or done == total_steps:
            elapsed = time.perf_counter() - window_start
            last = {
                "step": done,
                "split": "train",
                "epoch": round(schedule.epoch_at(done), 4),
                **running.pop(),
                "learning_rate": scheduler.get_last_lr()[0],
                "pairs_per_s": window_pairs / elapsed,
                "tokens_per_s": window_tokens / elapsed,
            }
            metrics_file.write(last)
            bar.set_postfix(
                loss=f"{last['loss']:.4f}",
                acc=f"{last['rewards/accuracies']:.2f}",
                margin=f"{last['rewards/margins']:.3f}",
                pairs_s=f"{last['pairs_per_s']:.2f}",
            )
            window_start, window_pairs, window_tokens = time.perf_counter(), 0, 0
        if cfg.eval_steps and done % cfg.eval_steps == 0 and done < total_steps:
            evaluate("periodic", done)
        if (
            accelerator.is_main_process
            and cfg.save_steps
            and done % cfg.save_steps == 0
            and done < total_steps
        ):
            save_checkpoint(
                out, done, inner, optimizer, scheduler, {"total_steps": total_steps}, cfg.save_total_limit
            )
        if on_step is not None:
            on_step(done, last)
    bar.close()
    eval_after = evaluate("after", total_steps)
    if accelerator.is_main_process:
        save_final(cfg, inner.model, tokenizer, out)
    return TrainResult(out, total_steps, eval_before, eval_after, last)


def save_final(cfg: TrainConfig, model, tokenizer, out: Path) -> None:
    """The adapter (or full model) in the standard layout, and with `merge` a model plain from_pretrained opens."""
    target = out / ("adapter" if cfg.use_peft else "model")
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    if cfg.use_peft and cfg.merge:
        merged = model.merge_and_unload()
        merged.save_pretrained(out / "merged")
        tokenizer.save_pretrained(out / "merged")
