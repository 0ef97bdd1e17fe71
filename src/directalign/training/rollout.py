"""What the on-policy trainers share: sampling and scoring groups of completions over the processes, the
best-vs-worst pairs, the held-out reward eval, and the per-prompt seeds that make all of it independent of how
many processes share the work.

A Group is one prompt with its sampled completions, kept as the token ids the policy produced (no decode /
re-encode round trip, so the log-probs trained on are those of the sequences sampled), their rewards, and, when
a judge is the pair source (training/judged.py), the judge's ranking of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from directalign.data.builtin import check
from directalign.data.prompts import PromptSet
from directalign.data.types import Message, TokenizedRecord
from directalign.engine.files import atomic_write_text
from directalign.engine.guard import heldout_kl
from directalign.engine.run import RunOutputs
from directalign.engine.sharding import gathered
from directalign.evaluation.kl import prompt_ids as encode_prompt
from directalign.generation.base import Completion, GenerationConfig, make_generator
from directalign.generation.rewards import reward_breakdown
from directalign.generation.seeded import generate_seeded
from directalign.quality.pairs import choose_pairs
from directalign.training.judged import JudgedGroup, judge_groups, judge_metrics


@dataclass
class OnPolicyResult(RunOutputs):
    output_dir: Path
    steps: int
    eval_before: dict | None
    eval_after: dict | None
    history: list[dict] = field(default_factory=list)  # every eval event (iterative DPO: one per round)


@dataclass
class Group:
    prompt: list[Message]
    prompt_ids: list[int]
    completions: list[Completion]
    response_ids: list[list[int]]
    rewards: list[float]
    per_function: dict[str, list[float]]
    judged: JudgedGroup | None = None

    def pair(self) -> tuple[int, int] | None:
        """(best, worst): the judge's pair when a judge ranked the samples, else by reward (ties: none)."""
        if self.judged is not None:
            return self.judged.pair
        pairs = choose_pairs(self.rewards, "best-vs-worst")
        return pairs[0] if pairs else None


def prompt_seed(seed: int, step: int, index: int) -> int:
    """The sampling seed of prompt `index` (its position in the prompt set) at `step`: the same whichever
    process samples it and whatever else shares its batch."""
    return (seed * 1_000_003 + step * 100_003 + index) % (2**31 - 1)


def generation_config(cfg, greedy: bool = False) -> GenerationConfig:
    if greedy:
        return GenerationConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.eval_temperature)
    return GenerationConfig(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        num_samples=cfg.num_generations,
    )


def completion_ids(completion: Completion, tokenizer) -> list[int]:
    """The completion's token ids; for a backend that returns none, its text encoded plus the eos token."""
    if completion.token_ids:
        return list(completion.token_ids)
    ids = tokenizer(completion.text, add_special_tokens=False)["input_ids"]
    return ids + [tokenizer.eos_token_id] if completion.finish_reason == "stop" else ids or [tokenizer.eos_token_id]


def sample_groups(generator, tokenizer, prompts: PromptSet, config, reward_fn, seeds: list[int]) -> list[Group]:
    """config.num_samples completions per prompt (prompt i with seeds[i]), scored in one reward call."""
    if not len(prompts):
        return []
    completions = generate_seeded(generator, prompts.prompts, config, seeds)
    flat_prompts = [p for p, group in zip(prompts.prompts, completions, strict=True) for _ in group]
    columns = {
        k: [v for v, group in zip(values, completions, strict=True) for _ in group]
        for k, values in prompts.columns.items()
    }
    texts = [c.text for group in completions for c in group]
    totals, per_function = reward_breakdown(reward_fn, flat_prompts, texts, **columns)
    groups, start = [], 0
    for prompt, group in zip(prompts.prompts, completions, strict=True):
        end = start + len(group)
        groups.append(
            Group(
                prompt=prompt,
                prompt_ids=encode_prompt(tokenizer, prompt),
                completions=group,
                response_ids=[completion_ids(c, tokenizer) for c in group],
                rewards=totals[start:end],
                per_function={name: scores[start:end] for name, scores in per_function.items()},
            )
        )
        start = end
    return groups


def shared_sampling(run, policy, generator, tokenizer, prompts: PromptSet, indices: list[int], config, reward_fn,
                    step: int, judge=None) -> list[Group]:
    """Every group of the prompts at `indices`: each process samples its share (under FSDP, with the policy's
    parameters gathered, all of them), every process gets them all. With a judge, each process judges its
    share (under FSDP the main process judges and sends the rankings, so an endpoint is asked once)."""
    start, end = run.dist.share_bounds(len(indices))
    mine = indices[start:end]
    seeds = [prompt_seed(run.cfg.seed, step, i) for i in mine]
    with gathered(policy):
        local = sample_groups(generator, tokenizer, prompts.take(mine), config, reward_fn, seeds)
    if judge is not None:
        if run.dist.shares_work:
            ranked = judge_groups(judge, local, run.cfg)
        else:  # every process sampled every group
            ranked = run.dist.broadcast(judge_groups(judge, local, run.cfg) if run.dist.is_main else None)
        for group, judged in zip(local, ranked, strict=True):
            group.judged = judged
    return run.dist.pool(local)


