"""A project's live status: counts, agreement with intervals, annotator quality, drift, win rate, judge agreement.

Everything is computed from the stored votes with `directalign.quality` (agreement statistics and their
bootstrap intervals, Dawid-Skene, gold calibration, Wilson intervals) and `directalign.evaluation.winrate`.
Labels are responses, never sides: "0", "1", "tie", "both_bad" (see models.py).
- Agreement (regular items with >= 2 votes): percent agreement, Fleiss' kappa, Krippendorff's alpha (nominal)
  and the mean of the pairwise Cohen's kappas, each with a percentile bootstrap interval over items.
- Per annotator: votes, time per item, throughput, agreement with the others, Dawid-Skene reliability
  (expected accuracy), gold accuracy with its Wilson interval and drift (quality.calibration, windows of
  `drift_window` gold answers), the share of decisive votes for the left side (sides are random, so 0.5 is
  unbiased; flagged when its Wilson interval excludes 0.5) and the qualification result.
- Human evaluation: the win rate of response 0 (the evaluated model) with ties and both-bad counted half; each
  prompt's score is the mean of its votes and the interval is a percentile bootstrap over prompts (votes on one
  prompt are not independent).
- A judge's verdicts on the same items against the humans' majority (quality of the judge), with and without
  ties (judges.validation).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime

import numpy as np

from directalign.annotate.db import Database
from directalign.annotate.models import Project
from directalign.annotate.votes import ProjectVotes, Vote, load_votes, outcome
from directalign.evaluation.winrate import bootstrap_interval
from directalign.judges.pairwise import PairJudgement
from directalign.judges.validation import validate_judgements
from directalign.quality.aggregation import dawid_skene
from directalign.quality.agreement import agreement_report, bootstrap_ci, pairwise_kappa
from directalign.quality.calibration import gold_calibration
from directalign.quality.stats import json_ready, wilson_interval

SCORE = {"0": 1.0, "1": 0.0, "tie": 0.5, "both_bad": 0.5}
HUMAN_WINNER = {"0": "A", "1": "B", "tie": "tie", "both_bad": "tie", None: "tie"}
MIN_BIAS_VOTES = 20


def project_status(db: Database, project: Project, n_boot: int = 200, seed: int = 0, drift_window: int = 10,
                   gold_threshold: float = 0.7) -> dict:
    """The whole status of one project as a JSON-ready dict (NaN becomes None)."""
    pv = load_votes(db, project)
    status = {
        "project": {"name": project.name, "kind": project.kind, "overlap": project.overlap, "source": project.source,
                    "created": _iso(project.created_at), "gold_rate": project.gold_rate,
                    "qualification_size": project.qualification_size},
        "counts": counts(pv),
        "agreement": agreement(pv, n_boot, seed),
        "annotators": annotators(pv, drift_window, gold_threshold),
    }
    if project.kind == "pairwise":
        status["file_agreement"] = file_agreement(pv)
    else:
        status["win_rate"] = human_win_rate(pv, seed=seed)
    if any(item.judge_winner is not None for item in pv.items):
        status["judge"] = judge_agreement(pv, seed=seed)
    status["warnings"] = warnings(status)
    return json_ready(status)


def counts(pv: ProjectVotes) -> dict:
    regular_items = [i for i in pv.items if i.gold_answer is None]
    per_item = pv.counts()
    done = sum(1 for i in regular_items if sum(per_item.get(i.id, Counter()).values()) >= pv.project.overlap)
    target = len(regular_items) * pv.project.overlap
    return {
        "items": len(regular_items),
        "gold_items": len(pv.items) - len(regular_items),
        "votes": len(pv.regular),
        "gold_votes": len(pv.gold),
        "target_votes": target,
        "progress": len(pv.regular) / target if target else 0.0,
        "complete_items": done,
        "started_items": len(per_item),
        "live_leases": pv.live_leases,
        "annotators": len({v.annotator for v in pv.votes}),
        "outcomes": dict(Counter(v.preferred for v in pv.regular)),
        "verdicts": dict(Counter(v.verdict for v in pv.regular)),
        "last_vote": _iso(pv.votes[-1].submitted_at) if pv.votes else None,
    }


def agreement(pv: ProjectVotes, n_boot: int, seed: int) -> dict:
    table = pv.rating_table()
    if table is None or not (table.counts().sum(axis=1) >= 2).any():
        return {"pairable_items": 0}
    report = agreement_report(table, n_boot=n_boot, seed=seed)
    cohen = _mean_pairwise_kappa(table)
    cohen_ci = bootstrap_ci(table, _mean_pairwise_kappa, n_boot, seed=seed) if n_boot else (math.nan, math.nan)
    stats = {
        "percent_agreement": (report.percent_agreement, report.intervals.get("percent_agreement")),
        "fleiss_kappa": (report.fleiss_kappa, report.intervals.get("fleiss_kappa")),
        "krippendorff_alpha": (report.alpha["nominal"], report.intervals.get("alpha_nominal")),
        "cohen_kappa_mean": (cohen, cohen_ci),
    }
    return {
        "pairable_items": int((table.counts().sum(axis=1) >= 2).sum()),
        "confidence": report.confidence,
        "n_boot": n_boot,
        **{name: {"value": value, "ci": list(ci) if ci else None} for name, (value, ci) in stats.items()},
        "pairwise_cohen_kappa": report.pairwise_kappa,
    }


def _mean_pairwise_kappa(table) -> float:
    values = [k for k in pairwise_kappa(table).values() if not math.isnan(k)]
    return float(np.mean(values)) if values else math.nan


def annotators(pv: ProjectVotes, drift_window: int, gold_threshold: float) -> list[dict]:
    by_annotator: dict[str, list[Vote]] = defaultdict(list)
    for vote in pv.votes:
        by_annotator[vote.annotator].append(vote)
    table = pv.rating_table()
    reliability = dawid_skene(table).reliability if table is not None else {}
    agreement_of = agreement_report(table, n_boot=0).per_annotator if table is not None else []
    agreement_of = {a.annotator: a for a in agreement_of}
    calibration = {c.annotator: c for c in gold_calibration(
        [{"item_id": v.item_id, "annotator_id": v.annotator, "label": "right" if v.gold_correct else "wrong"}
         for v in pv.gold if v.gold_correct is not None],
        {i.id: "right" for i in pv.items if i.gold_answer is not None}, window=drift_window, threshold=gold_threshold,
    )}
    return [_annotator(name, votes, pv.project, reliability.get(name), agreement_of.get(name), calibration.get(name))
            for name, votes in sorted(by_annotator.items())]


def _annotator(name, votes, project: Project, reliability, agreed, calibration) -> dict:
    regular = [v for v in votes if not v.is_gold]
    decisive = [v for v in votes if v.verdict in ("a", "b")]
    left = sum(v.verdict == "a" for v in decisive)
    left_ci = wilson_interval(left, len(decisive))
    span_hours = (votes[-1].submitted_at - votes[0].submitted_at + votes[0].seconds) / 3600 if votes else 0
    row = {
        "annotator": name,
        "votes": len(regular),
        "gold_votes": len(votes) - len(regular),
        "median_seconds": statistics.median(v.seconds for v in votes),
        "votes_per_hour": len(votes) / span_hours if span_hours > 0 else None,
        "left_share": left / len(decisive) if decisive else None,
        "left_ci": list(left_ci),
        "left_bias": len(decisive) >= MIN_BIAS_VOTES and not left_ci[0] <= 0.5 <= left_ci[1],
        "dawid_skene_reliability": reliability,
        "agreement_with_others": agreed.agreement_with_others if agreed else None,
        "kappa_with_majority": agreed.kappa_with_majority if agreed else None,
        "qualification": _qualification(votes, project),
    }
    if calibration is not None:
        row.update(gold_accuracy=calibration.accuracy, gold_ci=[calibration.ci_low, calibration.ci_high],
                   gold_windows=calibration.window_accuracy, gold_latest=calibration.latest_accuracy,
                   gold_drift=calibration.drift, gold_flagged=calibration.flagged, gold_reasons=calibration.reasons)
    return row


def _qualification(votes: list[Vote], project: Project) -> str | None:
    if project.qualification_size == 0:
        return None
    scored = [v.gold_correct for v in votes if v.is_gold and v.gold_correct is not None][: project.qualification_size]
    if len(scored) < project.qualification_size:
        return f"in progress ({len(scored)}/{project.qualification_size})"
    accuracy = sum(scored) / len(scored)
    return f"{'passed' if accuracy >= project.qualification_pass else 'failed'} ({accuracy:.0%})"


def file_agreement(pv: ProjectVotes) -> dict:
    """How often the annotators side with the source file's own label (response 0 = the file's chosen)."""
    decisive = [v for v in pv.regular if v.preferred in ("0", "1")]
    agree = sum(v.preferred == "0" for v in decisive)
    majorities = [outcome(c) for c in pv.counts().values()]
    majority_decisive = [m for m in majorities if m in ("0", "1")]
    return {
        "decisive_votes": len(decisive),
        "votes_agree": agree / len(decisive) if decisive else None,
        "votes_ci": list(wilson_interval(agree, len(decisive))),
        "majority_items": len(majority_decisive),
        "majority_agree": (sum(m == "0" for m in majority_decisive) / len(majority_decisive)
                           if majority_decisive else None),
    }


def human_win_rate(pv: ProjectVotes, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Win rate of response 0 (the model) against response 1 (the reference) over prompts (module docstring)."""
    per_item: dict[int, list[float]] = defaultdict(list)
    for vote in pv.regular:
        per_item[vote.item_id].append(SCORE[vote.preferred])
    scores = np.array([np.mean(s) for s in per_item.values()])
    tally = Counter(v.preferred for v in pv.regular)
    result = {"prompts": len(scores), "votes": len(pv.regular), "model_wins": tally["0"],
              "reference_wins": tally["1"], "ties": tally["tie"], "both_bad": tally["both_bad"],
              "confidence": confidence, "method": "bootstrap over prompts"}
    if len(scores) == 0:
        return {**result, "win_rate": None, "ci": [None, None]}
    low, high = bootstrap_interval(scores, lambda idx: scores[idx].mean(), n_boot, seed, confidence)
    return {**result, "win_rate": float(scores.mean()), "ci": [low, high]}


