"""Win rate of a model against a baseline on the same prompts, with a confidence interval and a length control.

Each prompt gives one comparison, judged by a reward function (the higher reward wins; equal rewards tie), by a
pairwise judge of directalign.judges (judged in both orders, position bias resolved there; an unparseable verdict
is left out and counted), or by any callable `judge(prompt, a, b) -> "a" | "b" | "tie"`. A win scores 1, a tie
1/2, a loss 0, and the win rate is the mean score. Intervals: Wilson's score interval on that mean (ties enter
as half a success, the usual approximation), or a percentile bootstrap over prompts.

Length control (after AlpacaEval's length-controlled win rate, Dubois et al. 2024): judges and reward models
often prefer longer answers, so the score is regressed on the length difference with a logistic model,
P(win) = sigmoid(b0 + b1 * (len_model - len_baseline) / scale), fitted to the fractional scores, and the
length-controlled win rate is sigmoid(b0): the predicted win rate at equal lengths.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from directalign.errors import ConfigError

Judge = Callable[[str, str, str], str]
SCORES = {"a": 1.0, "b": 0.0, "tie": 0.5}


@dataclass
class WinRate:
    n: int
    wins: int
    ties: int
    losses: int
    win_rate: float
    ci_low: float
    ci_high: float
    lc_win_rate: float | None = None  # length-controlled
    lc_ci_low: float | None = None
    lc_ci_high: float | None = None
    length_coefficient: float | None = None  # log-odds per standard deviation of the length difference
    method: str = "wilson"
    unparseable: int = 0  # comparisons the judge gave no verdict on, left out of n

    def to_dict(self) -> dict:
        return asdict(self)


def wilson_interval(successes: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def length_controlled(
    scores: Sequence[float], length_diff: Sequence[float], ridge: float = 1e-3
) -> tuple[float, float]:
    """(sigmoid(b0), b1) of the logistic fit of scores in [0, 1] on the standardised length difference.

    Newton's method on the cross-entropy; a small ridge keeps both coefficients finite when the data separate
    (every comparison won, or won exactly by the longer answer).
    """
    y = np.asarray(scores, dtype=float)
    d = np.asarray(length_diff, dtype=float)
    scale = d.std()
    x = np.stack([np.ones_like(d), d / scale if scale > 0 else np.zeros_like(d)], axis=1)
    w = np.zeros(2)
    for _ in range(100):
        p = 1 / (1 + np.exp(-x @ w))
        gradient = x.T @ (p - y) / len(y) + ridge * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x / len(y) + ridge * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(1 / (1 + np.exp(-w[0]))), float(w[1])


def bootstrap_interval(
    scores: np.ndarray, statistic: Callable[[np.ndarray], float], n_boot: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, len(scores), len(scores))) for _ in range(n_boot)]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def win_rate(
    scores: Sequence[float | None],
    length_diff: Sequence[float] | None = None,
    *,
    method: str = "wilson",
    n_boot: int = 1000,
    seed: int = 0,
) -> WinRate:
    """Summarise per-comparison scores (1 win, 0.5 tie, 0 loss, None unparseable) of the model against the
    baseline; length_diff[i] is the model's length minus the baseline's in comparison i."""
    if method not in ("wilson", "bootstrap"):
        raise ConfigError(f"confidence interval method must be wilson or bootstrap; got {method!r}")
    kept = [i for i, score in enumerate(scores) if score is not None]
    s = np.asarray([scores[i] for i in kept], dtype=float)
    if s.size == 0:
        raise ConfigError("win rate needs at least one judged comparison")
    wins, ties = int((s == 1).sum()), int((s == 0.5).sum())
    if method == "wilson":
        low, high = wilson_interval(float(s.sum()), len(s))
    else:
        low, high = bootstrap_interval(s, lambda idx: s[idx].mean(), n_boot, seed)
    result = WinRate(len(s), wins, ties, len(s) - wins - ties, float(s.mean()), low, high, method=method,
                     unparseable=len(scores) - len(kept))
    if length_diff is not None:
        d = np.asarray([length_diff[i] for i in kept], dtype=float)
        result.lc_win_rate, result.length_coefficient = length_controlled(s, d)
        # Only a bootstrap gives the fitted intercept an interval; 200 refits keep it quick.
        result.lc_ci_low, result.lc_ci_high = bootstrap_interval(
            s, lambda idx: length_controlled(s[idx], d[idx])[0], min(n_boot, 200), seed
        )
    return result


def prompt_text(prompt: str | Sequence[dict]) -> str:
    """A judge's view of a chat prompt: its text, or its turns as "role: content" lines."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1:
        return prompt[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def judge_scores(judge, prompts: Sequence, model: Sequence[str], baseline: Sequence[str]) -> list[float | None]:
    """Model-vs-baseline scores from a judge. A directalign.judges PairwiseJudge (it has .judge) judges both
    orders and resolves them (judges.pairwise); a plain callable sees the model first on even prompts and second
    on odd ones, so that its position bias cancels instead of adding to one side."""
    if hasattr(judge, "judge"):
        from directalign.judges.pairwise import judge_pairs

        judgements = judge_pairs(judge, list(prompts), list(model), list(baseline))
        return [None if j.winner is None else SCORES[j.winner.lower()] for j in judgements]
    scores = []
    for i, (prompt, ours, theirs) in enumerate(zip(prompts, model, baseline, strict=True)):
        first = i % 2 == 0
        verdict = str(judge(prompt_text(prompt), *((ours, theirs) if first else (theirs, ours)))).lower()
        if verdict not in SCORES:
            raise ConfigError(f"a judge must return 'a', 'b' or 'tie'; got {verdict!r} for prompt {i}")
        scores.append(SCORES[verdict] if first else 1.0 - SCORES[verdict])
    return scores


def reward_scores(
    reward_fn, prompts: Sequence, model: Sequence[str], baseline: Sequence[str], tolerance: float = 1e-9
) -> tuple[list[float], list[float], list[float]]:
    """(scores, model rewards, baseline rewards) with a reward function as the judge."""
    ours = [float(r) for r in reward_fn(list(prompts), list(model))]
    theirs = [float(r) for r in reward_fn(list(prompts), list(baseline))]
    scores = [0.5 if abs(a - b) <= tolerance else float(a > b) for a, b in zip(ours, theirs, strict=True)]
    return scores, ours, theirs
