"""Export a project's votes as training data `directalign train --data FILE` reads unchanged, or one row per vote.

Each regular item's outcome is the plurality of its votes over "0", "1", "tie", "both_bad" (a shared top is no
majority). Formats:
- dpo: conversational preference rows {prompt, chosen, rejected} (message lists) for the items won by one
  response, with votes_chosen / votes_rejected / votes_tie / votes_both_bad, n_votes, agreement (the share of
  votes for the outcome: `directalign data filter --min-agreement` reads it) and confidence. keep_ties and
  keep_both_bad also write tied, split and both-bad items, the response with more decisive votes as chosen
  (the file's own order when equal) and `outcome` saying what they are.
- kto: unpaired rows {prompt, completion, label}: a won item gives its winner as desirable and the loser as
  undesirable, a both-bad item both responses as undesirable, and (keep_ties) a tie both as desirable, since the
  guidelines define a tie as two good responses.
- votes: one row per vote with item_id / annotator_id / label (the response preferred), the quality commands'
  long-table columns (`directalign data agreement FILE`), plus the verdict as given, the side shown first, the
  rationale, the time and gold results.

confidence is the posterior mean probability that the chosen response is the better one, with each decisive
vote a Bernoulli draw under a uniform prior (Laplace's rule of succession: (votes_chosen + 1) / (votes_chosen +
votes_rejected + 2); 3-0 gives 0.8, 2-1 0.6). 1 - confidence is the pair's label-noise rate, the epsilon of
conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences"), so a user can set label_smoothing from
it or drop pairs under a threshold. ds_confidence is the same probability from Dawid-Skene
(quality.aggregation.dawid_skene over all the project's votes, so annotators that agree with the others weigh
more), renormalised over the two responses; it needs many items per annotator to be better than the vote
counts. For both-bad and tie KTO rows both columns are of that outcome instead.
"""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from directalign.annotate.votes import ItemRow, ProjectVotes, outcome
from directalign.errors import ConfigError
from directalign.quality.aggregation import dawid_skene

FORMATS = ("dpo", "kto", "votes")


@dataclass
class ExportSummary:
    format: str
    rows: int
    items: int
    dropped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"format": self.format, "rows": self.rows, "items": self.items, "dropped": self.dropped}


def export_rows(pv: ProjectVotes, fmt: str, keep_ties: bool = False, keep_both_bad: bool = False,
                min_votes: int = 1) -> tuple[list[dict], ExportSummary]:
    """The rows of one export format (module docstring) and what was left out, by reason."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "votes":
        rows = [_vote_row(pv, v) for v in pv.votes]
        return rows, ExportSummary(fmt, len(rows), len({v.item_id for v in pv.votes}))
    per_item = pv.counts()
    posterior = _posteriors(pv)
    rows, dropped, items = [], Counter(), 0
    for item in pv.items:
        if item.gold_answer is not None:
            continue
        votes = per_item.get(item.id, Counter())
        result = outcome(votes)
        reason = _drop_reason(votes, result, fmt, keep_ties, keep_both_bad, min_votes)
        if reason:
            dropped[reason] += 1
            continue
        new = (_dpo_row if fmt == "dpo" else _kto_rows)(item, votes, result, posterior.get(item.id))
        rows.extend(new)
        items += 1
    return rows, ExportSummary(fmt, len(rows), items, dict(dropped))


def write_jsonl(rows: list[dict], path: str | Path) -> Path:
    """Write rows as JSON lines (.jsonl, or .jsonl.gz compressed) through a temporary file, then rename."""
    path = Path(path)
    if not path.name.endswith((".jsonl", ".jsonl.gz")):
        raise ConfigError(f"--output {path}: the export is JSON lines; name it .jsonl or .jsonl.gz")
    if not path.parent.is_dir():
        raise ConfigError(f"--output {path}: folder {path.parent} does not exist")
    partial = path.with_name(f".{path.name}.partial")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(partial, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    os.replace(partial, path)
    return path


def _drop_reason(votes: Counter, result: str | None, fmt: str, keep_ties: bool, keep_both_bad: bool,
                 min_votes: int) -> str | None:
    n = sum(votes.values())
    if n == 0:
        return "no votes"
    if n < min_votes:
        return f"fewer than {min_votes} votes"
    if result in ("0", "1"):
        return None
    if result == "both_bad":
        return None if keep_both_bad or fmt == "kto" else "both bad"
    if result == "tie":
        return None if keep_ties else "tie"
    return None if keep_ties and fmt == "dpo" else "no majority"


def _posteriors(pv: ProjectVotes) -> dict[int, dict[str, float]]:
    table = pv.rating_table()
    if table is None:
        return {}
    ds = dawid_skene(table)
    return {item: dict(zip(map(str, ds.categories), map(float, row), strict=True))
            for item, row in zip(table.items, ds.posteriors, strict=True)}


def _confidence(votes: Counter, posterior: dict[str, float] | None, chosen: int) -> dict[str, float]:
    """Laplace's rule on the decisive votes, and the Dawid-Skene posterior renormalised over the two responses."""
    laplace = (votes[str(chosen)] + 1) / (votes[str(chosen)] + votes[str(1 - chosen)] + 2)
    p_chosen, p_rejected = (posterior or {}).get(str(chosen), 0.0), (posterior or {}).get(str(1 - chosen), 0.0)
    total = p_chosen + p_rejected
    return {"confidence": laplace, "ds_confidence": float(p_chosen / total) if total > 1e-12 else 0.5}


