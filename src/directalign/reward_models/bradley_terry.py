"""Bradley-Terry reward model training: setup -> data -> model -> train loop -> atomic save.

The model is the policy's architecture with a one-output score head (AutoModelForSequenceClassification,
num_labels=1, from the same weights; the head starts fresh), trained with LoRA (the head fully trained through
modules_to_save) or in full. For a pair with rewards r_c (chosen) and r_r (rejected) the loss is

    L = -log sigmoid(r_c - r_r - m)

the Bradley-Terry likelihood of the preference (Ouyang et al. 2022, "Training language models to follow
instructions with human feedback", eq. 1), with an optional margin m that asks the chosen reward to lead by
at least m (Touvron et al. 2023, "Llama 2", eq. 2). Metrics follow TRL's RewardTrainer: accuracy (share of
pairs with r_c > r_r) and margin (mean r_c - r_r), on the training batches and on held-out pairs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from directalign.errors import ConfigError, DataError, TrainingError
from directalign.models.loading import DEFAULT_MODEL
from directalign.reward_models.scoring import METADATA_FILE, MODEL_FOLDER, sequence_rewards

Pair = tuple[list[int], list[int]]  # token ids of prompt + chosen, prompt + rejected


@dataclass
class RewardModelConfig:
    """Options of `train_reward_model`; names follow TrainingArguments / TRL RewardConfig where they exist."""

    data: str | None = None
    model: str = DEFAULT_MODEL
    output_dir: str = "runs/reward-model"
    eval_data: str | None = None
    eval_split: float = 0.1  # held-out fraction of `data` when eval_data is not given
    max_train_records: int | None = None  # first N records after the split (a quick run on a subset)
    max_eval_records: int | None = None
    margin: float = 0.0
    max_length: int = 512
    max_prompt_length: int = 384
    use_chat_template: bool = True
    learning_rate: float = 1e-4
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.1
    lr_scheduler_type: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42
    use_peft: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    lora_modules_to_save: list[str] = field(default_factory=lambda: ["score"])
    lora_layers: int | None = None  # LoRA on the last N decoder layers only (None: all); see load_backbone
    bf16: bool = False
    logging_steps: int = 5
    eval_steps: int | None = None
    eval_before_training: bool = True

    def validate(self) -> RewardModelConfig:
        problems = []
        if not self.data:
            problems.append("data is required (a preference file)")
        if not 0 <= self.eval_split < 1:
            problems.append(f"eval_split must be in [0, 1), got {self.eval_split}")
        if self.max_prompt_length >= self.max_length:
            problems.append(
                f"max_prompt_length ({self.max_prompt_length}) must be below max_length ({self.max_length})"
            )
        if self.per_device_train_batch_size < 1 or self.gradient_accumulation_steps < 1:
            problems.append("per_device_train_batch_size and gradient_accumulation_steps must be at least 1")
        if self.learning_rate <= 0:
            problems.append(f"learning_rate must be positive, got {self.learning_rate}")
        if self.logging_steps < 1:
            problems.append(f"logging_steps must be at least 1, got {self.logging_steps}")
        if problems:
            raise ConfigError("reward model: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def bradley_terry_loss(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, margin: float | torch.Tensor = 0.0
) -> torch.Tensor:
    """-log sigmoid(r_c - r_r - margin) per pair, shape (num_pairs,) (module docstring)."""
    return -F.logsigmoid(chosen_rewards - rejected_rewards - margin)


@dataclass
class RewardTrainResult:
    output_dir: Path
    model_dir: Path
    steps: int
    eval_before: dict | None
    eval_after: dict | None
    last_metrics: dict


def load_backbone(cfg: RewardModelConfig, tokenizer: Any) -> torch.nn.Module:
    """The policy's weights under a one-output score head, pad_token_id set, LoRA-wrapped when use_peft.

    With lora_layers = N only the last N decoder layers get adapters: nothing below them needs a gradient, so
    the backward pass stops there, which on CPU roughly halves a step when N is small.
    """
    from transformers import AutoModelForSequenceClassification

    from directalign.models.loading import resolve_model

    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            resolve_model(cfg.model), num_labels=1, pad_token_id=tokenizer.pad_token_id, dtype=torch.float32
        )
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load {cfg.model!r} as a sequence classifier: {err}") from err
    if not cfg.use_peft:
        return model
    from peft import LoraConfig, get_peft_model

    layers = None
    if cfg.lora_layers is not None:
        total = model.config.num_hidden_layers
        if not 1 <= cfg.lora_layers <= total:
            raise ConfigError(f"lora_layers must be between 1 and {total} (the model's layers), got {cfg.lora_layers}")
        layers = list(range(total - cfg.lora_layers, total))
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules,
        modules_to_save=cfg.lora_modules_to_save,
        layers_to_transform=layers,
        layers_pattern="layers" if layers else None,
        task_type="SEQ_CLS",
    )
    return get_peft_model(model, lora)


def prepare_pairs(records: list, tokenizer: Any, cfg: RewardModelConfig) -> list[Pair]:
    """Every (preferred, dispreferred) pair of every record as two token sequences (see scoring.encode)."""
    from directalign.data.tokenize import tokenize_records

    tokenized = tokenize_records(
        records,
        tokenizer,
        max_length=cfg.max_length,
        max_prompt_length=cfg.max_prompt_length,
        use_chat_template=cfg.use_chat_template,
    ).records
    return [(t.prompt_ids + t.response_ids[c], t.prompt_ids + t.response_ids[r]) for t in tokenized for c, r in t.pairs]


def pair_rewards(model: torch.nn.Module, pairs: list[Pair], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen rewards, rejected rewards) of a batch of pairs, from one forward pass over both sides."""
    rewards = sequence_rewards(model, [c for c, _ in pairs] + [r for _, r in pairs], pad_token_id)
    return rewards[: len(pairs)], rewards[len(pairs) :]


