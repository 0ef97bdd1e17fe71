"""Sampling and scoring groups of completions, the held-out reward, and the run every on-policy method sets up.

A Group is one prompt with its sampled completions, kept as the token ids the policy produced, and their rewards.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from directalign.data.types import Message
from directalign.errors import DataError
from directalign.generation.base import Completion, GenerationConfig, make_generator
from directalign.generation.rewards import RewardFunction, reward_breakdown
from directalign.training.onpolicy import (
    OnPolicyConfig,
    PromptSet,
    build_reward,
    eval_generation_config,
    prompt_sets,
)

# Sampling and scoring.


@dataclass
class Group:
    """One prompt, its sampled completions (as token ids the policy produced) and their rewards."""

    prompt: list[Message]
    prompt_ids: list[int]
    completions: list[Completion]
    response_ids: list[list[int]]
    rewards: list[float]
    per_function: dict[str, list[float]]


def completion_ids(completion: Completion, tokenizer) -> list[int]:
    """The completion's token ids; for a backend that returns none, its text encoded plus the eos token."""
    if completion.token_ids:
        return list(completion.token_ids)
    ids = tokenizer(completion.text, add_special_tokens=False)["input_ids"]
    return ids + [tokenizer.eos_token_id] if completion.finish_reason == "stop" else ids or [tokenizer.eos_token_id]


def sample_groups(
    generator, tokenizer, prompts: PromptSet, config: GenerationConfig, reward_fn, chunk_size: int = 16
) -> list[Group]:
    """Sample config.num_samples completions per prompt, chunk_size prompts per generate call (with a progress
    bar), and score them all in one reward call. Chunk i samples with seed + i, so a run is reproducible."""
    from directalign.evaluation.kl import prompt_ids

    completions = []
    starts = range(0, len(prompts), chunk_size)
    for i, start in enumerate(tqdm(starts, desc="sampling", unit="batch", leave=False, dynamic_ncols=True)):
        seeded = config if i == 0 or config.seed is None else replace(config, seed=config.seed + i)
        completions += generator.generate(prompts.prompts[start : start + chunk_size], seeded)
    flat_prompts = [p for p, group in zip(prompts.prompts, completions, strict=True) for _ in group]
    flat = [c for group in completions for c in group]
    columns = {
        k: [v for v, group in zip(values, completions, strict=True) for _ in group]
        for k, values in prompts.columns.items()
    }
    totals, per_function = reward_breakdown(reward_fn, flat_prompts, [c.text for c in flat], **columns)
    groups, start = [], 0
    for prompt, group in zip(prompts.prompts, completions, strict=True):
        end = start + len(group)
        groups.append(
            Group(
                prompt=prompt,
                prompt_ids=prompt_ids(tokenizer, prompt),
                completions=group,
                response_ids=[completion_ids(c, tokenizer) for c in group],
                rewards=totals[start:end],
                per_function={name: scores[start:end] for name, scores in per_function.items()},
            )
        )
        start = end
    return groups


def sampling_metrics(groups: list[Group]) -> dict[str, float]:
    """Reward mean/std (overall and per reward function), the fraction of groups whose rewards are all equal,
    completion lengths in tokens, and the fraction of completions cut at max_new_tokens (TRL's names)."""
    rewards = torch.tensor([r for g in groups for r in g.rewards])
    lengths = torch.tensor([float(len(ids)) for g in groups for ids in g.response_ids])
    metrics = {
        "reward": rewards.mean().item(),
        "reward_std": rewards.std().item() if rewards.numel() > 1 else 0.0,
        "frac_reward_zero_std": sum(max(g.rewards) == min(g.rewards) for g in groups) / len(groups),
        "completions/mean_length": lengths.mean().item(),
        "completions/min_length": lengths.min().item(),
        "completions/max_length": lengths.max().item(),
        "completions/clipped_ratio": sum(c.finish_reason == "length" for g in groups for c in g.completions)
        / lengths.numel(),
    }
    for name in groups[0].per_function:
        scores = torch.tensor([s for g in groups for s in g.per_function[name]])
        metrics[f"rewards/{name}/mean"] = scores.mean().item()
        metrics[f"rewards/{name}/std"] = scores.std().item() if scores.numel() > 1 else 0.0
    return metrics


