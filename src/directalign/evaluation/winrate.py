"""Win rate of a model against a baseline on the same prompts, with a confidence interval and a length adjustment.

Each prompt gives one comparison, judged by a reward function (the higher reward wins; equal rewards tie), by a
pairwise judge of directalign.judges (judged in both orders, position bias resolved there; an unparseable verdict
is left out and counted), or by any callable `judge(prompt, a, b) -> "a" | "b" | "tie"`. A comparison's score is
the model's preference p in [0, 1]: 1 a win, 1/2 a tie, 0 a loss, or a probability from a soft judge (AlpacaEval's
weighted judges give one). The win rate is the mean preference; the counts follow AlpacaEval's
`describe_head2head` (alpaca_eval/metrics/helpers.py): a win when p > 1/2, a tie when p == 1/2 exactly, a loss
when p < 1/2. Intervals: Wilson's score interval on the mean (a fractional score enters as a fractional success,
the usual approximation), or a percentile bootstrap over prompts.

Length adjustment (`length_controlled`): judges and reward models often prefer longer answers, so the preference is
regressed on the length difference with a logistic model P(win) = sigmoid(b0 + b1 * d / sd(d)), fitted to the
fractional scores, and `lc_win_rate` = sigmoid(b0), the predicted preference at equal lengths. This is the length
term of AlpacaEval 2.0's length-controlled win rate (Dubois et al. 2024), not their whole GLM; see
`length_controlled` for exactly what differs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from directalign.errors import ConfigError
from directalign.quality.stats import wilson_interval as _wilson

Judge = Callable[[str, str, str], str]
SCORES = {"a": 1.0, "b": 0.0, "tie": 0.5}


@dataclass
class WinRate:
    n: int
    wins: int  # preference > 1/2
    ties: int  # preference == 1/2
    losses: int  # preference < 1/2
    win_rate: float  # mean preference
    ci_low: float
    ci_high: float
    lc_win_rate: float | None = None  # length-adjusted: sigmoid(b0) of `length_controlled`
    lc_ci_low: float | None = None
    lc_ci_high: float | None = None
    length_coefficient: float | None = None  # log-odds per standard deviation of the length difference
    method: str = "wilson"
    unparseable: int = 0  # comparisons the judge gave no verdict on, left out of n

    def to_dict(self) -> dict:
        return asdict(self)


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval of successes / n (quality.stats.wilson_interval); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    return _wilson(successes, n, confidence)


def length_controlled(
    scores: Sequence[float], length_diff: Sequence[float], ridge: float = 1e-3
) -> tuple[float, float]:
    """(sigmoid(b0), b1) of the logistic fit of preferences y in [0, 1] on x = d / sd(d), d the length difference.

    Minimises sum_i CE(y_i, sigmoid(b0 + b1 x_i)) + ridge / 2 * b1^2 (cross-entropy with fractional targets,
    sd the population standard deviation) by Newton's method with step halving. The intercept is not penalised,
    so sigmoid(b0) is unbiased at every n; the slope's small ridge on the *summed* loss (a Gaussian prior, its
    pull shrinking as 1/n) keeps b1 finite when the data separate (every comparison won exactly by the longer
    answer). When every score is 1 (or 0) the rate is that score and b1 = 0. This is the model that
    statsmodels' GLM(y, [1, x], Binomial()) fits with ridge = 0, and that sklearn's
    LogisticRegression(C=1 / ridge) fits on rows duplicated with weights y and 1 - y (tests/evaluation).

    Not AlpacaEval 2.0's LC win rate (alpaca_eval/metrics/glm_winrate.py, "length_controlled_v1"): theirs models
    preference ~ tanh(d / sd(d)) + instruction_difficulty + baseline-vs-model intercept, where
    instruction_difficulty is a per-instruction covariate estimated beforehand on the leaderboard's models, fits it
    jointly with down-weighted (0.2) annotations of two length-gamed models, chooses an L1 penalty (the intercept
    included) by 5-fold grouped cross-validation, and reports the mean over instructions of the prediction at
    d = 0. The difficulty term and the gamed models need the leaderboard's data and exist only for its 805
    instructions, so they are left out; what is kept is the fractional target, the standardised length
    difference (untransformed here) and the reading at d = 0.
    """
    y = np.asarray(scores, dtype=float)
    d = np.asarray(length_diff, dtype=float)
    if ridge < 0:
        raise ConfigError(f"length control: ridge must be >= 0, got {ridge}")
    if y.min() == y.max() and y[0] in (0.0, 1.0):
        return float(y[0]), 0.0
    scale = d.std()
    x = np.stack([np.ones_like(d), d / scale if scale > 0 else np.zeros_like(d)], axis=1)
    penalty = np.diag([0.0, ridge])
    w = np.zeros(2)
    objective = _penalised_cross_entropy(w, x, y, ridge)
    for _ in range(200):
        p = _sigmoid(x @ w)
        gradient = x.T @ (p - y) + penalty @ w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + penalty
        step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
        # Step halving keeps each iterate downhill (a full Newton step can overshoot on nearly separated data);
        # near the optimum the objective changes by less than its rounding, so a tie within that is downhill too.
        for _ in range(30):
            candidate = _penalised_cross_entropy(w - step, x, y, ridge)
            if candidate <= objective + 1e-12 * max(1.0, objective):
                break
            step = step / 2
        w, objective = w - step, candidate
        if np.abs(step).max() < 1e-12:
            break
    return float(_sigmoid(w[0])), float(w[1])


def _sigmoid(z: np.ndarray | float) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def _penalised_cross_entropy(w: np.ndarray, x: np.ndarray, y: np.ndarray, ridge: float) -> float:
    z = x @ w
    # -[y log s(z) + (1 - y) log s(-z)], each log-sigmoid as -logaddexp(0, -z) so large |z| cannot overflow.
    return float(np.sum(y * np.logaddexp(0.0, -z) + (1 - y) * np.logaddexp(0.0, z)) + ridge / 2 * w[1] ** 2)


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
    """Summarise per-comparison preferences of the model over the baseline (1 win, 0.5 tie, 0 loss, any p in
    [0, 1] from a soft judge, None unparseable); length_diff[i] is the model's length minus the baseline's in
    comparison i. Counts: wins p > 1/2, ties p == 1/2, losses p < 1/2 (AlpacaEval's); the rate is the mean."""
    if method not in ("wilson", "bootstrap"):
        raise ConfigError(f"confidence interval method must be wilson or bootstrap; got {method!r}")
    kept = [i for i, score in enumerate(scores) if score is not None]
    s = np.asarray([scores[i] for i in kept], dtype=float)
    if s.size == 0:
        raise ConfigError("win rate needs at least one judged comparison")
    if not np.all((s >= 0) & (s <= 1)):  # also catches NaN
        bad = next(i for i, value in zip(kept, s, strict=True) if not 0 <= value <= 1)
        raise ConfigError(f"win rate: score {scores[bad]!r} of comparison {bad} is not a preference in [0, 1]")
    wins, ties = int((s > 0.5).sum()), int((s == 0.5).sum())
    if method == "wilson":
        low, high = wilson_interval(float(s.sum()), len(s))
    else:
        low, high = bootstrap_interval(s, lambda idx: s[idx].mean(), n_boot, seed)
    result = WinRate(len(s), wins, ties, int((s < 0.5).sum()), float(s.mean()), low, high, method=method,
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