def pair_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    return {
        "accuracy": (chosen > rejected).sum().item() / len(chosen),
        "margin": float((chosen - rejected).mean()),
        "rewards/chosen": float(chosen.mean()),
        "rewards/rejected": float(rejected.mean()),
    }


@torch.no_grad()
def evaluate_reward_model(
    model: torch.nn.Module, pairs: list[Pair], pad_token_id: int, batch_size: int = 16, margin: float = 0.0
) -> dict[str, float]:
    """Held-out accuracy (r_c > r_r), mean margin and mean loss over pairs."""
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    for start in range(0, len(pairs), batch_size):
        c, r = pair_rewards(model, pairs[start : start + batch_size], pad_token_id)
        chosen.append(c.cpu())
        rejected.append(r.cpu())
    model.train(was_training)
    c, r = torch.cat(chosen), torch.cat(rejected)
    return {
        "accuracy": (c > r).sum().item() / len(c),  # exact, not a float32 mean
        "mean_margin": float((c - r).mean()),
        "loss": float(bradley_terry_loss(c, r, margin).mean()),
        "n_pairs": len(pairs),
    }


def train_reward_model(cfg: RewardModelConfig, on_step=None) -> RewardTrainResult:
    """Train (see the module docstring), log to metrics.jsonl beside the outputs and save the model atomically.

    on_step(step, metrics) is called after every optimizer step.
    """
    from accelerate.utils import set_seed

    from directalign.models.loading import load_tokenizer
    from directalign.training.metrics import MetricsWriter, RunningMean
    from directalign.training.optim import Throughput, make_accelerator, make_optimizer, optimizer_step

    cfg.validate()
    out = Path(cfg.output_dir)
    accelerator = make_accelerator(cfg.bf16)
    set_seed(cfg.seed)
    log = accelerator.print
    tokenizer = load_tokenizer(cfg.model)
    train_pairs, eval_pairs, description = _load_pairs(cfg, tokenizer)
    log(f"data: {description}")

    model = load_backbone(cfg, tokenizer)
    batches_per_epoch = math.ceil(len(train_pairs) / cfg.per_device_train_batch_size)
    total_steps = (
        cfg.max_steps
        if cfg.max_steps > 0
        else max(1, math.ceil(cfg.num_train_epochs * batches_per_epoch / cfg.gradient_accumulation_steps))
    )
    trainable, optimizer, scheduler = make_optimizer(cfg, model, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    metrics = MetricsWriter(out / "metrics.jsonl")
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    pad = tokenizer.pad_token_id

    def evaluate(tag: str, step: int) -> dict | None:
        if not eval_pairs:
            return None
        result = evaluate_reward_model(model, eval_pairs, pad, cfg.per_device_eval_batch_size, cfg.margin)
        metrics.write({"step": step, "split": "eval", "tag": tag, **result})
        log(f"eval ({tag}, step {step}): " + ", ".join(f"{k} {v:.4g}" for k, v in result.items()))
        return result

    eval_before = evaluate("before", 0) if cfg.eval_before_training else None
    model.train()
    running, last = RunningMean(), {}
    bar = tqdm(total=total_steps, desc="reward model", unit="step", dynamic_ncols=True)
    throughput = Throughput()
    for step in range(total_steps):
        for micro in range(cfg.gradient_accumulation_steps):
            batch = _batch(train_pairs, cfg, step * cfg.gradient_accumulation_steps + micro, batches_per_epoch)
            with accelerator.autocast():
                chosen, rejected = pair_rewards(model, batch, pad)
            loss = bradley_terry_loss(chosen, rejected, cfg.margin).mean()
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"non-finite reward model loss ({loss.item()}) at step {step + 1}; lower learning_rate"
                )
            accelerator.backward(loss / cfg.gradient_accumulation_steps)
            running.add({"loss": loss.item(), **pair_metrics(chosen.detach(), rejected.detach())})
            throughput.add(len(batch), sum(len(c) + len(r) for c, r in batch))
        running.add({"grad_norm": optimizer_step(cfg, trainable, optimizer, scheduler, accelerator)})
        done = step + 1
        bar.update(1)
        if done % cfg.logging_steps == 0 or done == total_steps:
            last = {
                "step": done,
                "split": "train",
                "epoch": round(done * cfg.gradient_accumulation_steps / batches_per_epoch, 4),
                **running.pop(),
                "learning_rate": scheduler.get_last_lr()[0],
                **throughput.pop(),
            }
            metrics.write(last)
            bar.set_postfix(loss=f"{last['loss']:.4f}", acc=f"{last['accuracy']:.2f}", margin=f"{last['margin']:.3f}")
        if cfg.eval_steps and done % cfg.eval_steps == 0 and done < total_steps:
            with throughput.paused():
                evaluate("periodic", done)
        if on_step is not None:
            on_step(done, last)
    bar.close()
    eval_after = evaluate("after", total_steps)
    model_dir = save_reward_model(accelerator.unwrap_model(model), tokenizer, cfg, out)
    return RewardTrainResult(out, model_dir, total_steps, eval_before, eval_after, last)


