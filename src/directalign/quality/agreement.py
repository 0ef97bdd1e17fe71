"""Agreement between annotators: percent agreement, Cohen's and Fleiss' kappa, Krippendorff's alpha.

Statistics take a `RatingTable` (see table.py); Fleiss' kappa, percent agreement and Krippendorff's alpha
also take an (items x categories) count matrix n_ic directly. Items with fewer than two labels say nothing
about agreement and are left out of every statistic. Confidence intervals resample items (units) with
replacement.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from directalign.errors import DataError
from directalign.quality.stats import json_ready
from directalign.quality.table import RatingTable

LEVELS = ("nominal", "ordinal", "interval", "ratio")


def percent_agreement(data: RatingTable | np.ndarray) -> float:
    """Raw agreement: the mean over items of the share of annotator pairs that give the same label.

    P_i = sum_c n_ic (n_ic - 1) / (n_i (n_i - 1)), averaged over items with n_i >= 2 labels (Fleiss 1971, the
    P-bar of his kappa). For two annotators it is the fraction of items they label alike.
    """
    counts = _pairable(_counts(data))
    if len(counts) == 0:
        return float("nan")
    n_i = counts.sum(axis=1)
    return float(np.mean((counts * (counts - 1)).sum(axis=1) / (n_i * (n_i - 1))))


def cohen_kappa(labels_a: Sequence[Any], labels_b: Sequence[Any]) -> float:
    """Cohen's kappa of two annotators on the same items: kappa = (p_o - p_e) / (1 - p_e).

    p_o is the fraction of items labelled alike; p_e = sum_c p_a(c) p_b(c) uses each annotator's own label
    frequencies (Cohen 1960, "A coefficient of agreement for nominal scales"). Positions where either label is
    None are dropped. NaN when p_e = 1 (both give one and the same label to every item).
    """
    if len(labels_a) != len(labels_b):
        raise DataError(f"cohen_kappa needs parallel labels, got {len(labels_a)} and {len(labels_b)}")
    pairs = [(a, b) for a, b in zip(labels_a, labels_b, strict=True) if a is not None and b is not None]
    if not pairs:
        return float("nan")
    p_o = sum(a == b for a, b in pairs) / len(pairs)
    categories = {a for a, _ in pairs} | {b for _, b in pairs}
    p_e = sum(
        (sum(a == c for a, _ in pairs) / len(pairs)) * (sum(b == c for _, b in pairs) / len(pairs)) for c in categories
    )
    return float("nan") if p_e >= 1.0 else float((p_o - p_e) / (1.0 - p_e))


def fleiss_kappa(data: RatingTable | np.ndarray) -> float:
    """Fleiss' kappa for any number of annotators: kappa = (P - P_e) / (1 - P_e).

    P is `percent_agreement`; P_e = sum_c p_c^2 with p_c the share of all labels that are c (Fleiss 1971,
    "Measuring nominal scale agreement among many raters"). Items may carry different numbers of labels (those
    with n_i >= 2 count); with the same n for every item this is exactly Fleiss' statistic.
    """
    counts = _pairable(_counts(data))
    if len(counts) == 0:
        return float("nan")
    p_c = counts.sum(axis=0) / counts.sum()
    p_e = float(np.sum(p_c**2))
    return float("nan") if p_e >= 1.0 else float((percent_agreement(counts) - p_e) / (1.0 - p_e))


def krippendorff_alpha(
    data: RatingTable | np.ndarray, level: str = "nominal", values: Sequence[float] | None = None
) -> float:
    """Krippendorff's alpha = 1 - D_o / D_e, for nominal, ordinal, interval or ratio labels, missing allowed.

    Coincidences over units u with m_u >= 2 labels: o_ck = sum_u n_uc (n_uk - [c = k]) / (m_u - 1);
    n_c = sum_k o_ck, n = sum_c n_c, and alpha = 1 - (n - 1) sum o_ck d2_ck / sum n_c n_k d2_ck with
    d2 nominal [c != k]; ordinal (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2; interval (v_c - v_k)^2;
    ratio ((v_c - v_k) / (v_c + v_k))^2 (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability").
    Non-nominal levels need numeric categories: a RatingTable's own, or `values` beside a count matrix (whose
    columns are then in rank order). NaN when there is no expected disagreement (a single category).
    """
    if level not in LEVELS:
        raise DataError(f"unknown level {level!r}; expected one of {', '.join(LEVELS)}")
    counts = _pairable(_counts(data)).astype(float)
    if len(counts) == 0:
        return float("nan")
    m_u = counts.sum(axis=1, keepdims=True)
    coincidences = (counts / (m_u - 1)).T @ counts - np.diag((counts / (m_u - 1)).sum(axis=0))
    n_c = coincidences.sum(axis=1)
    d2 = _distance(level, n_c, _values(data, values, level, counts.shape[1]))
    expected = float(np.sum(np.outer(n_c, n_c) * d2))
    if expected <= 0.0:
        return float("nan")
    return float(1.0 - (n_c.sum() - 1.0) * np.sum(coincidences * d2) / expected)


def pairwise_kappa(table: RatingTable) -> dict[str, float]:
    """Cohen's kappa of every pair of annotators over the items both labelled, keyed "a vs b"."""
    result = {}
    for a, b in combinations(range(len(table.annotators)), 2):
        both = (table.codes[:, a] >= 0) & (table.codes[:, b] >= 0)
        if both.any():
            key = f"{table.annotators[a]} vs {table.annotators[b]}"
            result[key] = cohen_kappa(list(table.codes[both, a]), list(table.codes[both, b]))
    return result


@dataclass
class AnnotatorAgreement:
    """How one annotator agrees with the others, over the items it shares with at least one other annotator.

    agreement_with_others: mean over items of the share of the other annotators who gave the same label.
    agreement_with_majority: fraction of items where it gives the majority label of the *other* annotators
    (items where the others tie are left out); kappa_with_majority: Cohen's kappa against that majority.
    """

    annotator: Hashable
    n_items: int
    agreement_with_others: float
    agreement_with_majority: float
    kappa_with_majority: float


def per_annotator(table: RatingTable) -> list[AnnotatorAgreement]:
    """Each annotator's agreement with the others and with the leave-one-out majority."""
    counts = table.counts()
    result = []
    for a, name in enumerate(table.annotators):
        own = table.codes[:, a]
        others = counts.copy()
        labelled = own >= 0
        others[np.nonzero(labelled)[0], own[labelled]] -= 1
        shared = labelled & (others.sum(axis=1) > 0)
        if not shared.any():
            result.append(AnnotatorAgreement(name, 0, float("nan"), float("nan"), float("nan")))
            continue
        rows, own_codes = others[shared], own[shared]
        with_others = rows[np.arange(len(rows)), own_codes] / rows.sum(axis=1)
        top = rows.max(axis=1, keepdims=True)
        clear = (rows == top).sum(axis=1) == 1
        majority = rows.argmax(axis=1)
        with_majority = float(np.mean(own_codes[clear] == majority[clear])) if clear.any() else float("nan")
        kappa = cohen_kappa(list(own_codes[clear]), list(majority[clear])) if clear.any() else float("nan")
        n_shared = int(shared.sum())
        result.append(AnnotatorAgreement(name, n_shared, float(with_others.mean()), with_majority, kappa))
    return result


def bootstrap_ci(
    table: RatingTable,
    statistic: Callable[[RatingTable], float],
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a statistic, resampling items (units) with replacement.

    The (1 - confidence)/2 and (1 + confidence)/2 quantiles of the statistic over n_boot resampled tables
    (Efron & Tibshirani 1993, ch. 13); resamples where it is undefined (NaN) are dropped.
    """
    rng = np.random.default_rng(seed)
    n = len(table.items)
    samples = np.array([statistic(table.subset(rng.integers(0, n, size=n))) for _ in range(n_boot)])
    samples = samples[~np.isnan(samples)]
    if len(samples) == 0:
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return float(low), float(high)


@dataclass
class AgreementReport:
    """Overall and per-annotator agreement of one annotation table, with bootstrap intervals."""

    n_items: int
    n_annotators: int
    n_labels: int
    categories: list[Any]
    percent_agreement: float
    fleiss_kappa: float
    alpha: dict[str, float]
    pairwise_kappa: dict[str, float]
    per_annotator: list[AnnotatorAgreement]
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    confidence: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN becomes None)."""
        return json_ready(asdict(self))


def agreement_report(
    table: RatingTable, ratings: bool = False, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> AgreementReport:
    """Every agreement statistic of a table; ratings=True adds ordinal and interval alpha for numeric labels.

    Intervals (percentile bootstrap over items, `bootstrap_ci`) cover percent agreement, Fleiss' kappa and
    each alpha; n_boot=0 skips them.
    """
    levels = ["nominal", "ordinal", "interval"] if ratings else ["nominal"]
    if ratings:
        table.values()  # raises DataError, naming the label, when a rating is not a number
    statistics: dict[str, Callable[[RatingTable], float]] = {
        "percent_agreement": percent_agreement,
        "fleiss_kappa": fleiss_kappa,
    }
    for level in levels:
        statistics[f"alpha_{level}"] = lambda t, level=level: krippendorff_alpha(t, level)
    intervals = {}
    if n_boot > 0:
        intervals = {name: bootstrap_ci(table, f, n_boot, confidence, seed) for name, f in statistics.items()}
    return AgreementReport(
        n_items=len(table.items),
        n_annotators=len(table.annotators),
        n_labels=int((table.codes >= 0).sum()),
        categories=list(table.categories),
        percent_agreement=percent_agreement(table),
        fleiss_kappa=fleiss_kappa(table),
        alpha={level: krippendorff_alpha(table, level) for level in levels},
        pairwise_kappa=pairwise_kappa(table),
        per_annotator=per_annotator(table),
        intervals=intervals,
        confidence=confidence,
    )


def _counts(data: RatingTable | np.ndarray) -> np.ndarray:
    counts = data.counts() if isinstance(data, RatingTable) else np.asarray(data)
    if counts.ndim != 2 or (counts < 0).any():
        raise DataError("expected an (items x categories) matrix of non-negative label counts")
    return counts


def _pairable(counts: np.ndarray) -> np.ndarray:
    return counts[counts.sum(axis=1) >= 2]


def _values(
    data: RatingTable | np.ndarray, values: Sequence[float] | None, level: str, n_categories: int
) -> np.ndarray:
    if level == "nominal":
        return np.arange(n_categories, dtype=float)
    if values is not None:
        result = np.asarray(values, dtype=float)
    elif isinstance(data, RatingTable):
        result = data.values()
    elif level == "ordinal":
        result = np.arange(n_categories, dtype=float)
    else:
        raise DataError(f"{level} alpha from a count matrix needs the category values")
    if len(result) != n_categories:
        raise DataError(f"{len(result)} category values for {n_categories} categories")
    return result


def _distance(level: str, n_c: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The squared difference d2_ck of Krippendorff (2011) for each pair of categories."""
    diff = values[:, None] - values[None, :]
    if level == "nominal":
        return (diff != 0).astype(float)
    if level == "interval":
        return diff**2
    if level == "ratio":
        total = values[:, None] + values[None, :]
        return np.divide(diff, total, out=np.zeros_like(diff), where=total != 0) ** 2
    order = np.argsort(values, kind="stable")
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.arange(len(values))
    cumulative = np.empty_like(n_c)
    cumulative[order] = np.cumsum(n_c[order])
    # sum_{g=c..k} n_g = cum(k) - cum(c) + n_c when c ranks at or below k.
    between = np.where(
        rank[:, None] <= rank[None, :],
        cumulative[None, :] - cumulative[:, None] + n_c[:, None],
        cumulative[:, None] - cumulative[None, :] + n_c[None, :],
    )
    return (between - (n_c[:, None] + n_c[None, :]) / 2.0) ** 2
