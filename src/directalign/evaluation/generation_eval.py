"""One held-out table for a trained model beside its reference: preference accuracy, perplexity, KL, length,
reward and win rate.

Scored on the preference pairs (no sampling): implicit and log-prob preference accuracy, and the perplexity of
the chosen responses. Sampled from held-out prompts (temperature 1, so that the KL estimate is unbiased, see
directalign.evaluation.kl): the KL to the reference, the mean generated length in tokens, the mean reward when a
reward function is given, and the win rate of the model's samples against the reference's, judged by a reward
function or a pairwise judge, raw and length-controlled (directalign.evaluation.winrate).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from directalign.data.batching import build_batch
from directalign.data.types import PreferenceRecord, TokenizedRecord
from directalign.evaluation.kl import sampled_kl, sampling_config
from directalign.evaluation.preference import evaluate_preferences
from directalign.evaluation.winrate import judge_scores, reward_scores, win_rate
from directalign.generation.base import make_generator
from directalign.models.logprobs import ResponseLogProbs, sequence_logps
from directalign.models.reference import AdapterReference


@torch.no_grad()
def perplexity(
    policy: ResponseLogProbs, records: list[TokenizedRecord], *, pad_token_id: int, batch_size: int = 8
) -> float:
    """exp(mean negative log-likelihood per token) of each record's first preferred response."""
    device = next(policy.parameters()).device
    chosen = [TokenizedRecord(r.prompt_ids, [r.response_ids[r.pairs[0][0]]], pairs=[]) for r in records if r.pairs]
    total_logp, total_tokens = 0.0, 0
    was_training = policy.training
    policy.eval()
    for start in range(0, len(chosen), batch_size):
        batch = build_batch(chosen[start : start + batch_size], pad_token_id, "shared").to(device)
        total_logp += sequence_logps(policy(batch), batch).float().sum().item()
        total_tokens += int(batch.response_lengths.sum())
    policy.train(was_training)
    return math.exp(-total_logp / max(total_tokens, 1))


@contextlib.contextmanager
def as_reference(policy: ResponseLogProbs, reference) -> Iterator[ResponseLogProbs]:
    """The reference as a ResponseLogProbs, for scoring and sampling it like a policy."""
    if isinstance(reference, AdapterReference):
        with policy.reference():
            yield policy
    else:
        yield reference.scorer


def evaluate_model(
    policy: ResponseLogProbs,
    reference,
    tokenizer,
    records: list[PreferenceRecord],
    tokenized: list[TokenizedRecord],
    *,
    beta: float,
    reward_fn=None,
    judge=None,
    generate: bool = True,
    num_samples: int = 1,
    max_new_tokens: int = 64,
    ci: str = "wilson",
    seed: int = 0,
    batch_size: int = 8,
) -> dict:
    """Every metric of the table, flat: the model's under their own names (as evaluate_preferences and the
    training evals name them), the reference's as "reference/<name>", the win rate's as "win_rate/<field>";
    with generate, "samples" holds the compared texts. reference None: the model's columns only."""
    pad = tokenizer.pad_token_id
    out: dict = evaluate_preferences(
        policy, tokenized, pad_token_id=pad, beta=beta, reference=reference, batch_size=batch_size
    )
    out["perplexity"] = perplexity(policy, tokenized, pad_token_id=pad, batch_size=batch_size)
    if reference is not None:
        with as_reference(policy, reference) as ref_policy:
            ref_pref = evaluate_preferences(ref_policy, tokenized, pad_token_id=pad, beta=beta, batch_size=batch_size)
            out["reference/perplexity"] = perplexity(ref_policy, tokenized, pad_token_id=pad, batch_size=batch_size)
        out.update({"reference/logp_accuracy": ref_pref["logp_accuracy"], "reference/implicit_accuracy": 0.5,
                    "reference/mean_margin": 0.0})
    if generate:
        out.update(_sampled_metrics(policy, reference, tokenizer, [r.prompt for r in records], reward_fn, judge,
                                    num_samples, max_new_tokens, ci, seed, batch_size))
    return out


