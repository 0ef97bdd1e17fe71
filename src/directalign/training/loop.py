"""The training loop: setup -> data -> model -> train loop -> checkpoint, on accelerate.

It assumes neither one process nor one device: micro-batches are sliced per process, the model goes through
accelerator.prepare, and all device placement asks the accelerator. `accelerate launch` scales it out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from directalign.data.batching import build_batch, token_budget_batches
from directalign.data.pipeline import prepare_data
from directalign.errors import TrainingError
from directalign.evaluation.preference import evaluate_preferences
from directalign.models.loading import load_model, load_tokenizer
from directalign.models.logprobs import ResponseLogProbs, sequence_logps
from directalign.models.precision import store_frozen_linears_in
from directalign.models.reference import (
    AdapterReference,
    CachedReference,
    FrozenReference,
    cached_reference_logps,
    compute_reference_logps,
    reference_cache_key,
    weights_fingerprint,
    with_reference_logps,
)
from directalign.training.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from directalign.training.config import TrainConfig
from directalign.training.guard import RunGuard
from directalign.training.kto import KTOObjective, kto_weights
from directalign.training.metrics import MetricsWriter, RunningMean
from directalign.training.objective import pair_loss, pair_metrics, pair_terms
from directalign.training.optim import Throughput, make_accelerator, make_optimizer, optimizer_step


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    eval_before: dict | None
    eval_after: dict | None
    last_metrics: dict
    stop_reason: str | None = None  # a health stop (kl_budget, early_stopping), in words


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
        if cfg.bf16:  # the frozen base weights, cast once instead of by autocast on every forward pass
            store_frozen_linears_in(model, torch.bfloat16)
    return model


def frozen_copy(cfg: TrainConfig, model) -> FrozenReference:
    """The full fine-tuning reference: a frozen copy of the model, its linear weights in bf16 under bf16."""
    reference = FrozenReference.copy_of(model)
    if cfg.bf16:
        store_frozen_linears_in(reference.scorer.model, torch.bfloat16)
    return reference


class MicroBatches:
    """Deterministic micro-batch schedule: a function of (seed, step), so a resumed run sees the same data.

    Each epoch visits the records in a seeded permutation (in file order with shuffle=False), cut into global
    micro-batches of batch_size records per process, or, with max_tokens, of as many consecutive records as fit in
    max_tokens tokens per process (token_counts[i] is record i's).
    """

    def __init__(
        self,
        n_records: int,
        batch_size: int,
        accumulation: int,
        seed: int,
        num_processes: int = 1,
        *,
        shuffle: bool = True,
        token_counts: list[int] | None = None,
        max_tokens: int | None = None,
    ):
        self.n, self.seed, self.shuffle = n_records, seed, shuffle
        self.global_batch = batch_size * num_processes
        self.accumulation = accumulation
        self.token_counts = token_counts
        self.token_budget = None if max_tokens is None else max_tokens * num_processes
        self._batches: tuple[int, list[list[int]]] | None = None  # the last epoch asked for, and its micro-batches
        self._lengths: dict[int, int] = {}
        self.per_epoch = len(self.epoch(0))

    def epoch(self, epoch: int) -> list[list[int]]:
        if self._batches is None or self._batches[0] != epoch:
            order = np.random.default_rng(self.seed + epoch).permutation(self.n) if self.shuffle else np.arange(self.n)
            order = order.tolist()
            if self.token_budget is None:
                batches = [order[j : j + self.global_batch] for j in range(0, self.n, self.global_batch)]
            else:
                batches = token_budget_batches(order, self.token_counts, self.token_budget)
            self._batches = (epoch, batches)
            self._lengths[epoch] = len(batches)
        return self._batches[1]

    def _length(self, epoch: int) -> int:
        if self.token_budget is None:
            return self.per_epoch
        if epoch not in self._lengths:
            self._lengths[epoch] = len(self.epoch(epoch))
        return self._lengths[epoch]

    def _locate(self, g: int) -> tuple[int, int]:
        """(epoch, index within it) of the g-th micro-batch of the run."""
        epoch = 0
        while g >= self._length(epoch):
            g -= self._length(epoch)
            epoch += 1
        return epoch, g

    def steps_for(self, epochs: float) -> int:
        whole = int(epochs)
        micro = sum(self._length(e) for e in range(whole)) + (epochs - whole) * self._length(whole)
        return max(1, math.ceil(micro / self.accumulation))

    def indices(self, step: int, micro: int) -> list[int]:
        epoch, j = self._locate(step * self.accumulation + micro)
        return self.epoch(epoch)[j]

    def epoch_at(self, step: int) -> float:
        epoch, j = self._locate(step * self.accumulation)
        return epoch + j / self._length(epoch)


def train(cfg: TrainConfig, on_step=None) -> TrainResult:
    """Run (or resume) a training job; `on_step(step, metrics)` is called after every optimizer step."""
    cfg.validate()
    out = Path(cfg.output_dir)
    accelerator = make_accelerator(cfg.bf16)
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
    schedule = MicroBatches(
        len(data.train),
        cfg.per_device_train_batch_size,
        cfg.gradient_accumulation_steps,
        cfg.seed,
        accelerator.num_processes,
        shuffle=cfg.train_sampling_strategy == "random",
        token_counts=[r.num_tokens_unshared if cfg.layout == "padded" else r.num_tokens for r in data.train],
        max_tokens=cfg.max_tokens_per_batch,
    )
    total_steps = cfg.max_steps if cfg.max_steps > 0 else schedule.steps_for(cfg.num_train_epochs)
    trainable, optimizer, scheduler = make_optimizer(cfg, policy, total_steps)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    inner = accelerator.unwrap_model(policy)
    reference = build_reference(cfg, inner, data, tokenizer, accelerator) if cfg.needs_reference else None

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
    guard = RunGuard(cfg, data, tokenizer, inner, reference, metrics_file, log, accelerator.is_main_process)
    kto = None
    if cfg.loss_type == "kto":
        weights = kto_weights(cfg, data.train)
        log(weights.describe())
        kto = KTOObjective(cfg, weights, tokenizer.pad_token_id)

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
        result.update(guard.measure(tag, step))
        metrics_file.write({"step": step, "split": "eval", "tag": tag, **result})
        log(f"eval ({tag}, step {step}): " + ", ".join(f"{k} {v:.4g}" for k, v in result.items()))
        guard.observe({"step": step, "split": "eval", "tag": tag, **result})
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
    throughput = Throughput()
    row_budget = cfg.max_tokens_per_row or cfg.max_tokens_per_batch
    for step in range(start_step, total_steps):
        micro_batches = [
            [data.train[i] for i in schedule.indices(step, m)[accelerator.process_index :: accelerator.num_processes]]
            for m in range(cfg.gradient_accumulation_steps)
        ]
        # Every pair of the step weighs the same, however many pairs each micro-batch holds.
        step_pairs = sum(len(r.labels) if kto else len(r.pairs) for records in micro_batches for r in records)
        for records in micro_batches:
            batch = build_batch(records, tokenizer.pad_token_id, cfg.layout, row_budget)
            batch = batch.to(accelerator.device)
            if kto is not None:  # unpaired examples, and a second, gradient-free pass for the KL estimate
                with accelerator.autocast():
                    pair_losses, step_metrics = kto(policy, reference, records, batch)
            else:
                with accelerator.autocast():
                    policy_logps = sequence_logps(policy(batch), batch)
                    ref_logps = reference.sequence_logps(batch) if reference is not None else None
                terms = pair_terms(policy_logps.float(), ref_logps, batch)
                pair_losses, chosen_r, rejected_r = pair_loss(cfg, terms)
                step_metrics = pair_metrics(terms, pair_losses.mean(), chosen_r, rejected_r)
            loss = pair_losses.mean()
            if not torch.isfinite(loss):
                kept = list_checkpoints(out)
                where = f"the last good checkpoint is {kept[-1]}" if kept else "no checkpoint had been written yet"
                raise TrainingError(
                    f"non-finite loss ({loss.item()}) at step {step + 1} on records "
                    f"{[r.source for r in records][:4]}; {where}. Lower learning_rate or beta."
                )
            accelerator.backward(pair_losses.sum() / step_pairs)
            running.add(step_metrics)
            throughput.add(int(pair_losses.numel()), batch.num_tokens)
        running.add({"grad_norm": optimizer_step(cfg, trainable, optimizer, scheduler, accelerator)})
        done = step + 1
        bar.update(1)
        if done % cfg.logging_steps == 0 or done == total_steps:
            last = {
                "step": done,
                "split": "train",
                "epoch": round(schedule.epoch_at(done), 4),
                **running.pop(),
                "learning_rate": scheduler.get_last_lr()[0],
                **throughput.pop(),
            }
            metrics_file.write(last)
            guard.observe(last)
            # On training pairs `kl` is a mean log-ratio (KTO: its z0 estimate), not a KL: it goes negative as
            # the rejected responses lose likelihood, so the bar calls it what it is.
            shown = {"loss": "loss", "acc": "rewards/accuracies", "margin": "rewards/margins"}
            shown["kl_z0" if kto is not None else "logratio"] = "kl"
            bar.set_postfix({k: f"{last[m]:.4g}" for k, m in shown.items() if last.get(m) is not None})
        with throughput.paused():  # evaluation and checkpoints do not count against the training rate
            if cfg.eval_steps and done % cfg.eval_steps == 0 and done < total_steps:
                evaluate("periodic", done)
            if accelerator.is_main_process and cfg.save_steps and done % cfg.save_steps == 0 and done < total_steps:
                save_checkpoint(
                    out, done, inner, optimizer, scheduler, {"total_steps": total_steps}, cfg.save_total_limit
                )
        if on_step is not None:
            on_step(done, last)
        if guard.should_stop:
            break
    bar.close()
    final_step = guard.finish(out, total_steps)
    eval_after = evaluate("after", final_step)
    if accelerator.is_main_process:
        save_final(cfg, inner.model, tokenizer, out)
    return TrainResult(out, final_step, eval_before, eval_after, last, guard.stop_message)


def build_reference(cfg: TrainConfig, inner: ResponseLogProbs, data, tokenizer, accelerator):
    """The reference of the loss: the adapter-disabled policy or a frozen copy, run live on each batch; or, with
    precompute_ref_log_probs, their log-probs computed once (or read from the cache) and attached to the records."""
    if not cfg.precompute_ref_log_probs:
        return AdapterReference(inner) if cfg.use_peft else frozen_copy(cfg, inner.model)
    # Full fine-tuning keeps no frozen copy unless the held-out KL samples need one: the policy before its first
    # step (and before a checkpoint is loaded) scores the records.
    if cfg.use_peft:
        live = AdapterReference(inner)
    else:
        live = frozen_copy(cfg, inner.model) if cfg.kl_prompts > 0 else None
    weights = weights_fingerprint(inner.model)
    was_training = inner.training
    inner.eval()

    @torch.no_grad()
    def score(batch):
        with accelerator.autocast():
            return live.sequence_logps(batch) if live is not None else sequence_logps(inner(batch), batch)

    for split in ("train", "eval"):
        records = getattr(data, split)
        if not records:
            continue
        key = reference_cache_key(
            weights,
            records,
            model=cfg.model,
            tokenizer=[tokenizer.name_or_path, len(tokenizer)],
            max_length=cfg.max_length,
            max_prompt_length=cfg.max_prompt_length,
            bf16=cfg.bf16,
        )
        logps, hit = cached_reference_logps(
            key,
            lambda records=records: compute_reference_logps(
                score,
                records,
                pad_token_id=tokenizer.pad_token_id,
                batch_size=cfg.per_device_eval_batch_size,
                layout=cfg.layout,
                max_tokens_per_row=cfg.max_tokens_per_row,
                device=accelerator.device,
            ),
            [len(r.response_ids) for r in records],
        )
        state = "read from the cache" if hit else "computed and cached"
        accelerator.print(f"reference log-probs ({split}, {len(records)} records): {state} ({key})")
        setattr(data, split, with_reference_logps(records, logps))
    inner.train(was_training)
    return CachedReference(live)


def save_final(cfg: TrainConfig, model, tokenizer, out: Path) -> None:
    """The adapter (or full model) in the standard layout, and with `merge` a model plain from_pretrained opens."""
    target = out / ("adapter" if cfg.use_peft else "model")
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    if cfg.use_peft and cfg.merge:
        if cfg.bf16:  # merge into the original fp32 base weights, not the bf16 copies the run trained over
            from peft import PeftModel

            model = PeftModel.from_pretrained(load_model(cfg.model), target)
        merged = model.merge_and_unload()
        merged.save_pretrained(out / "merged")
        tokenizer.save_pretrained(out / "merged")