def _outcome_confidence(votes: Counter, posterior: dict[str, float] | None, result: str) -> dict[str, float]:
    n = sum(votes.values())
    return {"confidence": (votes[result] + 1) / (n + 2), "ds_confidence": (posterior or {}).get(result, 0.5)}


def _responses(item: ItemRow) -> list[list]:
    return [item.response_0, item.response_1]


def _winner(votes: Counter, result: str | None) -> int:
    if result in ("0", "1"):
        return int(result)
    return 1 if votes["1"] > votes["0"] else 0


def _counts(votes: Counter, chosen: int) -> dict:
    n = sum(votes.values())
    result = outcome(votes)
    return {
        "votes_chosen": votes[str(chosen)],
        "votes_rejected": votes[str(1 - chosen)],
        "votes_tie": votes["tie"],
        "votes_both_bad": votes["both_bad"],
        "n_votes": n,
        "agreement": (votes[result] / n) if result else float(np.max(list(votes.values())) / n),
    }


def _dpo_row(item: ItemRow, votes: Counter, result: str | None, posterior) -> list[dict]:
    chosen = _winner(votes, result)
    responses = _responses(item)
    return [{
        "prompt": item.prompt,
        "chosen": responses[chosen],
        "rejected": responses[1 - chosen],
        "outcome": "chosen" if result in ("0", "1") else (result or "no_majority"),
        **_counts(votes, chosen),
        **_confidence(votes, posterior, chosen),
        "item_id": item.id,
        "source": item.source,
    }]


def _kto_rows(item: ItemRow, votes: Counter, result: str | None, posterior) -> list[dict]:
    responses = _responses(item)
    n = sum(votes.values())
    common = {"outcome": result, "n_votes": n, "agreement": votes[result] / n, "item_id": item.id,
              "source": item.source}
    if result in ("0", "1"):
        winner = int(result)
        confidence = _confidence(votes, posterior, winner)
        return [{"prompt": item.prompt, "completion": responses[index], "label": index == winner, **common,
                 **confidence} for index in (winner, 1 - winner)]
    confidence = _outcome_confidence(votes, posterior, result)
    return [{"prompt": item.prompt, "completion": response, "label": result == "tie", **common, **confidence}
            for response in responses]


def _vote_row(pv: ProjectVotes, vote) -> dict:
    return {
        "item_id": vote.item_id,
        "annotator_id": vote.annotator,
        "label": vote.preferred,
        "verdict": vote.verdict,
        "left": f"response_{vote.left}",
        "rationale": vote.rationale,
        "submitted_at": vote.submitted_at,
        "seconds": vote.seconds,
        "is_gold": vote.is_gold,
        "gold_correct": vote.gold_correct,
        "project": pv.project.name,
    }