def _sampled_metrics(policy, reference, tokenizer, prompts, reward_fn, judge, num_samples, max_new_tokens, ci, seed,
                     batch_size) -> dict:
    out: dict = {}
    config = sampling_config(num_samples, max_new_tokens, seed)
    if reference is not None:
        kl = sampled_kl(policy, reference, tokenizer, prompts, num_samples=num_samples, max_new_tokens=max_new_tokens,
                        seed=seed, batch_size=batch_size)
        ours = [c for group in kl.completions for c in group]
        out.update({"kl": kl.kl, "kl_std_error": kl.kl_std_error, "reference/kl": 0.0})
        with as_reference(policy, reference) as ref_policy:
            generator = make_generator("transformers", model=ref_policy.model, tokenizer=tokenizer,
                                       batch_size=batch_size)
            theirs = [c for group in generator.generate(prompts, config) for c in group]
    else:
        generator = make_generator("transformers", model=policy.model, tokenizer=tokenizer, batch_size=batch_size)
        ours, theirs = [c for group in generator.generate(prompts, config) for c in group], []
    flat_prompts = [p for p in prompts for _ in range(num_samples)]
    texts, base_texts = [c.text for c in ours], [c.text for c in theirs]
    out["lengths/generated"] = _mean([len(c.token_ids or []) for c in ours])
    if reward_fn is not None:
        out["reward"] = _mean(reward_fn(flat_prompts, texts))
    if theirs:
        out["reference/lengths/generated"] = _mean([len(c.token_ids or []) for c in theirs])
        scores = None
        if reward_fn is not None:
            scores, _, base_rewards = reward_scores(reward_fn, flat_prompts, texts, base_texts)
            out["reference/reward"] = _mean(base_rewards)
        if judge is not None:
            scores = judge_scores(judge, flat_prompts, texts, base_texts)
        if scores is not None:
            diff = [len(a.token_ids or []) - len(b.token_ids or []) for a, b in zip(ours, theirs, strict=True)]
            out.update({f"win_rate/{k}": v for k, v in win_rate(scores, diff, method=ci, seed=seed).to_dict().items()})
            out["win_rate/judge"] = judge_name(judge, reward_fn)
    out["samples"] = [
        {"prompt": p, "model": a, **({"reference": base_texts[i]} if theirs else {})}
        for i, (p, a) in enumerate(zip(flat_prompts, texts, strict=True))
    ]
    return out


def _mean(values) -> float:
    values = list(values)
    return sum(values) / max(len(values), 1)


def judge_name(judge, reward_fn) -> str:
    if judge is not None:
        return getattr(judge, "name", getattr(judge, "__name__", "judge"))
    return getattr(reward_fn, "__name__", "reward")


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


TABLE_ROWS = (
    ("implicit preference accuracy", "implicit_accuracy"),
    ("log-prob preference accuracy", "logp_accuracy"),
    ("mean implicit margin", "mean_margin"),
    ("perplexity (held-out chosen)", "perplexity"),
    ("KL to reference (nats/seq)", "kl"),
    ("generated length (tokens)", "lengths/generated"),
    ("mean reward of samples", "reward"),
)


def format_table(result: dict) -> str:
    """The table as aligned text: one row per metric, the model and its reference side by side."""
    lines = [f"{'metric':<32}{'model':>12}{'reference':>12}"]
    for label, key in TABLE_ROWS:
        ours, theirs = result.get(key), result.get(f"reference/{key}")
        if ours is not None or theirs is not None:
            lines.append(f"{label:<32}{_fmt(ours):>12}{_fmt(theirs):>12}")
    if "win_rate/win_rate" in result:
        w = {k.split("/", 1)[1]: v for k, v in result.items() if k.startswith("win_rate/")}
        lines.append(
            f"{'win rate vs reference':<32}{w['win_rate']:>12.3f}  [{w['ci_low']:.3f}, {w['ci_high']:.3f}] "
            f"{w['method']}; {w['wins']} wins, {w['ties']} ties, {w['losses']} losses (judge: {w['judge']})"
        )
        lines.append(
            f"{'length-controlled win rate':<32}{w['lc_win_rate']:>12.3f}  [{w['lc_ci_low']:.3f}, "
            f"{w['lc_ci_high']:.3f}] bootstrap; length coefficient {w['length_coefficient']:+.3f}"
        )
    lines.append(f"{'n_pairs':<32}{result['n_pairs']:>12}")
    return "\n".join(lines)
