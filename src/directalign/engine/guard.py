"""The run's one handle on its health, shared by every trainer.

It feeds every logged event (train logs and evals, the same on every process since they are reduced first) to
the HealthMonitor (directalign.engine.health), writes the warnings to the console and metrics.jsonl, and keeps
what a stop needs:

- kl_budget: the trainable weights of the last eval within budget are kept in memory (and in checkpoints); when
  a later eval exceeds the budget the loop stops, `finish` restores those weights and removes checkpoints
  written after that eval, so the final outputs and the "after" eval are exactly that eval's.
- early stopping: the loop stops after the step whose metric ran out of patience; the weights are that step's
  (as Hugging Face's EarlyStoppingCallback does).

`heldout_kl` measures the held-out KL to the reference and the generated length that kl_budget and length
drift judge, on the held-out prompts shared out over the processes.
"""

from __future__ import annotations

import math
import shutil

import torch

from directalign.engine.checkpoint import list_checkpoints, load_trainable, trainable_state
from directalign.engine.health import HealthMonitor, health_config
from directalign.engine.sharding import gathered
from directalign.evaluation.kl import sampled_kl


class RunGuard:
    def __init__(self, cfg, run, policy, n_train_pairs: int | None = None):
        self.cfg, self.run, self.policy = cfg, run, policy
        enabled = getattr(cfg, "health_checks", True) or cfg.early_stopping_metric
        self.monitor = HealthMonitor(health_config(cfg, n_train_pairs)) if enabled else None
        self.kept_weights: tuple[int, dict[str, torch.Tensor]] | None = None
        self.warnings: list[str] = []  # every warning so far, for the model card

    def observe(self, event: dict) -> None:
        if self.monitor is None:
            return
        for warning in self.monitor.observe(event):
            if warning.check != "early_stopping" and not getattr(self.cfg, "health_checks", True):
                continue
            self.run.metrics.write(warning.to_metrics())
            self.warnings.append(f"step {warning.step} [{warning.check}]: {warning.message}")
            self.run.log(f"health [{warning.check}] step {warning.step}: {warning.message}")
        kept = self.monitor.kept_step
        if getattr(self.cfg, "kl_budget", None) is not None and event.get("split") == "eval" and kept == event["step"]:
            self.kept_weights = (kept, trainable_state(self.policy))

    @property
    def should_stop(self) -> bool:
        return self.monitor is not None and self.monitor.stop is not None

    @property
    def stop_message(self) -> str | None:
        return self.monitor.stop.message if self.should_stop else None

    def finish(self, total_steps: int) -> int:
        """After the loop: restore the weights a KL stop keeps; return the step the final outputs belong to."""
        if not self.should_stop:
            return total_steps
        if self.monitor.stop.check != "kl_budget" or self.kept_weights is None:
            return self.monitor.stop.step
        step, weights = self.kept_weights
        load_trainable(self.policy, weights)
        if self.run.dist.is_main:
            for checkpoint in list_checkpoints(self.run.folder.path):
                if int(checkpoint.name.split("-")[1]) > step:
                    shutil.rmtree(checkpoint, ignore_errors=True)
                    self.run.log(f"removed {checkpoint.name}: written after the last eval within kl_budget")
        return step

    def state_dict(self) -> tuple[dict, dict[str, torch.Tensor] | None]:
        """(JSON state, kept weights or None) for a checkpoint."""
        state = {"monitor": None if self.monitor is None else self.monitor.state_dict(), "warnings": self.warnings}
        if self.kept_weights is None:
            return state, None
        state["kept_step"] = self.kept_weights[0]
        return state, self.kept_weights[1]

    def load_state_dict(self, state: dict, kept: dict[str, torch.Tensor] | None) -> None:
        if self.monitor is not None and state.get("monitor") is not None:
            self.monitor.load_state_dict(state["monitor"])
        self.warnings = list(state.get("warnings", []))
        if kept is not None and "kept_step" in state:
            self.kept_weights = (int(state["kept_step"]), kept)


def heldout_kl(run, policy, reference, tokenizer, prompts: list, cfg, reward_fn=None) -> dict:
    """KL(policy || reference) in nats per sequence, its standard error and the generated length (and, with a
    reward function, the samples' mean reward) on cfg.kl_prompts held-out prompts, cfg.kl_samples samples each;
    each process samples its share of the prompts, with per-prompt seeds, and the results are pooled."""
    prompts = prompts[: cfg.kl_prompts]
    if reference is None or not prompts:
        return {}
    start, end = run.dist.share_bounds(len(prompts))
    local = prompts[start:end]
    ratios, lengths, rewards = [], [], []
    if local:
        # The same seeds at every eval: the same weights give the same samples, so a restored model's KL
        # reproduces the value it was kept for.
        with gathered(policy):
            result = sampled_kl(
                policy,
                reference,
                tokenizer,
                local,
                num_samples=cfg.kl_samples,
                max_new_tokens=cfg.eval_max_new_tokens,
                seed=cfg.seed,
                batch_size=getattr(cfg, "per_device_eval_batch_size", 8),
                prompt_seeds=[cfg.seed + i for i in range(start, end)],
            )
        ratios = [r for group in result.log_ratios for r in group]
        lengths = [len(c.token_ids or []) for group in result.completions for c in group]
        if reward_fn is not None:
            flat_prompts = [p for p, group in zip(local, result.completions, strict=True) for _ in group]
            rewards = list(reward_fn(flat_prompts, [c.text for group in result.completions for c in group]))
    ratios, lengths, rewards = run.dist.pool(ratios), run.dist.pool(lengths), run.dist.pool(rewards)
    mean = sum(ratios) / len(ratios)
    variance = sum((r - mean) ** 2 for r in ratios) / max(len(ratios) - 1, 1)
    measured = {
        "kl": mean,
        "kl_std_error": math.sqrt(variance / len(ratios)),
        "lengths/generated": sum(lengths) / len(lengths),
    }
    if rewards:
        measured["reward"] = sum(rewards) / len(rewards)
    return measured
