from __future__ import annotations

import pytest

from directalign.data.types import PreferenceRecord
from directalign.errors import DataError
from directalign.quality.filters import (
    drop_extreme_length_ratio,
    drop_low_agreement,
    drop_low_margin,
    drop_near_identical,
    drop_ties,
    length_ratio,
)
from tests.quality.test_diagnostics import pair


def test_drop_low_margin_keeps_unknown():
    records = [pair("p", "a", "b", "f:1"), pair("p", "a", "b", "f:2"), pair("p", "a", "b", "f:3")]
    kept, report = drop_low_margin(records, [2.0, 0.5, None], min_margin=1.0)
    assert [r.source for r in kept] == ["f:1", "f:3"]
    assert (report.removed, report.kept) == (1, 2)
    assert report.examples == ["f:2: margin 0.5 < 1"]


def test_drop_low_agreement_and_ties():
    records = [pair("p", "a", "b", f"f:{i}") for i in range(1, 5)]
    kept, report = drop_low_agreement(records, [1.0, 2 / 3, 0.5, 1.0], min_agreement=0.6)
    assert [r.source for r in kept] == ["f:1", "f:2", "f:4"] and report.removed == 1
    kept, report = drop_ties(records, [False, True, None, False])
    assert [r.source for r in kept] == ["f:1", "f:3", "f:4"]
    assert report.examples == ["f:2: labelled a tie"]
    with pytest.raises(DataError, match="3 values for 4 records"):
        drop_ties(records, [False] * 3)


def test_drop_near_identical_removes_pairs_inside_ranked_records():
    ranked = PreferenceRecord(
        prompt=[{"role": "user", "content": "q"}],
        responses=[
            [{"role": "assistant", "content": t}] for t in ["The sky is blue.", "the sky is blue", "Grass is green."]
        ],
        pairs=[(0, 1), (0, 2)],
        source="f:1",
    )
    identical = pair("p", "same words here", "Same words here!", "f:2")
    kept, report = drop_near_identical([ranked, identical], threshold=0.9)
    assert len(kept) == 1 and kept[0].pairs == [(0, 2)]
    assert ranked.pairs == [(0, 1), (0, 2)]  # the input record is not modified
    assert (report.removed, report.kept) == (2, 1)


def test_length_ratio_filter_hand_computed():
    assert length_ratio("aaaa", "a") == 4.0
    assert length_ratio("", "abc") == 3.0
    records = [pair("p", "aaaa", "a", "f:1"), pair("p", "aaa", "a", "f:2")]
    kept, report = drop_extreme_length_ratio(records, max_ratio=3.0)
    assert [r.source for r in kept] == ["f:2"]
    assert report.examples == ["f:1: length ratio 4.0 > 3"]
    with pytest.raises(DataError):
        drop_extreme_length_ratio(records, max_ratio=0.5)
