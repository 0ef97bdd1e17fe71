"""How far to trust a judge: its agreement with held-out human preferences, raw and chance-corrected.

Each labelled pair is judged (both orders, like any other pair) and the judge's label A / B / tie is compared
with the human one. Reported: coverage (parseable verdicts), raw agreement over the parseable pairs with a
Wilson interval, Cohen's kappa (quality.agreement.cohen_kappa) with a percentile bootstrap interval over
pairs, agreement on the pairs where both sides are decisive, and the confusion counts. Human labels drawn from
preference records are shown in a random (seeded) order, chosen as A or as B with equal chance: shown always
first, a judge that favours the first position would look accurate.

Where each pair keeps its annotators' votes (PandaLM's three annotators, the annotation app's dpo export with
its votes_* columns), the judge is also set against the human-human ceiling on one scale: the chance that the
judge agrees with one annotator drawn at random, beside the chance that two different annotators drawn at
random agree with each other (items with at least two votes), with ties and without (decisive votes only, the
judge's ties left out). A judge near the ceiling agrees with people about as often as they agree with one
another.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from directalign.data.types import Message, PreferenceRecord
from directalign.errors import DataError
from directalign.judges.base import WINNERS
from directalign.judges.ensemble import JudgeEnsemble
from directalign.judges.pairwise import PairJudgement
from directalign.quality.agreement import cohen_kappa
from directalign.quality.stats import json_ready, wilson_interval


@dataclass
class LabelledPair:
    """A pair with a human verdict: "A" (response_a better), "B" or "tie"."""

    prompt: list[Message]
    response_a: str
    response_b: str
    human: str
    source: str = ""
    votes: dict[str, int] | None = None  # each label's annotator votes ("A", "B", "tie"), where known


def pairs_from_records(records: Sequence[PreferenceRecord], seed: int = 0) -> list[LabelledPair]:
    """Each record's first pair, its chosen response shown as A or as B at random (seeded)."""
    rng = random.Random(seed)
    pairs = []
    for record in records:
        chosen, rejected = record.chosen[-1]["content"], record.rejected[-1]["content"]
        if rng.random() < 0.5:
            pairs.append(LabelledPair(record.prompt, chosen, rejected, "A", record.source))
        else:
            pairs.append(LabelledPair(record.prompt, rejected, chosen, "B", record.source))
    return pairs


def pandalm_pairs(folder: str | Path, ties: bool = True) -> list[LabelledPair]:
    """The PandaLM test set with the majority of its three human labels (response1 = A); ties kept or dropped.

    Items where the three annotators all differ have no majority and are left out.
    """
    path = Path(folder) / "testset-v1.json"
    if not path.is_file():
        raise DataError(f"{path}: no such file (the PandaLM test set folder holds testset-v1.json)")
    rows = json.loads(path.read_text(encoding="utf-8"))
    pairs = []
    for number, row in enumerate(rows, start=1):
        counts = Counter(row[f"annotator{k}"] for k in (1, 2, 3))
        label, count = counts.most_common(1)[0]
        if count < 2 or (label == 0 and not ties):
            continue
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        # A few responses are JSON booleans (a model that answered "True"): read them as the text they were.
        response_a, response_b = str(row["response1"]), str(row["response2"])
        human = {0: "tie", 1: "A", 2: "B"}[label]
        votes = {name: counts[code] for code, name in ((1, "A"), (2, "B"), (0, "tie"))}
        pairs.append(LabelledPair([{"role": "user", "content": prompt}], response_a, response_b, human,
                                  f"{path}:{number}", votes))
    return pairs


def annotation_pairs(path: str | Path, seed: int = 0) -> list[LabelledPair]:
    """The pairs of an annotation project's dpo export (`directalign annotate export --format dpo`, with
    --keep-ties for the tied items) with their votes: votes_chosen, votes_rejected, and votes_tie plus
    votes_both_bad as ties (neither response better). Chosen is shown as A or as B at random (seeded)."""
    from directalign.data.formats import load_records

    path = Path(path)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    missing = next((i for i, row in enumerate(rows, 1) if "votes_chosen" not in row), None)
    if missing is not None:
        raise DataError(f"{path}:{missing}: no votes_chosen column (expected `directalign annotate export "
                        "--format dpo` output)")
    records = load_records(str(path)).records
    pairs = pairs_from_records(records, seed)
    for pair, row in zip(pairs, rows, strict=True):
        chosen, rejected = ("A", "B") if pair.human == "A" else ("B", "A")
        pair.votes = {chosen: int(row["votes_chosen"]), rejected: int(row["votes_rejected"]),
                      "tie": int(row.get("votes_tie", 0)) + int(row.get("votes_both_bad", 0))}
        if row.get("outcome") in ("tie", "both_bad"):
            pair.human = "tie"
    return pairs


@dataclass
class HumanCeiling:
    """The judge against one random annotator, and two random annotators against each other (module docstring)."""

    judge_vs_annotator: float
    annotator_vs_annotator: float
    n_items: int
    judge_vs_annotator_decisive: float
    annotator_vs_annotator_decisive: float
    n_items_decisive: int