def best_worst_pairs(groups: list[Group]) -> tuple[list[TokenizedRecord], int]:
    """One (best, worst) pair per group as a two-response record (Group.pair: by the judge, or by reward through
    quality.pairs.choose_pairs, the one best-vs-worst rule), and the number of groups that gave none (every
    completion scored the same, or the judge's verdict dropped the pair)."""
    records, ties = [], 0
    for i, g in enumerate(groups):
        pair = g.pair()
        if pair is None:
            ties += 1
            continue
        best, worst = pair
        records.append(
            TokenizedRecord(g.prompt_ids, [g.response_ids[best], g.response_ids[worst]], [(0, 1)], source=f"group:{i}")
        )
    return records, ties


def pair_smoothing(groups: list[Group]) -> list[float]:
    """The label smoothing of each record best_worst_pairs makes from these groups, in its order: 1 - the
    judge's confidence in the pair (training/judged.py), 0 for reward-function pairs."""
    return [g.judged.label_smoothing if g.judged is not None else 0.0 for g in groups if g.pair() is not None]


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
    metrics.update(judge_metrics(groups))
    return metrics


def builtin_breakdown(groups: list[Group], kinds: list[str]) -> dict[str, float]:
    """For built-in task prompts: the share of answers with the right content and with the asked-for format (the
    two halves of the verifier's score), and the mean reward per task kind."""
    checks = [check(g.prompt[-1]["content"], g.completions[0].text) for g in groups]
    result = {
        "content": sum(content for content, _ in checks) / len(checks),
        "format": sum(fmt for _, fmt in checks) / len(checks),
    }
    for kind in sorted(set(kinds)):
        scores = [g.rewards[0] for g, k in zip(groups, kinds, strict=True) if k == kind]
        result[f"reward/{kind}"] = sum(scores) / len(scores)
    return result


def heldout_checks(samples_file) -> list[tuple[bool, bool]]:
    """(content right, format followed) of each held-out answer in an eval_samples/<tag>.jsonl of built-in task
    prompts, in file order."""
    rows = [json.loads(line) for line in Path(samples_file).read_text(encoding="utf-8").splitlines() if line]
    return [check(row["prompt"][-1]["content"], row["completion"]) for row in rows]


def paired_change(before: list[float], after: list[float], n_boot: int = 2000, confidence: float = 0.95,
                  seed: int = 0) -> tuple[float, float, float]:
    """The change of a mean over the same items, after - before, and its percentile bootstrap interval
    (items resampled in pairs, so each item's before and after stay together)."""
    import numpy as np

    diffs = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    if not len(diffs):
        return float("nan"), float("nan"), float("nan")
    draws = np.random.default_rng(seed).integers(0, len(diffs), size=(n_boot, len(diffs)))
    means = diffs[draws].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(diffs.mean()), float(low), float(high)


@torch.no_grad()
def heldout_eval(run, policy, kl_reference, tokenizer, held: PromptSet, reward_fn, tag: str) -> dict | None:
    """Held-out reward of the policy's answers (eval_temperature, greedy by default, fixed seeds), per reward
    function and, for the built-in tasks, content / format / per kind; the KL to the starting model; the
    samples written to eval_samples/<tag>.jsonl."""
    cfg = run.cfg
    if not len(held):
        return None
    generator = make_generator("transformers", model=policy.model, tokenizer=tokenizer,
                               batch_size=cfg.generation_batch_size)
    groups = shared_sampling(run, policy, generator, tokenizer, held, list(range(len(held))),
                             generation_config(cfg, True), reward_fn, step=0)
    metrics = sampling_metrics(groups)
    result = {"reward": metrics["reward"], "completions/mean_length": metrics["completions/mean_length"],
              "completions/clipped_ratio": metrics["completions/clipped_ratio"]}
    result.update({k: v for k, v in metrics.items() if k.startswith("rewards/") and k.endswith("/mean")})
    if "kind" in held.columns:
        result.update(builtin_breakdown(groups, held.columns["kind"]))
    measured = heldout_kl(run, policy, kl_reference, tokenizer, held.prompts, cfg)
    result.update({k: v for k, v in measured.items() if k in ("kl", "kl_std_error")})
    result["lengths/generated"] = metrics["completions/mean_length"]  # what length drift is judged on
    if run.dist.is_main:
        write_samples(run.out / "eval_samples" / f"{tag.replace(' ', '_')}.jsonl", groups)
    return result


def write_samples(path, groups: list[Group]) -> None:
    rows = [
        json.dumps({"prompt": g.prompt, "completion": c.text, "reward": r}, ensure_ascii=False)
        for g in groups
        for c, r in zip(g.completions, g.rewards, strict=True)
    ]
    atomic_write_text(path, "".join(row + "\n" for row in rows))