def save_reward_model(model: torch.nn.Module, tokenizer: Any, cfg: RewardModelConfig, output_dir: Path) -> Path:
    """Write output_dir/reward_model atomically: built in a temporary folder beside it, renamed into place."""
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / MODEL_FOLDER
    staging = Path(tempfile.mkdtemp(prefix=f".{MODEL_FOLDER}.", dir=output_dir))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        meta = {
            "base_model": cfg.model,
            "adapter": cfg.use_peft,
            "max_length": cfg.max_length,
            "max_prompt_length": cfg.max_prompt_length,
            "use_chat_template": cfg.use_chat_template,
            "margin": cfg.margin,
        }
        (staging / METADATA_FILE).write_text(json.dumps(meta, indent=2))
        if target.exists():  # a directory cannot be replaced by rename: move the old one aside first
            old = Path(tempfile.mkdtemp(prefix=f".{MODEL_FOLDER}.old.", dir=output_dir))
            os.replace(target, old / MODEL_FOLDER)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _load_pairs(cfg: RewardModelConfig, tokenizer: Any) -> tuple[list[Pair], list[Pair], str]:
    from directalign.data.formats import load_records
    from directalign.data.pipeline import split_records

    loaded = load_records(cfg.data)
    if cfg.eval_data:
        train, held = loaded.records, load_records(cfg.eval_data).records
    else:
        train, held = split_records(loaded.records, cfg.eval_split, cfg.seed)
    train, held = train[: cfg.max_train_records], held[: cfg.max_eval_records]
    train_pairs, eval_pairs = prepare_pairs(train, tokenizer, cfg), prepare_pairs(held, tokenizer, cfg) if held else []
    if not train_pairs:
        raise DataError(f"{cfg.data}: no training pairs")
    description = f"{cfg.data} (schema {loaded.schema}; {len(train_pairs)} train / {len(eval_pairs)} held-out pairs)"
    return train_pairs, eval_pairs, description


def _batch(pairs: list[Pair], cfg: RewardModelConfig, index: int, batches_per_epoch: int) -> list[Pair]:
    """Micro-batch `index`: a fresh seeded permutation each epoch, so a run is a function of its seed."""
    epoch, position = divmod(index, batches_per_epoch)
    order = np.random.default_rng(cfg.seed + epoch).permutation(len(pairs))
    size = cfg.per_device_train_batch_size
    return [pairs[i] for i in order[position * size : (position + 1) * size]]
