"""What every trainer here shares around the backward pass: the accelerator, AdamW with a transformers schedule,
the clipped optimizer step, and the pairs/s and tokens/s of the steps since the last log.

The offline loop, the on-policy methods and the reward-model trainer take their options from different config
classes; these read the TrainingArguments-named fields they have in common (learning_rate, weight_decay,
adam_beta1/2, warmup_steps/warmup_ratio, lr_scheduler_type, max_grad_norm), with TrainingArguments' defaults for
the ones a config does not define.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch


def make_accelerator(bf16: bool):
    """An Accelerator with bf16 autocast or none. accelerate keeps one mixed-precision setting per process and
    refuses another; a library call (a sweep, a notebook) may train in fp32 and then bf16, so the setting is
    reset when it differs. The process group (PartialState) is left as it is."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    wanted = "bf16" if bf16 else "no"
    state = AcceleratorState._shared_state
    if state and str(state.get("_mixed_precision", wanted)) != wanted:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=wanted)


def make_optimizer(cfg, model: torch.nn.Module, total_steps: int):
    """(trainable parameters, AdamW, scheduler) for `total_steps` optimizer steps."""
    from transformers import get_scheduler

    trainable = [p for p in model.parameters() if p.requires_grad]
    betas = (getattr(cfg, "adam_beta1", 0.9), getattr(cfg, "adam_beta2", 0.999))
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, betas=betas)
    warmup = getattr(cfg, "warmup_steps", 0) or int(round(cfg.warmup_ratio * total_steps))
    scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    return trainable, optimizer, scheduler


def optimizer_step(cfg, trainable, optimizer, scheduler, accelerator=None) -> float:
    """Clip to max_grad_norm (through the accelerator when there is one, so that it sees every process's
    gradients), step, advance the schedule, clear the gradients; returns the pre-clipping gradient norm."""
    clip = accelerator.clip_grad_norm_ if accelerator is not None else torch.nn.utils.clip_grad_norm_
    grad_norm = clip(trainable, cfg.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(grad_norm)


class Throughput:
    """pairs/s and tokens/s over the work added since the last `pop`, not counting time spent `paused()`
    (evaluation, checkpoints)."""

    def __init__(self):
        self._reset()

    def _reset(self) -> None:
        self.start, self.excluded, self.pairs, self.tokens = time.perf_counter(), 0.0, 0, 0

    def add(self, pairs: int, tokens: int) -> None:
        self.pairs += pairs
        self.tokens += tokens

    @contextmanager
    def paused(self):
        begin = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - begin

    def pop(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.start - self.excluded, 1e-9)
        rates = {"pairs_per_s": self.pairs / elapsed, "tokens_per_s": self.tokens / elapsed}
        self._reset()
        return rates