def judge_agreement(pv: ProjectVotes, n_boot: int = 1000, seed: int = 0) -> dict:
    """The judge's verdict against the humans' plurality on each judged item with votes (no plurality = tie)."""
    per_item = pv.counts()
    judged = [i for i in pv.items if i.judge_winner is not None and i.id in per_item and i.gold_answer is None]
    result = {"judge": judged[0].judge_name if judged else None, "items": len(judged)}
    if not judged:
        return result
    judgements = [PairJudgement(HUMAN_WINNER.get(i.judge_winner), i.judge_prob, position_flip=bool(i.judge_flip))
                  for i in judged]
    human = [HUMAN_WINNER[outcome(per_item[i.id])] for i in judged]
    validation = validate_judgements(judged[0].judge_name or "judge", judgements, human, n_boot=n_boot, seed=seed)
    return {**result, **validation.to_dict()}


def warnings(status: dict) -> list[str]:
    found = []
    for row in status["annotators"]:
        name = row["annotator"]
        if row.get("gold_flagged"):
            found.append(f"{name}: gold accuracy low or falling ({'; '.join(row['gold_reasons'])})")
        if row["left_bias"]:
            found.append(f"{name}: picks the left side in {row['left_share']:.0%} of decisive votes "
                         f"(95% CI {row['left_ci'][0]:.2f}-{row['left_ci'][1]:.2f} excludes 0.5)")
        if row["qualification"] and row["qualification"].startswith("failed"):
            found.append(f"{name}: qualification {row['qualification']}")
    kappa = status["agreement"].get("fleiss_kappa", {}).get("value")
    if kappa is not None and not math.isnan(kappa) and kappa < 0.2 and status["agreement"]["pairable_items"] >= 20:
        found.append(f"Fleiss' kappa {kappa:.2f}: slight agreement; check the guidelines and the gold items")
    return found


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
