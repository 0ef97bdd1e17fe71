"""Filters that drop preference pairs not worth training on; each returns (kept records, FilterReport).

Filters on a per-row value (rating margin, annotator agreement, tie flag) take that value as a list parallel
to the records and drop whole records; None means unknown and keeps the record. Filters on the texts look at
every pair of a record and drop the failing pairs; a record left with no pair is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from directalign.data.types import PreferenceRecord
from directalign.errors import DataError
from directalign.quality.similarity import message_text, response_similarity

MAX_EXAMPLES = 5


@dataclass
class FilterReport:
    """What one filter did: pairs removed and kept, and a few removed examples ("place: reason")."""

    name: str
    removed: int
    kept: int
    examples: list[str] = field(default_factory=list)


def drop_low_margin(
    records: Sequence[PreferenceRecord], margins: Sequence[float | None], min_margin: float
) -> tuple[list[PreferenceRecord], FilterReport]:
    """Drop records whose rating margin (score of chosen - score of rejected) is below min_margin."""
    return _filter_records(
        records,
        margins,
        lambda m: m >= min_margin,
        lambda m: f"margin {m:g} < {min_margin:g}",
        f"margin >= {min_margin:g}",
    )


def drop_low_agreement(
    records: Sequence[PreferenceRecord], agreement: Sequence[float | None], min_agreement: float
) -> tuple[list[PreferenceRecord], FilterReport]:
    """Drop records whose annotator agreement (share agreeing with the label, 0..1) is below min_agreement."""
    return _filter_records(
        records,
        agreement,
        lambda a: a >= min_agreement,
        lambda a: f"agreement {a:.2f} < {min_agreement:.2f}",
        f"agreement >= {min_agreement:.2f}",
    )


def drop_ties(
    records: Sequence[PreferenceRecord], ties: Sequence[bool | None]
) -> tuple[list[PreferenceRecord], FilterReport]:
    """Drop records labelled as ties (equal scores, a "tie" verdict)."""
    return _filter_records(records, ties, lambda tie: not tie, lambda _: "labelled a tie", "no ties")


def drop_near_identical(
    records: Sequence[PreferenceRecord], threshold: float = 0.9
) -> tuple[list[PreferenceRecord], FilterReport]:
    """Drop pairs whose two responses have word-level similarity >= threshold (see response_similarity)."""

    def reason(chosen: str, rejected: str) -> str | None:
        similarity = response_similarity(chosen, rejected)
        return f"similarity {similarity:.2f} >= {threshold:.2f}" if similarity >= threshold else None

    return _filter_pairs(records, reason, f"response similarity < {threshold:.2f}")


def drop_extreme_length_ratio(
    records: Sequence[PreferenceRecord], max_ratio: float = 3.0
) -> tuple[list[PreferenceRecord], FilterReport]:
    """Drop pairs where one response is more than max_ratio times longer (in characters) than the other.

    ratio = max(len) / max(min(len), 1); such pairs mostly teach length rather than quality.
    """
    if max_ratio < 1.0:
        raise DataError(f"max_ratio must be at least 1, got {max_ratio}")

    def reason(chosen: str, rejected: str) -> str | None:
        ratio = length_ratio(chosen, rejected)
        return f"length ratio {ratio:.1f} > {max_ratio:g}" if ratio > max_ratio else None

    return _filter_pairs(records, reason, f"length ratio <= {max_ratio:g}")


def length_ratio(a: str, b: str) -> float:
    """Longer length / shorter length in characters (the shorter counted as at least 1)."""
    return max(len(a), len(b)) / max(min(len(a), len(b)), 1)


def _filter_records(
    records: Sequence[PreferenceRecord],
    values: Sequence,
    keep: Callable,
    reason: Callable,
    name: str,
) -> tuple[list[PreferenceRecord], FilterReport]:
    if len(values) != len(records):
        raise DataError(f"filter {name!r}: {len(values)} values for {len(records)} records")
    kept, report = [], FilterReport(name, 0, 0)
    for i, (record, value) in enumerate(zip(records, values, strict=True)):
        if value is None or keep(value):
            kept.append(record)
            report.kept += len(record.pairs)
            continue
        report.removed += len(record.pairs)
        _example(report, record, i, reason(value))
    return kept, report


def _filter_pairs(
    records: Sequence[PreferenceRecord], reason: Callable[[str, str], str | None], name: str
) -> tuple[list[PreferenceRecord], FilterReport]:
    kept, report = [], FilterReport(name, 0, 0)
    for i, record in enumerate(records):
        pairs = []
        for pair in record.pairs:
            why = reason(message_text(record.responses[pair[0]]), message_text(record.responses[pair[1]]))
            if why is None:
                pairs.append(pair)
            else:
                report.removed += 1
                _example(report, record, i, why)
        report.kept += len(pairs)
        if pairs:
            kept.append(record if len(pairs) == len(record.pairs) else replace(record, pairs=pairs))
    return kept, report


def _example(report: FilterReport, record: PreferenceRecord, index: int, reason: str) -> None:
    if len(report.examples) < MAX_EXAMPLES:
        report.examples.append(f"{record.source or f'record {index}'}: {reason}")
