"""Annotation tables: one row per (item, annotator, label), turned into an items x annotators matrix.

Every agreement, calibration and aggregation statistic in this package starts from a `RatingTable`. The
input is a long table (a list of dicts, a pandas DataFrame, or a file read with `read_rows`); a wide table,
one column per annotator, becomes long with `wide_to_long`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from directalign.errors import DataError

Row = Mapping[str, Any]


@dataclass
class RatingTable:
    """Labels given by several annotators to several items.

    items, annotators: ids in first-seen order.
    categories: the distinct labels, sorted (numerically when all are numbers, else by their text).
    codes: int array (n_items, n_annotators); codes[i, a] indexes categories, -1 where a did not label i.
    """

    items: list[Hashable]
    annotators: list[Hashable]
    categories: list[Any]
    codes: np.ndarray

    @property
    def numeric(self) -> bool:
        """True when every category is a number, so ordinal, interval and ratio statistics apply."""
        return all(_is_number(c) for c in self.categories)

    def counts(self) -> np.ndarray:
        """(n_items, n_categories): how many annotators gave each category to each item (n_ic)."""
        counts = np.zeros((len(self.items), len(self.categories)), dtype=np.int64)
        rows, cols = np.nonzero(self.codes >= 0)
        np.add.at(counts, (rows, self.codes[rows, cols]), 1)
        return counts

    def values(self) -> np.ndarray:
        """The categories as floats; DataError when a category is not a number."""
        if not self.numeric:
            bad = next(c for c in self.categories if not _is_number(c))
            raise DataError(f"label {bad!r} is not a number; ordinal/interval statistics need numbers")
        return np.asarray(self.categories, dtype=float)

    def subset(self, item_indices: Sequence[int] | np.ndarray) -> RatingTable:
        """The table restricted to (or resampled as) the given item positions."""
        idx = np.asarray(item_indices, dtype=np.int64)
        return RatingTable([self.items[i] for i in idx], self.annotators, self.categories, self.codes[idx])

    def labels_of(self, annotator: Hashable) -> dict[Hashable, Any]:
        """{item_id: label} for one annotator."""
        col = self.codes[:, self.annotators.index(annotator)]
        return {self.items[i]: self.categories[c] for i, c in enumerate(col) if c >= 0}


def rating_table(
    data: Any,
    item_col: str = "item_id",
    annotator_col: str = "annotator_id",
    label_col: str = "label",
    source: str = "table",
) -> RatingTable:
    """Build a RatingTable from a long table (list of dicts, numbered rows from `read_rows`, or a DataFrame).

    A missing label (None, NaN, empty text) means the annotator did not label the item and the row is skipped;
    a second label for the same (item, annotator) is a DataError naming the row. Numeric text ("4") becomes a
    number, so CSV and JSON files give the same categories.
    """
    item_index: dict[Hashable, int] = {}
    annotator_index: dict[Hashable, int] = {}
    cells: dict[tuple[int, int], Any] = {}
    for number, row in numbered_rows(data):
        item = _cell(row, item_col, source, number)
        annotator = _cell(row, annotator_col, source, number)
        label = _label(row, label_col, source, number)
        if label is None:
            continue
        i = item_index.setdefault(item, len(item_index))
        key = (i, annotator_index.setdefault(annotator, len(annotator_index)))
        if key in cells:
            raise DataError(f"{source}:{number}: field {annotator_col!r}: {annotator!r} labels item {item!r} twice")
        cells[key] = label
    if not cells:
        raise DataError(f"{source}: no labels found in column {label_col!r}")
    categories = sorted(set(cells.values()), key=_category_key(cells.values()))
    category_index = {c: k for k, c in enumerate(categories)}
    codes = np.full((len(item_index), len(annotator_index)), -1, dtype=np.int64)
    for (i, a), label in cells.items():
        codes[i, a] = category_index[label]
    return RatingTable(list(item_index), list(annotator_index), categories, codes)


def wide_to_long(
    data: Any, item_col: str, label_cols: Sequence[str], source: str = "table"
) -> list[tuple[int, dict[str, Any]]]:
    """Numbered long rows from a wide table: each column of label_cols is one annotator ("annotator1", ...).

    Row numbers stay those of the wide table, so errors still name the file's row.
    """
    long = []
    for number, row in numbered_rows(data):
        item = _cell(row, item_col, source, number)
        for col in label_cols:
            _require(row, col, source, number)
            long.append((number, {"item_id": item, "annotator_id": col, "label": row[col]}))
    return long


def numbered_rows(data: Any) -> list[tuple[int, Row]]:
    """(1-based row number, row) pairs from a list of dicts, of (number, dict) pairs, or a DataFrame."""
    if hasattr(data, "to_dict") and hasattr(data, "columns"):
        data = data.to_dict("records")
    rows = list(data)
    if rows and isinstance(rows[0], tuple) and len(rows[0]) == 2 and isinstance(rows[0][1], Mapping):
        return [(int(n), r) for n, r in rows]
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping):
            raise DataError(f"row {number}: expected an object with named fields, found {type(row).__name__}")
    return list(enumerate(rows, start=1))


def read_rows(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """Numbered rows of a .jsonl, .json, .csv (each optionally .gz) or .parquet file (numbers: lines/rows)."""
    from directalign.data import formats

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    rows = formats.read_rows(path, None)
    for number, row in rows:
        if not isinstance(row, Mapping):
            raise DataError(f"{path}:{number}: expected an object with fields, found {type(row).__name__}")
    return rows


def coerce_label(value: Any) -> Any:
    """A label in one canonical form: None when missing, numbers for numeric text, Python scalars for numpy.

    Integral floats become ints (2.0 -> 2) so that a label read from CSV, JSON or a DataFrame compares equal.
    """
    if hasattr(value, "item") and not isinstance(value, list | dict | str):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            return text
        if math.isnan(value) or math.isinf(value):
            return text
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list | dict):
        raise DataError(f"a label must be a single value, found {type(value).__name__}")
    return value


def _label(row: Row, col: str, source: str, number: int) -> Any:
    _require(row, col, source, number)
    try:
        return coerce_label(row[col])
    except DataError as err:
        raise DataError(f"{source}:{number}: field {col!r}: {err}") from err


def _require(row: Row, col: str, source: str, number: int) -> None:
    if col not in row:
        fields = ", ".join(map(str, row)) or "none"
        raise DataError(f"{source}:{number}: missing field {col!r} (fields: {fields})")


def _cell(row: Row, col: str, source: str, number: int) -> Any:
    _require(row, col, source, number)
    value = row[col]
    if hasattr(value, "item") and not isinstance(value, list | dict | str):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        raise DataError(f"{source}:{number}: field {col!r} is empty")
    if isinstance(value, list | dict):
        raise DataError(f"{source}:{number}: field {col!r} must be one value, found {type(value).__name__}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _category_key(values: Iterable[Any]):
    if all(_is_number(v) for v in values):
        return float
    return str
