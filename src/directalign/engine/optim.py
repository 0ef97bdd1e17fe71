"""The optimisation of every trainer: AdamW with a transformers schedule, gradients normalised by counts summed
over processes, gradient accumulation without a needless all-reduce, clipping, and the non-finite guard.

The loss of a step is sum(per-item losses over every process and micro-batch) / (items over every process), so
2 processes with batch b mean the same as 1 process with batch 2b: each process backpropagates its local sum
times world / total (DDP then averages over the world). The guard checks the loss and the gradient norm before
the optimizer step, so a blown-up step never reaches the weights, let alone a checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import torch
from transformers import get_scheduler

from directalign.engine.sharding import enable_fsdp_on_cpu, is_sharded
from directalign.errors import TrainingError


class NonFiniteStep(TrainingError):
    """A step whose loss or gradient is not finite; the weights are those before it."""


def make_optimizer(cfg, model: torch.nn.Module, total_steps: int):
    """(trainable parameters, AdamW, scheduler) for `total_steps` optimizer steps."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise TrainingError("the model has no trainable parameters (check lora_target_modules or use_peft)")
    optimizer = torch.optim.AdamW(
        trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, betas=(cfg.adam_beta1, cfg.adam_beta2)
    )
    warmup = cfg.warmup_steps or int(round(cfg.warmup_ratio * total_steps))
    scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    return trainable, optimizer, scheduler


class StepOptimizer:
    """AdamW, its schedule and the step; `prepare` hands the model and optimizer to the accelerator."""

    def __init__(self, cfg, model: torch.nn.Module, total_steps: int, accelerator, dist):
        self.cfg, self.accelerator, self.dist = cfg, accelerator, dist
        self.trainable, self.optimizer, self.scheduler = make_optimizer(cfg, model, total_steps)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model wrapped for the run's processes (DDP, or sharded in place by FSDP2)."""
        enable_fsdp_on_cpu(self.accelerator)
        wrapped, self.optimizer = self.accelerator.prepare(model, self.optimizer)
        if is_sharded(wrapped):
            self.trainable = [p for p in wrapped.parameters() if p.requires_grad]
            self.dist.shares_work = False  # every forward pass is collective: see Dist.shares_work
        return wrapped

    def sync(self, model: torch.nn.Module, last: bool):
        """No all-reduce for the micro-batches before the last of a step (their gradients only accumulate)."""
        return contextlib.nullcontext() if last or not self.dist.active else self.accelerator.no_sync(model)

    def backward(self, local_loss_sum: torch.Tensor, total_count: float) -> None:
        """Backpropagate this process's share of sum / total_count (total_count: over every process)."""
        if not torch.isfinite(local_loss_sum.detach()).all():
            raise NonFiniteStep(f"non-finite loss ({local_loss_sum.item()})")
        self.accelerator.backward(local_loss_sum * (self.dist.world / max(total_count, 1e-12)))

    def step(self) -> float:
        """Clip, check, step, advance the schedule, clear the gradients; returns the norm before clipping."""
        limit = self.cfg.max_grad_norm if self.cfg.max_grad_norm > 0 else math.inf
        norm = float(self.accelerator.clip_grad_norm_(self.trainable, limit))
        if not math.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteStep(f"non-finite gradient norm ({norm})")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def skip(self) -> None:
        """A step with nothing to learn from (every sampled group tied): the schedule still advances."""
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step\\(\\)` before")
            self.scheduler.step()

    @property
    def learning_rate(self) -> float:
        return self.scheduler.get_last_lr()[0]
