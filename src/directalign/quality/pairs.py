"""Several scored responses per prompt (ratings 1-5, reward scores, judge scores) into preference pairs.

Strategies: best-vs-worst (one pair, the widest margin), best-vs-random (the best against a random
lower-scored response, seeded), all-pairs (every ordered pair whose margin reaches min_margin). A record keeps
all its k responses and lists its pairs, so the prompt is computed once in training.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from directalign.data.types import Message, PreferenceRecord
from directalign.errors import DataError
from directalign.quality.filters import MAX_EXAMPLES, FilterReport

STRATEGIES = ("best-vs-worst", "best-vs-random", "all-pairs")


@dataclass
class ScoredResponses:
    """One prompt with k responses and a score for each (higher is better)."""

    prompt: list[Message] | str
    responses: list[list[Message] | str]
    scores: list[float]
    source: str = ""


def choose_pairs(
    scores: Sequence[float], strategy: str, min_margin: float = 0.0, rng: random.Random | None = None
) -> list[tuple[int, int]]:
    """(preferred, dispreferred) indices by strategy; a pair needs s_i - s_j >= min_margin and s_i > s_j.

    Ties at the top or bottom go to the first response listed.
    """
    if strategy not in STRATEGIES:
        raise DataError(f"unknown pairing strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if len(scores) < 2:
        return []
    by_score = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: first listed wins ties

    def ok(i: int, j: int) -> bool:
        return scores[i] > scores[j] and scores[i] - scores[j] >= min_margin

    best = by_score[0]
    if strategy == "best-vs-worst":
        worst = min(range(len(scores)), key=lambda i: scores[i])
        return [(best, worst)] if ok(best, worst) else []
    if strategy == "best-vs-random":
        lower = [j for j in range(len(scores)) if ok(best, j)]
        return [(best, (rng or random.Random(0)).choice(lower))] if lower else []
    return [(i, j) for i in by_score for j in by_score if ok(i, j)]


def build_pairs(
    items: Sequence[ScoredResponses], strategy: str = "best-vs-worst", min_margin: float = 0.0, seed: int = 0
) -> tuple[list[PreferenceRecord], FilterReport]:
    """PreferenceRecords from scored responses; prompts that yield no pair are dropped.

    The report counts, unlike the filters', prompts removed (no pair) and pairs kept.
    """
    rng = random.Random(seed)
    records, report = [], FilterReport(f"{strategy}, margin >= {min_margin:g}", 0, 0)
    for index, item in enumerate(items):
        if len(item.scores) != len(item.responses):
            place = item.source or f"item {index}"
            raise DataError(f"{place}: {len(item.scores)} scores for {len(item.responses)} responses")
        pairs = choose_pairs(item.scores, strategy, min_margin, rng)
        if not pairs:
            report.removed += 1
            if len(report.examples) < MAX_EXAMPLES:
                report.examples.append(f"{item.source or f'item {index}'}: no pair (scores {item.scores})")
            continue
        report.kept += len(pairs)
        records.append(
            PreferenceRecord(
                prompt=_messages(item.prompt, "user"),
                responses=[_messages(r, "assistant") for r in item.responses],
                pairs=pairs,
                source=item.source,
            )
        )
    return records, report


def _messages(value: list[Message] | str, role: str) -> list[Message]:
    return [{"role": role, "content": value}] if isinstance(value, str) else list(value)
