"""Plain-text tables of the quality reports, and the rows written by `directalign data filter/aggregate`."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from directalign.data.types import PreferenceRecord
from directalign.quality.aggregation import AggregatedLabel
from directalign.quality.agreement import AgreementReport
from directalign.quality.calibration import AnnotatorCalibration
from directalign.quality.diagnostics import BiasEstimate, DiagnosticsReport
from directalign.quality.filters import FilterReport

MAX_LISTED = 5


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned with 3 decimals, NaN as '-'."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(isinstance(row[i], int | float) for row in rows) for i in range(len(headers))]
    lines = ["  ".join(h.rjust(w) if n else h.ljust(w) for h, w, n in zip(headers, widths, numeric, strict=True))]
    for row in cells:
        lines.append("  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(row, widths, numeric, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


def agreement_text(path: str, report: AgreementReport) -> str:
    """Overall statistics with their CIs, pairwise Cohen's kappa, then one line per annotator."""
    level = f"{report.confidence:.0%} CI"
    names = {"percent_agreement": "percent agreement", "fleiss_kappa": "Fleiss' kappa"}
    values = {"percent_agreement": report.percent_agreement, "fleiss_kappa": report.fleiss_kappa}
    for name, value in report.alpha.items():
        names[f"alpha_{name}"], values[f"alpha_{name}"] = f"Krippendorff's alpha ({name})", value
    overall = [[names[k], v, *report.intervals.get(k, (math.nan, math.nan))] for k, v in values.items()]
    categories = ", ".join(map(str, report.categories))
    parts = [
        f"{path}: {report.n_items} items, {report.n_annotators} annotators, {report.n_labels} labels ({categories})",
        table(["statistic", "value", f"{level} low", "high"], overall),
        "",
        table(["annotator pair", "Cohen's kappa"], [[k, v] for k, v in report.pairwise_kappa.items()]),
        "",
        table(
            ["annotator", "items", "agree w/ others", "agree w/ majority", "kappa w/ majority"],
            [
                [
                    str(a.annotator),
                    a.n_items,
                    a.agreement_with_others,
                    a.agreement_with_majority,
                    a.kappa_with_majority,
                ]
                for a in report.per_annotator
            ],
        ),
    ]
    return "\n".join(parts)


def diagnostics_text(path: str, report: DiagnosticsReport, records: Sequence[PreferenceRecord]) -> str:
    """Biases, duplicate groups (first few by place), near-identical pairs and prompt diversity."""
    biases = [b for b in (report.length_bias_chars, report.length_bias_words, report.position_bias) if b]
    p = report.prompts
    lines = [
        f"{path}: {report.n_records} records, {report.n_pairs} pairs",
        table(
            ["bias (0.5 = none)", "rate", "95% CI low", "high", "pairs", "undecided"],
            [_bias(b) for b in biases],
        ),
        "",
        _groups("exact duplicates", report.exact_duplicates, records),
        _groups("contradictions (same pair, opposite preference)", report.contradictions, records),
        _groups("near duplicates", report.near_duplicates, records),
        f"near-identical responses: {len(report.near_identical_pairs)} pairs",
        *(f"  {_place(records, r)} (similarity {s:.2f})" for r, _, s in report.near_identical_pairs[:MAX_LISTED]),
        "",
        f"prompts: {p.n_prompts} ({p.unique_prompts} unique), distinct-1 {_cell(p.distinct_1)}, "
        f"distinct-2 {_cell(p.distinct_2)}, first-word entropy {_cell(p.first_word_entropy)}",
        f"prompt words: mean {p.length_mean:.1f}, sd {p.length_std:.1f}, p10 {p.length_p10:g}, "
        f"median {p.length_median:g}, p90 {p.length_p90:g}",
        "top first words: " + ", ".join(f"{w} {c}" for w, c in p.top_first_words),
        "top keywords: " + ", ".join(f"{w} {c}" for w, c in p.top_keywords),
    ]
    return "\n".join(lines)