def human_ceiling(judged: Sequence[str | None], votes: Sequence[dict[str, int]]) -> HumanCeiling:
    """Agreement rates on items with at least two votes (judge rates over its parseable verdicts there)."""
    judge, human, judge_d, human_d = [], [], [], []
    for winner, counts in zip(judged, votes, strict=True):
        n = sum(counts.values())
        if n < 2:
            continue
        human.append(sum(c * (c - 1) for c in counts.values()) / (n * (n - 1)))
        if winner is not None:
            judge.append(counts.get(winner, 0) / n)
        decisive = {k: counts.get(k, 0) for k in ("A", "B")}
        d = sum(decisive.values())
        if d >= 2:
            human_d.append(sum(c * (c - 1) for c in decisive.values()) / (d * (d - 1)))
            if winner in ("A", "B"):
                judge_d.append(decisive[winner] / d)

    def mean(values):
        return sum(values) / len(values) if values else float("nan")

    return HumanCeiling(mean(judge), mean(human), len(human), mean(judge_d), mean(human_d), len(human_d))


@dataclass
class JudgeValidation:
    """One judge against the human labels (module docstring); intervals at `confidence`."""

    judge: str
    n: int
    n_parsed: int
    judge_ties: int
    position_flips: int
    agreement: float
    agreement_interval: tuple[float, float]
    kappa: float
    kappa_interval: tuple[float, float]
    decisive_agreement: float
    n_decisive: int
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    confidence: float = 0.95
    ceiling: HumanCeiling | None = None

    @property
    def coverage(self) -> float:
        return self.n_parsed / self.n if self.n else float("nan")

    def to_dict(self) -> dict:
        return json_ready({**asdict(self), "coverage": self.coverage})


def validate_judgements(
    name: str,
    judgements: Sequence[PairJudgement],
    human: Sequence[str],
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    votes: Sequence[dict[str, int] | None] | None = None,
) -> JudgeValidation:
    """Compare judgements with parallel human labels ("A", "B", "tie"), and with the human-human ceiling where
    every pair has its votes."""
    if len(judgements) != len(human):
        raise DataError(f"{len(judgements)} judgements for {len(human)} human labels")
    bad = sorted({h for h in human if h not in WINNERS})
    if bad:
        raise DataError(f"human labels must be A, B or tie; found {bad}")
    judged = [j.winner for j in judgements]
    parsed = [(j, h) for j, h in zip(judged, human, strict=True) if j is not None]
    agree = sum(j == h for j, h in parsed)
    decisive = [(j, h) for j, h in parsed if j != "tie" and h != "tie"]
    confusion = {h: {j: 0 for j in (*WINNERS, "unparseable")} for h in WINNERS}
    for j, h in zip(judged, human, strict=True):
        confusion[h][j or "unparseable"] += 1
    return JudgeValidation(
        judge=name,
        n=len(human),
        n_parsed=len(parsed),
        judge_ties=sum(j == "tie" for j, _ in parsed),
        position_flips=sum(j.position_flip for j in judgements),
        agreement=agree / len(parsed) if parsed else float("nan"),
        agreement_interval=wilson_interval(agree, len(parsed), confidence),
        kappa=cohen_kappa([j for j, _ in parsed], [h for _, h in parsed]),
        kappa_interval=_kappa_interval(parsed, n_boot, confidence, seed),
        decisive_agreement=sum(j == h for j, h in decisive) / len(decisive) if decisive else float("nan"),
        n_decisive=len(decisive),
        confusion={h: counts for h, counts in confusion.items() if any(counts.values())},
        confidence=confidence,
        ceiling=human_ceiling(judged, votes) if votes and all(v is not None for v in votes) else None,
    )


@dataclass
class ValidationReport:
    """Each judge's validation (and the ensemble's when there are several), and the judges' agreement."""

    validations: list[JudgeValidation]
    judge_agreement: dict

    def to_dict(self) -> dict:
        return {"validations": [v.to_dict() for v in self.validations], "judge_agreement": self.judge_agreement}


def validate_judges(
    judges: Sequence,
    pairs: Sequence[LabelledPair],
    swap: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    rule: str = "flip-tie",
) -> ValidationReport:
    """Judge the labelled pairs with each judge (and their vote) and compare every one with the humans."""
    if not pairs:
        raise DataError("no labelled pairs to validate the judge on")
    ensemble = JudgeEnsemble(judges, swap, rule)
    result = ensemble.run([p.prompt for p in pairs], [p.response_a for p in pairs], [p.response_b for p in pairs])
    human, votes = [p.human for p in pairs], [p.votes for p in pairs]
    validations = [validate_judgements(n, js, human, n_boot, seed=seed, votes=votes)
                   for n, js in result.per_judge.items()]
    if len(judges) > 1:
        validations.append(validate_judgements("ensemble", result.judgements, human, n_boot, seed=seed, votes=votes))
    return ValidationReport(validations, result.agreement)


def _kappa_interval(parsed: list[tuple[str, str]], n_boot: int, confidence: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap of Cohen's kappa over pairs; resamples where it is undefined are dropped."""
    if n_boot <= 0 or len(parsed) < 2:
        return float("nan"), float("nan")
    codes = np.array([[WINNERS.index(j), WINNERS.index(h)] for j, h in parsed])
    k = len(WINNERS)
    samples = np.random.default_rng(seed).integers(0, len(codes), size=(n_boot, len(codes)))
    cells = codes[samples, 0] * k + codes[samples, 1]  # (n_boot, n): index of the confusion cell
    table = np.stack([np.bincount(row, minlength=k * k) for row in cells]).reshape(n_boot, k, k) / len(codes)
    p_o = np.trace(table, axis1=1, axis2=2)
    p_e = (table.sum(axis=2) * table.sum(axis=1)).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappas = np.where(p_e < 1.0, (p_o - p_e) / (1.0 - p_e), np.nan)
    kappas = kappas[~np.isnan(kappas)]
    if not len(kappas):
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(kappas, [tail, 1.0 - tail])
    return float(low), float(high)
