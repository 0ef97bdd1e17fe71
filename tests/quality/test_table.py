from __future__ import annotations

import numpy as np
import pytest

from directalign.errors import DataError
from directalign.quality.table import coerce_label, rating_table, wide_to_long


def test_codes_and_counts_from_long_rows():
    rows = [
        {"item_id": "x", "annotator_id": "ann", "label": "B"},
        {"item_id": "x", "annotator_id": "bob", "label": "A"},
        {"item_id": "y", "annotator_id": "bob", "label": "A"},
    ]
    table = rating_table(rows)
    assert table.items == ["x", "y"]
    assert table.annotators == ["ann", "bob"]
    assert table.categories == ["A", "B"]
    assert table.codes.tolist() == [[1, 0], [-1, 0]]
    assert table.counts().tolist() == [[1, 1], [1, 0]]
    assert table.labels_of("bob") == {"x": "A", "y": "A"}


def test_numeric_text_sorts_as_numbers_and_matches_json_numbers():
    rows = [{"item_id": 1, "annotator_id": "a", "label": "10"}, {"item_id": 1, "annotator_id": "b", "label": 9}]
    table = rating_table(rows)
    assert table.categories == [9, 10]
    assert table.values().tolist() == [9.0, 10.0]


@pytest.mark.parametrize(
    "value, expected",
    [
        (" 4 ", 4),
        ("4.0", 4),
        (2.5, 2.5),
        ("", None),
        (float("nan"), None),
        (np.int64(3), 3),
        ("tie", "tie"),
        (None, None),
    ],
)
def test_coerce_label(value, expected):
    assert coerce_label(value) == expected


def test_missing_labels_are_skipped():
    rows = [{"item_id": 1, "annotator_id": "a", "label": None}, {"item_id": 1, "annotator_id": "b", "label": 2}]
    table = rating_table(rows)
    assert table.annotators == ["b"]


def test_duplicate_label_names_row_and_field():
    rows = [{"i": 1, "a": "x", "l": 1}, {"i": 1, "a": "x", "l": 2}]
    with pytest.raises(DataError, match=r"labels.csv:2: field 'a'.*twice"):
        rating_table(rows, "i", "a", "l", source="labels.csv")


def test_missing_field_names_row_and_field():
    with pytest.raises(DataError, match=r"t.jsonl:1: missing field 'label'"):
        rating_table([{"item_id": 1, "annotator_id": "a"}], source="t.jsonl")


def test_ratings_that_are_not_numbers_cannot_be_interval():
    table = rating_table([{"item_id": 1, "annotator_id": "a", "label": "good"}])
    with pytest.raises(DataError, match="'good' is not a number"):
        table.values()


def test_wide_to_long_keeps_row_numbers():
    rows = wide_to_long([{"id": 7, "r1": 1, "r2": 2}], "id", ["r1", "r2"])
    assert rows == [
        (1, {"item_id": 7, "annotator_id": "r1", "label": 1}),
        (1, {"item_id": 7, "annotator_id": "r2", "label": 2}),
    ]
    assert rating_table(rows).codes.tolist() == [[0, 1]]


def test_dataframe_input():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"item_id": [1, 1, 2], "annotator_id": ["a", "b", "a"], "label": [1.0, 2.0, np.nan]})
    table = rating_table(frame)
    assert table.categories == [1, 2]
    assert table.codes.tolist() == [[0, 1]]
