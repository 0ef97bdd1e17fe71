"""Several judges vote on each pair; how far they agree is reported with the kappas of quality/agreement.

Each judge is debiased on its own (both orders, pairwise.judge_pairs); the ensemble's winner is the label with
the most votes among the judges that gave a parseable verdict, a tie when two labels share the most votes, and
unparseable when none did. Its prob_a is the mean of the voters' prob_a, and its rationale that of the first
judge that voted for the winner. Agreement treats the judges as annotators of the pairs, labels A / B / tie:
percent agreement, Fleiss' kappa and Cohen's kappa of every pair of judges.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from directalign.data.types import Message
from directalign.errors import ConfigError
from directalign.judges.base import PairwiseJudge
from directalign.judges.pairwise import JudgeSummary, PairJudgement, judge_pairs, summarize
from directalign.quality.agreement import fleiss_kappa, pairwise_kappa, percent_agreement
from directalign.quality.stats import json_ready
from directalign.quality.table import rating_table


@dataclass
class EnsembleResult:
    """The ensemble's judgements, each judge's own, and the judges' agreement with one another."""

    judgements: list[PairJudgement]
    per_judge: dict[str, list[PairJudgement]]
    agreement: dict

    def summaries(self) -> dict[str, JudgeSummary]:
        return {"ensemble": summarize(self.judgements)} | {n: summarize(j) for n, j in self.per_judge.items()}


class JudgeEnsemble:
    """Judges that vote; judge names must be unique. One judge gives exactly its own debiased judgements.

    swap and rule go to pairwise.judge_pairs for every judge.
    """

    def __init__(self, judges: Sequence[PairwiseJudge], swap: bool = True, rule: str = "flip-tie"):
        if not judges:
            raise ConfigError("a judge ensemble needs at least one judge")
        names = [judge.name for judge in judges]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ConfigError(f"judge names must be unique; repeated: {', '.join(repeated)}")
        self.judges, self.swap, self.rule = list(judges), swap, rule

    @property
    def name(self) -> str:
        return "+".join(judge.name for judge in self.judges)

    def run(
        self, prompts: Sequence[list[Message] | str], responses_a: Sequence, responses_b: Sequence
    ) -> EnsembleResult:
        per_judge = {
            j.name: judge_pairs(j, prompts, responses_a, responses_b, self.swap, self.rule) for j in self.judges
        }
        if len(per_judge) == 1:
            ((name, judgements),) = per_judge.items()
            for judgement in judgements:
                judgement.votes = {name: judgement.winner}
            return EnsembleResult(judgements, per_judge, judge_agreement(per_judge))
        combined = [vote({name: js[i] for name, js in per_judge.items()}) for i in range(len(prompts))]
        return EnsembleResult(combined, per_judge, judge_agreement(per_judge))

    def judge_pairs(
        self, prompts: Sequence[list[Message] | str], responses_a: Sequence, responses_b: Sequence
    ) -> list[PairJudgement]:
        return self.run(prompts, responses_a, responses_b).judgements


def vote(judgements: dict[str, PairJudgement]) -> PairJudgement:
    """The majority of the parseable judgements on one pair (module docstring)."""
    votes = {name: j.winner for name, j in judgements.items()}
    parsed = {name: j for name, j in judgements.items() if j.winner is not None}
    if not parsed:
        return PairJudgement(None, None, votes=votes)
    counts = Counter(j.winner for j in parsed.values()).most_common()
    top = [label for label, count in counts if count == counts[0][1]]
    winner = top[0] if len(top) == 1 else "tie"
    prob_a = sum(j.prob_a for j in parsed.values()) / len(parsed)
    voters = [name for name, j in parsed.items() if j.winner == winner]
    rationale = f"{voters[0]}: {parsed[voters[0]].rationale}" if voters else ""
    flip = any(j.position_flip for j in parsed.values())
    return PairJudgement(winner, prob_a, rationale, flip, votes=votes)


def judge_agreement(per_judge: dict[str, list[PairJudgement]]) -> dict:
    """Percent agreement, Fleiss' kappa and pairwise Cohen's kappa of the judges' labels (A / B / tie).

    Unparseable verdicts are missing labels; values are None where undefined (fewer than two judges).
    """
    rows = [
        {"item_id": i, "annotator_id": name, "label": j.winner}
        for name, judgements in per_judge.items()
        for i, j in enumerate(judgements)
        if j.winner is not None
    ]
    if len({row["annotator_id"] for row in rows}) < 2:
        return {"percent_agreement": None, "fleiss_kappa": None, "pairwise_kappa": {}}
    table = rating_table(rows)
    return json_ready(
        {
            "percent_agreement": percent_agreement(table),
            "fleiss_kappa": fleiss_kappa(table),
            "pairwise_kappa": pairwise_kappa(table),
        }
    )
