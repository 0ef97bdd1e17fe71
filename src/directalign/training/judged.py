"""A pairwise judge as the pair source of online and iterative DPO: fresh preferences from AI feedback, the way
OAIF builds them (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback").

Each prompt's k samples are compared pairwise, all k(k-1)/2 pairs of every prompt of a step in one batch, each
pair in both orders (judges.pairwise.judge_pairs: a verdict that follows the position becomes a tie). A
sample's Copeland score is its wins minus its losses over the k-1 others; the selection score divides it by
k-1 and subtracts judge_length_penalty x its length / max_new_tokens, and the pair is the best against the
worst by that score (quality.pairs.choose_pairs, the one best-vs-worst rule). A prompt gives no pair when
every score is equal (dropped as a tie, or as a flip or unparseable when every verdict was one), and also when
the judge's own verdict on that best-vs-worst pair is a tie, an order flip, unparseable, or names the worst (a
Copeland ranking the direct comparison contradicts): dropped, counted by reason. The judge's confidence in the
kept pair (its probability, averaged over both orders, that the best is better) can set that pair's label
smoothing (judge_label_smoothing: 1 - confidence, at most 0.45).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from itertools import combinations

from directalign.judges.pairwise import judge_pairs
from directalign.quality.pairs import choose_pairs

MAX_SMOOTHING = 0.45  # robust DPO divides by 1 - 2 eps: a pair the judge barely prefers must not weigh 10x
DROP_REASONS = ("tie", "flip", "unparseable", "intransitive")


@dataclass
class JudgedGroup:
    """The judge's ranking of one prompt's samples, and the pair it gives (or why it gives none)."""

    wins: list[float]  # Copeland: wins - losses over the k-1 others (a tie counts 0)
    scores: list[float]  # the selection score: wins / (k-1) - length_penalty x length / max_new_tokens
    pair: tuple[int, int] | None  # (best, worst) by score, when the judge's own verdict on it agrees
    dropped: str | None  # why there is no pair: one of DROP_REASONS
    confidence: float | None  # the judge's probability that best beats worst
    pairs_judged: int  # unordered pairs compared
    calls: int  # ordered judgements asked of the judge
    ties: int  # of pairs_judged, resolved as a tie (order flips included)
    flips: int  # of pairs_judged, whose verdict followed the position
    unparseable: int
    latency_s: float  # this group's share of the batch's judging time

    @property
    def label_smoothing(self) -> float:
        return 0.0 if self.confidence is None else min(max(1.0 - self.confidence, 0.0), MAX_SMOOTHING)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict) -> JudgedGroup:
        row = dict(row)
        row["pair"] = tuple(row["pair"]) if row["pair"] is not None else None
        return cls(**row)


def judge_from_config(cfg):
    """The judge of cfg.judge (judges.backends.judge_from_spec), or None for reward-function pairs."""
    if cfg.judge is None:
        return None
    from directalign.judges.backends import judge_from_spec

    return judge_from_spec(cfg.judge, cfg.judge_base_url, None, cfg.judge_tie_margin, cfg.judge_batch_size,
                           cfg.judge_concurrency)


def judge_groups(judge, groups, cfg) -> list[JudgedGroup]:
    """Rank every group's samples by the judge (module docstring); one judge batch for all the groups."""
    if not groups:
        return []
    index = [(g, i, j) for g, group in enumerate(groups) for i, j in combinations(range(len(group.completions)), 2)]
    started = time.perf_counter()
    judgements = judge_pairs(
        judge,
        [groups[g].prompt for g, _, _ in index],
        [groups[g].completions[i].text for g, i, _ in index],
        [groups[g].completions[j].text for g, _, j in index],
        swap=cfg.judge_swap,
        rule=cfg.judge_rule,
    )
    latency = time.perf_counter() - started
    orders = 1 if judge.order_invariant or not cfg.judge_swap else 2
    by_group: dict[int, dict[tuple[int, int], object]] = {}
    for (g, i, j), judgement in zip(index, judgements, strict=True):
        by_group.setdefault(g, {})[(i, j)] = judgement
    total = len(index)
    return [_rank(group, by_group.get(g, {}), cfg, orders, latency / total if total else 0.0)
            for g, group in enumerate(groups)]


