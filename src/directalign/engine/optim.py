"""The optimisation of every trainer: AdamW with a transformers schedule, gradients normalised by counts summed
over processes, gradient accumulation without a needless all-reduce, clipping, and the non-finite guard.

The loss of a step is sum(per-item losses over every process and micro-batch) / (items over every process), so
2 processes with batch b mean the same as 1 process with batch 2b: each process backpropagates its local sum
times world / total (DDP then averages over the world). The guard checks the loss and the gradient norm before
the optimizer step, so a blown-up step never reaches the weights, let alone a checkpoint.

Under DeepSpeed ZeRO (engine/zero.py) the engine does the backward pass, the clipping and the step over its
partitions; it skips a step whose gradient is not finite, which the guard then reports the same way.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import torch
from transformers import get_scheduler

from directalign.engine import zero
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
        self.engine = None  # the DeepSpeed engine under ZeRO

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model wrapped for the run's processes (DDP, a DeepSpeed ZeRO engine, or sharded in place by
        FSDP2)."""
        enable_fsdp_on_cpu(self.accelerator)
        if zero.requested():
            stage = zero.check_request()
            self.engine = zero.initialize(model, self.optimizer, self.cfg, stage)
            self.optimizer = self.engine.optimizer  # the ZeRO optimizer, holding this process's partition
            self.dist.sharding = f"ZeRO-{stage}"
            if stage == 3:
                self.dist.shares_work = False  # ZeRO-3 gathers parameters in every forward: see Dist.shares_work
            return self.engine
        wrapped, self.optimizer = self.accelerator.prepare(model, self.optimizer)
        if is_sharded(wrapped):
            self.trainable = [p for p in wrapped.parameters() if p.requires_grad]
            self.dist.shares_work = False  # every forward pass is collective: see Dist.shares_work
        return wrapped

    def sync(self, model: torch.nn.Module, last: bool):
        """No all-reduce for the micro-batches before the last of a step (their gradients only accumulate; ZeRO's
        engine reduces when its partitions need it)."""
        if last or not self.dist.active or self.engine is not None:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(model)

    def backward(self, local_loss_sum: torch.Tensor, total_count: float) -> None:
        """Backpropagate this process's share of sum / total_count (total_count: over every process)."""
        if not torch.isfinite(local_loss_sum.detach()).all():
            raise NonFiniteStep(f"non-finite loss ({local_loss_sum.item()})")
        loss = local_loss_sum * (self.dist.world / max(total_count, 1e-12))
        if self.engine is not None:
            self.engine.backward(loss, scale_wrt_gas=False)
        else:
            self.accelerator.backward(loss)

    def step(self) -> float:
        """Clip, check, step, advance the schedule, clear the gradients; returns the norm before clipping."""
        if self.engine is not None:
            return self._engine_step()
        limit = self.cfg.max_grad_norm if self.cfg.max_grad_norm > 0 else math.inf
        norm = float(self.accelerator.clip_grad_norm_(self.trainable, limit))
        if not math.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteStep(f"non-finite gradient norm ({norm})")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def _engine_step(self) -> float:
        self.engine.step()  # clips, steps and clears; skips the update when the gradient is not finite
        norm = self.engine.get_global_grad_norm()
        norm = math.inf if norm is None else float(norm)
        if not math.isfinite(norm):
            raise NonFiniteStep(f"non-finite gradient norm ({norm})")
        self.scheduler.step()
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