def filter_text(path: str, out: str, reports: Sequence[FilterReport], kept: int) -> str:
    """One line per filter with its removed/kept pairs and a few examples."""
    lines = [f"{path}: filters in the order applied"]
    lines.append(table(["filter (kept when)", "removed", "kept"], [[r.name, r.removed, r.kept] for r in reports]))
    for report in reports:
        lines += [f"  {report.name}: {example}" for example in report.examples[:3]]
    lines.append(f"wrote {kept} pairs to {out}")
    return "\n".join(lines)


def aggregate_text(
    path: str,
    out: str,
    method: str,
    labels: Sequence[AggregatedLabel],
    reliability: dict[Hashable, float] | None,
) -> str:
    """Counts of aggregated labels, unresolved ties, and (Dawid-Skene) annotator reliability."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[str(label.label)] = counts.get(str(label.label), 0) + 1
    mean_agreement = sum(label.agreement for label in labels) / max(len(labels), 1)
    lines = [f"{path}: {len(labels)} items aggregated by {method}; mean agreement {mean_agreement:.3f}"]
    lines.append(table(["label", "items"], sorted(counts.items())))
    if reliability:
        lines += [
            "",
            table(
                ["annotator", "reliability (expected accuracy)"],
                [[str(k), v] for k, v in reliability.items()],
            ),
        ]
    lines.append(f"wrote {len(labels)} rows to {out}")
    return "\n".join(lines)


def calibration_text(
    path: str, gold: str, results: Sequence[AnnotatorCalibration], threshold: float, window: int
) -> str:
    """One line per annotator: gold answers, accuracy with CI, latest window, drift, flag."""
    rows = [
        [
            str(r.annotator),
            r.n_gold,
            r.accuracy,
            r.ci_low,
            r.ci_high,
            r.latest_accuracy,
            r.drift,
            "FLAG: " + "; ".join(r.reasons) if r.flagged else "; ".join(r.reasons),
        ]
        for r in results
    ]
    flagged = sum(r.flagged for r in results)
    header = f"{path} against {gold}: {len(results)} annotators, {flagged} flagged (threshold {threshold:g})"
    headers = ["annotator", "gold", "accuracy", "95% CI low", "high", f"last {window}", "drift", "note"]
    return header + "\n" + table(headers, rows)


def pair_rows(record: PreferenceRecord) -> list[dict[str, Any]]:
    """One {prompt, chosen, rejected} row of message lists (TRL's conversational form) per pair."""
    return [
        {"prompt": record.prompt, "chosen": record.responses[i], "rejected": record.responses[j]}
        for i, j in record.pairs
    ]


def ranked_row(record: PreferenceRecord) -> dict[str, Any]:
    """One row per prompt: all its responses and the (better, worse) index pairs (the loader's ranked schema)."""
    return {"prompt": record.prompt, "responses": record.responses, "pairs": [list(p) for p in record.pairs]}


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """CSV with the union of the rows' keys as header; lists and dicts are written as JSON."""
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in row.items()})


def _bias(b: BiasEstimate) -> list[Any]:
    return [b.name, b.rate, b.ci_low, b.ci_high, b.total, b.skipped]


def _groups(name: str, groups: list[list[int]], records: Sequence[PreferenceRecord]) -> str:
    rows = sum(len(g) for g in groups)
    line = f"{name}: {len(groups)} groups, {rows} rows"
    for group in groups[:MAX_LISTED]:
        more = " ..." if len(group) > 4 else ""
        line += "\n  " + ", ".join(_place(records, i) for i in group[:4]) + more
    return line


def _place(records: Sequence[PreferenceRecord], index: int) -> str:
    """'row N' from a record's "file:N" source (the file is named in the header), else the source."""
    source = records[index].source
    number = source.rsplit(":", 1)[-1]
    return f"row {number}" if number.isdigit() else (source or f"record {index}")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.3f}"
    return str(value)