def _rank(group, judged: dict, cfg, orders: int, latency_per_pair: float) -> JudgedGroup:
    k = len(group.completions)
    wins = [0.0] * k
    for (i, j), judgement in judged.items():
        if judgement.winner in ("A", "B"):
            winner, loser = (i, j) if judgement.winner == "A" else (j, i)
            wins[winner] += 1.0
            wins[loser] -= 1.0
    scale = max(k - 1, 1)
    scores = [w / scale - cfg.judge_length_penalty * len(ids) / cfg.max_new_tokens
              for w, ids in zip(wins, group.response_ids, strict=True)]
    pair, dropped, confidence = None, None, None
    chosen = choose_pairs(scores, "best-vs-worst")
    if not chosen:  # every score equal: say why, when every verdict was a flip (or unreadable)
        verdicts = list(judged.values())
        dropped = ("flip" if verdicts and all(j.position_flip for j in verdicts)
                   else "unparseable" if verdicts and all(j.winner is None for j in verdicts) else "tie")
    else:
        best, worst = chosen[0]
        judgement = judged[(min(best, worst), max(best, worst))]
        best_letter = "A" if best < worst else "B"
        if judgement.winner is None:
            dropped = "unparseable"
        elif judgement.position_flip:
            dropped = "flip"
        elif judgement.winner == "tie":
            dropped = "tie"
        elif judgement.winner != best_letter:
            dropped = "intransitive"
        else:
            pair, confidence = (best, worst), judgement.confidence
    return JudgedGroup(
        wins=wins, scores=scores, pair=pair, dropped=dropped, confidence=confidence, pairs_judged=len(judged),
        calls=len(judged) * orders, ties=sum(j.winner == "tie" for j in judged.values()),
        flips=sum(j.position_flip for j in judged.values()), unparseable=sum(j.winner is None for j in judged.values()),
        latency_s=latency_per_pair * len(judged),
    )


def judge_metrics(groups) -> dict[str, float]:
    """The judge/... keys of a step (or a round) over its groups: the judge's consistency (parseable verdicts
    that did not follow the position), tie, flip and unparseable rates, calls and seconds spent judging, pairs
    kept and dropped by reason, the kept pairs' chosen and rejected lengths in tokens and mean confidence."""
    judged = [g.judged for g in groups if g.judged is not None]
    if not judged:
        return {}
    n = sum(j.pairs_judged for j in judged)
    parsed = n - sum(j.unparseable for j in judged)
    flips = sum(j.flips for j in judged)
    kept = [(g, g.judged) for g in groups if g.judged is not None and g.judged.pair is not None]
    metrics = {
        "judge/consistency": (parsed - flips) / parsed if parsed else float("nan"),
        "judge/tie_rate": sum(j.ties for j in judged) / parsed if parsed else float("nan"),
        "judge/flip_rate": flips / parsed if parsed else float("nan"),
        "judge/unparseable_rate": (n - parsed) / n if n else float("nan"),
        "judge/calls": float(sum(j.calls for j in judged)),
        "judge/latency_s": sum(j.latency_s for j in judged),
        "judge/pairs": float(len(kept)),
    }
    for reason in DROP_REASONS:
        metrics[f"judge/dropped_{reason}"] = float(sum(j.dropped == reason for j in judged))
    if kept:
        metrics["judge/chosen_len"] = sum(len(g.response_ids[j.pair[0]]) for g, j in kept) / len(kept)
        metrics["judge/rejected_len"] = sum(len(g.response_ids[j.pair[1]]) for g, j in kept) / len(kept)
        metrics["judge/confidence"] = sum(j.confidence for _, j in kept) / len(kept)
    return metrics