# Held-out reward.


@torch.no_grad()
def heldout_reward(model, tokenizer, prompts: PromptSet, reward_fn, cfg: OnPolicyConfig) -> tuple[dict, list[Group]]:
    """Mean reward of the policy's answers to held-out prompts (eval_temperature, greedy by default, fixed seed),
    per reward function and, for the built-in tasks, per kind."""
    generator = make_generator("transformers", model=model, tokenizer=tokenizer, batch_size=cfg.generation_batch_size)
    config = eval_generation_config(cfg, seed=cfg.seed)
    groups = sample_groups(generator, tokenizer, prompts, config, reward_fn, cfg.generation_batch_size)
    metrics = sampling_metrics(groups)
    result = {"reward": metrics["reward"], "completions/mean_length": metrics["completions/mean_length"]}
    result["completions/clipped_ratio"] = metrics["completions/clipped_ratio"]
    result.update({k: v for k, v in metrics.items() if k.startswith("rewards/") and k.endswith("/mean")})
    if "kind" in prompts.columns:
        result.update(builtin_breakdown(groups, prompts.columns["kind"]))
    return result, groups


def builtin_breakdown(groups: list[Group], kinds: list[str]) -> dict[str, float]:
    """For built-in task prompts: the share of answers with the right content and with the asked-for format (the
    two halves of the verifier's score), and the mean reward per task kind."""
    from directalign.data.builtin import check

    checks = [check(g.prompt[-1]["content"], g.completions[0].text) for g in groups]
    result = {
        "content": sum(content for content, _ in checks) / len(checks),
        "format": sum(fmt for _, fmt in checks) / len(checks),
    }
    for kind in sorted(set(kinds)):
        scores = [g.rewards[0] for g, k in zip(groups, kinds, strict=True) if k == kind]
        result[f"reward/{kind}"] = sum(scores) / len(scores)
    return result


def sampled_kl_to(policy, reference, tokenizer, prompts: PromptSet, cfg: OnPolicyConfig) -> float | None:
    """KL(policy || reference) in nats per sequence on kl_prompts held-out prompts (temperature-1 samples)."""
    if cfg.kl_prompts < 1 or reference is None:
        return None
    from directalign.evaluation.kl import sampled_kl

    result = sampled_kl(
        policy,
        reference,
        tokenizer,
        prompts.prompts[: cfg.kl_prompts],
        num_samples=cfg.kl_samples,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
        batch_size=cfg.generation_batch_size,
    )
    return result.kl


# Model.


def device_for_run() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def format_metrics(metrics: dict, keys: tuple[str, ...]) -> str:
    return ", ".join(f"{k} {metrics[k]:.4g}" for k in keys if isinstance(metrics.get(k), int | float))


# The run: what every method sets up before its loop, and its held-out evaluation.


@dataclass
class OnPolicyResult:
    output_dir: Path
    steps: int
    eval_before: dict | None
    eval_after: dict | None
    history: list[dict] = field(default_factory=list)  # every eval event (iterative DPO: one per round)


