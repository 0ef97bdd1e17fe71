from __future__ import annotations

import pytest

from directalign.errors import DataError
from directalign.quality.calibration import gold_calibration, gold_labels
from directalign.quality.stats import wilson_interval


def test_wilson_interval_hand_computed():
    # 8 of 10 at 95%: centre (0.8 + 1.96^2/20) / (1 + 1.96^2/10) = 0.7167,
    # half-width 1.96 sqrt(0.016 + 1.96^2/400) / 1.3841 = 0.2266.
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == 1.0


def answers(annotator: str, pattern: str, start: int = 0) -> list[dict]:
    """One row per character: '1' answers gold item i correctly ('yes'), '0' wrongly ('no')."""
    return [
        {"item_id": f"g{start + i}", "annotator_id": annotator, "label": "yes" if c == "1" else "no", "t": i}
        for i, c in enumerate(pattern)
    ]


GOLD = {f"g{i}": "yes" for i in range(40)}


def test_accuracy_windows_and_drift_flag():
    # 30 answers: the first 20 all right, the last 10 all wrong -> overall 2/3, windows 1.0, 0.0 with window 10
    rows = answers("drifter", "1" * 20 + "0" * 10) + answers("steady", "1101111011" * 3)
    results = {r.annotator: r for r in gold_calibration(rows, GOLD, window=10, threshold=0.6)}
    drifter, steady = results["drifter"], results["steady"]
    assert (drifter.n_gold, drifter.n_correct) == (30, 20)
    assert drifter.accuracy == pytest.approx(2 / 3)
    assert drifter.window_accuracy == [1.0, 1.0, 0.0]
    assert drifter.latest_accuracy == 0.0 and drifter.drift == -1.0
    assert drifter.flagged and "latest 10 gold answers 0.00 < 0.60" in drifter.reasons
    assert steady.accuracy == pytest.approx(0.8) and not steady.flagged


def test_order_column_reorders_answers():
    rows = answers("a", "0" * 10 + "1" * 10)
    for row in rows:
        row["t"] = -row["t"]  # reversed time: the wrong answers are the latest
    result = gold_calibration(rows, GOLD, order_col="t", window=10)[0]
    assert result.window_accuracy == [1.0, 0.0]


def test_overall_threshold_min_items_and_non_gold_items():
    rows = (
        answers("weak", "1000000")
        + answers("new", "000")
        + [{"item_id": "not-gold", "annotator_id": "new", "label": "no", "t": 0}]
    )
    results = {r.annotator: r for r in gold_calibration(rows, GOLD, min_items=5)}
    assert results["weak"].flagged and results["weak"].reasons == ["accuracy 0.14 < 0.70"]
    assert results["new"].n_gold == 3 and not results["new"].flagged
    assert "only 3 gold answers" in results["new"].reasons[0]


def test_gold_labels_compare_across_types():
    gold = gold_labels([{"item_id": "g0", "label": "1"}])
    result = gold_calibration([{"item_id": "g0", "annotator_id": "a", "label": 1.0}], gold, min_items=1)
    assert result[0].accuracy == 1.0


def test_conflicting_gold_is_an_error_naming_the_row():
    with pytest.raises(DataError, match=r"gold.csv:2: field 'label': item 'g0' has two gold labels"):
        gold_labels([{"item_id": "g0", "label": "a"}, {"item_id": "g0", "label": "b"}], source="gold.csv")
