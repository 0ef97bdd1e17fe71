"""The training loop's one handle on run health.

At each eval it samples completions on held-out prompts to estimate the KL to the reference and the generated
length (and, on the built-in set, their verified reward); it feeds every logged event to the HealthMonitor,
writes its warnings to the console and metrics.jsonl, and keeps what a stop needs:

- kl_budget: the trainable weights of the last eval within budget are kept in memory; when a later eval
  exceeds the budget the loop stops, `finish` loads those weights back, and checkpoints written after that
  eval are removed. The final adapter (or model), the "after" eval and `TrainResult.steps` are then exactly
  those of that eval's step.
- early stopping: the loop stops after the step whose logged metric ran out of patience; the weights are that
  step's (as Hugging Face's EarlyStoppingCallback does).

With `sample_generations: N`, the first N held-out prompts are answered greedily at the "before" and "after"
evals and written to generations.jsonl, for the report's before/after table.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from directalign.evaluation.kl import sampled_kl
from directalign.generation.base import GenerationConfig, make_generator
from directalign.training.checkpoint import list_checkpoints, trainable_state
from directalign.training.health import HealthMonitor, health_config

GENERATIONS_FILE = "generations.jsonl"


class RunGuard:
    def __init__(self, cfg, data, tokenizer, policy, reference, metrics_file, log, is_main_process: bool = True):
        self.cfg, self.tokenizer, self.policy, self.reference = cfg, tokenizer, policy, reference
        self.metrics_file, self.log, self.is_main = metrics_file, log, is_main_process
        self.prompts = getattr(data, "eval_prompts", [])
        n_pairs = sum(len(r.pairs) for r in data.train) or len(data.train)  # unpaired (KTO): examples
        self.monitor = HealthMonitor(health_config(cfg, n_train_pairs=n_pairs)) if cfg.health_checks else None
        self.kept_weights: tuple[int, dict[str, torch.Tensor]] | None = None
        self.reward_fn = None
        if cfg.data is None:
            from directalign.evaluation.generation_eval import builtin_reward

            self.reward_fn = builtin_reward

    def measure(self, tag: str, step: int) -> dict:
        """Held-out KL to the reference, generated length and reward, for the eval event at `step`."""
        if self.cfg.sample_generations and tag in ("before", "after"):
            self._sample_generations(tag, step)
        prompts = self.prompts[: self.cfg.kl_prompts]
        if self.reference is None or not prompts:
            return {}
        # The same seed at every eval: the same weights give the same samples, so a restored model's KL
        # reproduces the value it was kept for.
        result = sampled_kl(
            self.policy,
            self.reference,
            self.tokenizer,
            prompts,
            num_samples=self.cfg.kl_samples,
            max_new_tokens=self.cfg.eval_max_new_tokens,
            seed=self.cfg.seed,
            batch_size=self.cfg.per_device_eval_batch_size,
        )
        measured = {"kl": result.kl, "kl_std_error": result.kl_std_error, "lengths/generated": result.mean_length}
        if self.reward_fn is not None:
            flat_prompts = [p for p, group in zip(prompts, result.completions, strict=True) for _ in group]
            texts = [c.text for group in result.completions for c in group]
            rewards = self.reward_fn(flat_prompts, texts)
            measured["reward"] = sum(rewards) / len(rewards)
        return measured

    def observe(self, event: dict) -> None:
        if self.monitor is None:
            return
        for warning in self.monitor.observe(event):
            self.metrics_file.write(warning.to_metrics())
            self.log(f"health [{warning.check}] step {warning.step}: {warning.message}")
        kept = self.monitor.kept_step
        if self.cfg.kl_budget is not None and event.get("split") == "eval" and kept == event["step"]:
            self.kept_weights = (kept, trainable_state(self.policy))

    @property
    def should_stop(self) -> bool:
        return self.monitor is not None and self.monitor.stop is not None

    @property
    def stop_message(self) -> str | None:
        return self.monitor.stop.message if self.should_stop else None

    def finish(self, output_dir: Path, total_steps: int) -> int:
        """After the loop: restore the weights a KL stop keeps; return the step the final outputs belong to."""
        if not self.should_stop:
            return total_steps
        if self.monitor.stop.check != "kl_budget" or self.kept_weights is None:
            return self.monitor.stop.step
        step, weights = self.kept_weights
        params = dict(self.policy.named_parameters())
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value.to(params[name].device))
        if self.is_main:
            for checkpoint in list_checkpoints(output_dir):
                if int(checkpoint.name.split("-")[1]) > step:
                    shutil.rmtree(checkpoint, ignore_errors=True)
                    self.log(f"removed {checkpoint.name}: written after the last eval within kl_budget")
        return step

    def _sample_generations(self, tag: str, step: int) -> None:
        prompts = self.prompts[: self.cfg.sample_generations]
        if not prompts or not self.is_main:
            return
        generator = make_generator("transformers", model=self.policy.model, tokenizer=self.tokenizer)
        config = GenerationConfig(max_new_tokens=self.cfg.eval_max_new_tokens, temperature=0.0)
        completions = [group[0] for group in generator.generate(prompts, config)]
        rewards = self.reward_fn(prompts, [c.text for c in completions]) if self.reward_fn else [None] * len(prompts)
        path = Path(self.cfg.output_dir) / GENERATIONS_FILE
        lines = [
            json.dumps({"stage": tag, "step": step, "prompt": p, "completion": c.text, "reward": r})
            for p, c, r in zip(prompts, completions, rewards, strict=True)
        ]
        mode = "w" if tag == "before" else "a"
        with path.open(mode) as f:
            f.write("".join(line + "\n" for line in lines))
