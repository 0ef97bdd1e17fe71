"""Judge pairs in both orders and resolve the two verdicts: position-bias debiasing.

LLM judges favour a position (often the first response) on pairs they find hard (Zheng et al. 2023,
"Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena", sec. 3.3; Wang et al. 2023, "Large Language Models
are not Fair Evaluators"). Each pair is therefore judged as (A, B) and as (B, A); the swapped verdict is mapped
back to the caller's order. prob_a averages the two orders' probabilities that A is better (1, 0 or 0.5 for a
judge that only names a winner). Rule "flip-tie" (the default):
- both orders name the same winner: that winner;
- one order says tie, the other names a winner: that winner;
- the two orders name different winners (the verdict follows the position, not the responses): tie.
Rule "mean-probability" decides by prob_a instead: A above 0.5, B below, a tie at 0.5, Wang et al.'s balanced
position calibration. For judges that only name a winner the two rules agree; for judges that give a
probability (the local log-prob judge), it keeps the content signal of a judge that leans to one position on
every pair, where "flip-tie" would make every such pair a tie. Under both rules, either order unparseable
makes the pair unparseable (winner None), never a guess, and confidence is the averaged probability of the
winner, 0.5 for a tie.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from directalign.data.types import Message
from directalign.errors import ConfigError
from directalign.judges.base import PairwiseJudge, Verdict, check_pairs
from directalign.progress import bar

_POINT_PROBABILITY = {"A": 1.0, "B": 0.0, "tie": 0.5}
RULES = ("flip-tie", "mean-probability")


@dataclass
class PairJudgement:
    """The debiased verdict on one pair, in the caller's order (A = responses_a[i]).

    winner: "A", "B", "tie", or None when unparseable. position_flip: the two orders named different winners,
    so the pair became a tie. verdicts: the verdicts behind it, the swapped one mapped back to the caller's
    order. votes: for an ensemble, each judge's winner by name.
    """

    winner: str | None
    prob_a: float | None
    rationale: str = ""
    position_flip: bool = False
    verdicts: list[Verdict] = field(default_factory=list)
    votes: dict[str, str | None] = field(default_factory=dict)

    @property
    def confidence(self) -> float | None:
        """The averaged probability that the winner is better; 0.5 for a tie, None when unparseable."""
        if self.winner is None or self.prob_a is None:
            return None
        return {"A": self.prob_a, "B": 1.0 - self.prob_a, "tie": 0.5}[self.winner]


def judge_pairs(
    judge: PairwiseJudge,
    prompts: Sequence[list[Message] | str],
    responses_a: Sequence,
    responses_b: Sequence,
    swap: bool = True,
    rule: str = "flip-tie",
) -> list[PairJudgement]:
    """Judge every pair, in both orders unless swap=False or the judge is order-invariant, and resolve.

    The pairs go to the judge in chunks (which pace the progress bar), each chunk's two orders in one call (the
    pairs, then the same pairs swapped), so that an endpoint judge has both in flight at once and a local judge
    fills its batches."""
    check_pairs(prompts, responses_a, responses_b)
    if rule not in RULES:
        raise ConfigError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    both = swap and not judge.order_invariant
    chunk = max(int(getattr(judge, "batch_size", 0) or 0), 16)
    forward, swapped = [], []
    with bar(total=len(prompts) * (2 if both else 1), desc=f"judging with {judge.name}", unit="verdict") as shown:
        for start in range(0, len(prompts), chunk):  # verdicts are per pair: chunks only pace the bar
            part = slice(start, start + chunk)
            p, a, b = list(prompts[part]), list(responses_a[part]), list(responses_b[part])
            if both:  # both orders of the chunk in one call, all in flight at once for an endpoint
                verdicts = judge.judge(p * 2, a + b, b + a)
                forward += verdicts[: len(p)]
                swapped += verdicts[len(p) :]
            else:
                forward += judge.judge(p, a, b)
            shown.update(len(p) * (2 if both else 1))
    if not both:
        return [resolve(verdict, rule=rule) for verdict in forward]
    return [resolve(f, mirror(s), rule) for f, s in zip(forward, swapped, strict=True)]


def mirror(verdict: Verdict) -> Verdict:
    """A verdict on (B, A) restated for (A, B): winner A <-> B, prob_a -> 1 - prob_a."""
    winner = {"A": "B", "B": "A"}.get(verdict.winner, verdict.winner)
    prob_a = None if verdict.prob_a is None else 1.0 - verdict.prob_a
    return Verdict(winner, verdict.rationale, prob_a, verdict.raw)


def resolve(forward: Verdict, swapped: Verdict | None = None, rule: str = "flip-tie") -> PairJudgement:
    """One judgement from the verdicts on both orders (swapped already mirrored), by `rule` (module docstring)."""
    verdicts = [forward] if swapped is None else [forward, swapped]
    if any(v.winner is None for v in verdicts):
        return PairJudgement(None, None, "", False, verdicts)
    decisive = {v.winner for v in verdicts} - {"tie"}
    flip = len(decisive) > 1
    prob_a = sum(v.prob_a if v.prob_a is not None else _POINT_PROBABILITY[v.winner] for v in verdicts) / len(verdicts)
    if rule == "mean-probability":
        winner = "A" if prob_a > 0.5 else "B" if prob_a < 0.5 else "tie"
    else:
        winner = "tie" if flip or not decisive else decisive.pop()
    return PairJudgement(winner, prob_a, forward.rationale, flip, verdicts)


@dataclass
class JudgeSummary:
    """Counts over a batch of judgements; consistency is the share of parseable pairs without a flip."""

    n: int
    wins_a: int
    wins_b: int
    ties: int
    unparseable: int
    position_flips: int

    @property
    def consistency(self) -> float:
        parsed = self.n - self.unparseable
        return (parsed - self.position_flips) / parsed if parsed else float("nan")

    def to_dict(self) -> dict:
        return {**self.__dict__, "consistency": self.consistency}


def summarize(judgements: Sequence[PairJudgement]) -> JudgeSummary:
    winners = Counter(j.winner for j in judgements)
    return JudgeSummary(
        n=len(judgements),
        wins_a=winners["A"],
        wins_b=winners["B"],
        ties=winners["tie"],
        unparseable=winners[None],
        position_flips=sum(j.position_flip for j in judgements),
    )
