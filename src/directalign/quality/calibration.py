"""Gold (known-answer) items: each annotator's accuracy on them, its drift over time, and who to flag.

An annotator's gold answers are put in time order (an order column, else the order of the rows) and cut into
consecutive windows; the latest window is its most recent `window` gold answers. An annotator is flagged when
its overall accuracy, or its accuracy in the latest window, is below the threshold.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from directalign.errors import DataError
from directalign.quality.stats import wilson_interval
from directalign.quality.table import coerce_label, numbered_rows


@dataclass
class AnnotatorCalibration:
    """One annotator's record on gold items.

    accuracy: n_correct / n_gold, with a Wilson interval (ci_low, ci_high).
    window_accuracy: accuracy in consecutive windows of its gold answers, oldest first (the last may be
    shorter).
    latest_accuracy: accuracy over its most recent `window` gold answers; drift = latest - first window.
    flagged: below the threshold overall or in the latest window; reasons say which (or why it could not be).
    """

    annotator: Hashable
    n_gold: int
    n_correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    window_accuracy: list[float]
    latest_accuracy: float
    drift: float
    flagged: bool
    reasons: list[str] = field(default_factory=list)


def gold_labels(data: Any, item_col: str = "item_id", label_col: str = "label", source: str = "gold") -> dict:
    """{item_id: gold label} from a table of gold answers; two different answers for an item: DataError."""
    gold: dict[Hashable, Any] = {}
    for number, row in numbered_rows(data):
        for col in (item_col, label_col):
            if col not in row:
                raise DataError(f"{source}:{number}: missing field {col!r}")
        label = coerce_label(row[label_col])
        if label is None:
            raise DataError(f"{source}:{number}: field {label_col!r} is empty")
        item = row[item_col]
        if item in gold and gold[item] != label:
            raise DataError(
                f"{source}:{number}: field {label_col!r}: item {item!r} has two gold labels, "
                f"{gold[item]!r} and {label!r}"
            )
        gold[item] = label
    return gold


def gold_calibration(
    data: Any,
    gold: Mapping[Hashable, Any],
    item_col: str = "item_id",
    annotator_col: str = "annotator_id",
    label_col: str = "label",
    order_col: str | None = None,
    window: int = 20,
    threshold: float = 0.7,
    min_items: int = 5,
    source: str = "table",
) -> list[AnnotatorCalibration]:
    """Accuracy, windowed accuracy and flags of every annotator who answered at least one gold item.

    Annotations of items not in `gold` are ignored; missing labels count as not answered. Annotators with
    fewer than `min_items` gold answers are reported but not flagged.
    """
    if window < 1:
        raise DataError(f"window must be at least 1, got {window}")
    answers: dict[Hashable, list[tuple[Any, bool]]] = {}
    gold = {item: coerce_label(label) for item, label in gold.items()}
    for number, row in numbered_rows(data):
        for col in (item_col, annotator_col, label_col) + ((order_col,) if order_col else ()):
            if col not in row:
                raise DataError(f"{source}:{number}: missing field {col!r}")
        label = coerce_label(row[label_col])
        if row[item_col] not in gold or label is None:
            continue
        order = row[order_col] if order_col else number
        answers.setdefault(row[annotator_col], []).append((order, label == gold[row[item_col]]))
    return [
        _calibrate(annotator, _in_order(rows, order_col, source), window, threshold, min_items)
        for annotator, rows in answers.items()
    ]


def _in_order(rows: list[tuple[Any, bool]], order_col: str | None, source: str) -> list[bool]:
    try:
        return [correct for _, correct in sorted(rows, key=lambda r: r[0])]
    except TypeError as err:
        raise DataError(f"{source}: field {order_col!r} mixes values that cannot be ordered ({err})") from err


def _calibrate(
    annotator: Hashable, correct: list[bool], window: int, threshold: float, min_items: int
) -> AnnotatorCalibration:
    n, k = len(correct), sum(correct)
    low, high = wilson_interval(k, n)
    windows = [sum(correct[s : s + window]) / len(correct[s : s + window]) for s in range(0, n, window)]
    latest = sum(correct[-window:]) / len(correct[-window:])
    reasons = []
    if n < min_items:
        reasons.append(f"only {n} gold answers (< {min_items}); not judged")
    else:
        if k / n < threshold:
            reasons.append(f"accuracy {k / n:.2f} < {threshold:.2f}")
        if n > window and latest < threshold:
            reasons.append(f"latest {window} gold answers {latest:.2f} < {threshold:.2f}")
    flagged = n >= min_items and bool(reasons)
    return AnnotatorCalibration(
        annotator, n, k, k / n, low, high, windows, latest, latest - windows[0], flagged, reasons
    )