class OnPolicyRun:
    """Tokenizer, LoRA policy, reference, prompts, reward and metrics file of one on-policy job.

    reference: what the loss compares with (adapter-disabled policy, or a frozen copy for full fine-tuning);
    None when the method needs none. kl_reference: the untouched starting model, which held-out KL is
    measured against (the same object as reference unless the reference moves, as in iterative DPO, which
    asks for a frozen copy of the start with frozen_start).
    """

    def __init__(self, cfg: OnPolicyConfig, reward_fn: RewardFunction | None = None, frozen_start: bool = False):
        from directalign.models.loading import load_tokenizer
        from directalign.models.logprobs import ResponseLogProbs
        from directalign.models.reference import AdapterReference, FrozenReference
        from directalign.training.loop import build_policy
        from directalign.training.metrics import MetricsWriter

        cfg.validate()
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = device_for_run()
        self.tokenizer = load_tokenizer(cfg.model)
        self.train, self.held = prompt_sets(cfg)
        if not len(self.train):
            raise DataError("no training prompts")
        self.reward_fn = reward_fn if reward_fn is not None else build_reward(cfg)
        self.model = build_policy(cfg).to(self.device)
        self.policy = ResponseLogProbs(self.model, cfg.logits_chunk_size)
        live = AdapterReference(self.policy) if cfg.use_peft else FrozenReference.copy_of(self.model)
        self.reference = live if cfg.needs_reference else None
        self.kl_reference = FrozenReference.copy_of(self.model) if frozen_start and cfg.use_peft else live
        self.metrics = MetricsWriter(self.out / "metrics.jsonl")
        self.history: list[dict] = []
        (self.out / "config.json").write_text(_json(cfg.to_dict()))
        self.log(
            f"{cfg.method}: {cfg.model}, {len(self.train)} train / {len(self.held)} held-out prompts, "
            f"{cfg.num_generations} samples per prompt at temperature {cfg.temperature}"
        )

    def log(self, text: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(text)

    def generator(self):
        return make_generator(
            "transformers", model=self.model, tokenizer=self.tokenizer, batch_size=self.cfg.generation_batch_size
        )

    def evaluate(self, tag: str, step: int, **extra) -> dict | None:
        """Held-out reward (and KL to the starting model), written to metrics.jsonl and printed."""
        if not len(self.held):
            return None
        started = time.perf_counter()
        result, groups = heldout_reward(self.model, self.tokenizer, self.held, self.reward_fn, self.cfg)
        kl = sampled_kl_to(self.policy, self.kl_reference, self.tokenizer, self.held, self.cfg)
        if kl is not None:
            result["kl"] = kl
        self.write_samples(self.out / "eval_samples" / f"{tag.replace(' ', '_')}.jsonl", groups)
        result["eval_time_s"] = time.perf_counter() - started
        event = {"step": step, "split": "eval", "tag": tag, **extra, **result}
        self.metrics.write(event)
        self.history.append(event)
        self.log(f"eval ({tag}, step {step}): " + format_metrics(result, tuple(result)))
        return result

    def write_samples(self, path: Path, groups: list[Group]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            for g in groups:
                for c, r in zip(g.completions, g.rewards, strict=True):
                    f.write(_json({"prompt": g.prompt, "completion": c.text, "reward": r}, indent=None) + "\n")

    def save(self) -> None:
        from directalign.training.loop import save_final

        save_final(self.cfg, self.model, self.tokenizer, self.out)

    def end_step(self, step: int, total_steps: int, metrics: dict, scheduler, started: float, on_step=None) -> None:
        """Log a step of the online loops (learning rate, step time), evaluate when due, call on_step."""
        metrics["learning_rate"] = scheduler.get_last_lr()[0]
        metrics["step_time_s"] = time.perf_counter() - started
        self.metrics.write(metrics)
        if self.cfg.eval_steps and step % self.cfg.eval_steps == 0 and step < total_steps:
            self.evaluate("periodic", step)
        if on_step is not None:
            on_step(step, metrics)

    def finish(self, total_steps: int, eval_before: dict | None) -> OnPolicyResult:
        """The held-out evaluation after training, the saved adapter, and the run's result."""
        eval_after = self.evaluate("after", total_steps)
        self.save()
        return OnPolicyResult(self.out, total_steps, eval_before, eval_after, self.history)


def _json(value, indent: int | None = 2) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=False)
