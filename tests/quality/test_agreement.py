"""Agreement statistics against published worked examples and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from directalign.errors import DataError
from directalign.quality.agreement import (
    agreement_report,
    bootstrap_ci,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    pairwise_kappa,
    per_annotator,
    percent_agreement,
)
from directalign.quality.table import rating_table
from tests.quality.conftest import long_rows

# Wikipedia, "Fleiss' kappa", worked example: 10 subjects, 14 raters, 5 categories; P = 0.378, P_e = 0.213,
# kappa = 0.210.
FLEISS_WIKIPEDIA = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", example C: 4 observers x 12 units, values
# 1-5, missing data. Published: nominal 0.743, ordinal 0.815, interval 0.849, ratio 0.797.
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]

# Wikipedia, "Krippendorff's alpha", computational example: 3 coders x 15 units. Nominal alpha 0.691
# (= 1 - 25 * 6 / 486); interval 1 - 25 * 12 / 1586 = 0.8108, computed by hand from its coincidences.
KRIPPENDORFF_WIKIPEDIA = [
    [None, None, None, None, None, 3, 4, 1, 2, 1, 1, 3, 3, None, 3],
    [1, None, 2, 1, 3, 3, 4, 3, None, None, None, None, None, None, None],
    [None, None, 2, 1, 3, 4, 4, None, 2, 1, 1, 3, 3, None, 4],
]


def fleiss_rows() -> list[dict]:
    rows = []
    for item, counts in enumerate(FLEISS_WIKIPEDIA):
        labels = [category for category, n in enumerate(counts) for _ in range(n)]
        rows += [{"item_id": item, "annotator_id": rater, "label": label} for rater, label in enumerate(labels)]
    return rows


def test_cohen_kappa_wikipedia_example():
    # 50 proposals: both yes 20, A yes B no 5, A no B yes 10, both no 15 -> p_o 0.7, p_e 0.5, kappa 0.4.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_drops_missing_and_is_nan_without_variation():
    assert cohen_kappa([1, 2, None], [1, 2, 1]) == pytest.approx(1.0)
    assert math.isnan(cohen_kappa([1, 1], [1, 1]))
    with pytest.raises(DataError):
        cohen_kappa([1], [1, 2])


def test_fleiss_kappa_wikipedia_example_from_counts_and_from_rows():
    counts = np.array(FLEISS_WIKIPEDIA)
    assert percent_agreement(counts) == pytest.approx(0.378, abs=5e-4)
    assert fleiss_kappa(counts) == pytest.approx(0.210, abs=5e-4)
    assert fleiss_kappa(rating_table(fleiss_rows())) == pytest.approx(fleiss_kappa(counts))


@pytest.mark.parametrize(
    "level, published", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)]
)
def test_krippendorff_2011_example(level, published):
    table = rating_table(long_rows(KRIPPENDORFF_2011))
    assert krippendorff_alpha(table, level) == pytest.approx(published, abs=5e-4)


def test_krippendorff_wikipedia_example():
    table = rating_table(long_rows(KRIPPENDORFF_WIKIPEDIA))
    assert krippendorff_alpha(table, "nominal") == pytest.approx(1 - 25 * 6 / 486)
    assert krippendorff_alpha(table, "interval") == pytest.approx(1 - 25 * 12 / 1586)


def test_krippendorff_from_counts_needs_values_for_interval():
    counts = rating_table(long_rows(KRIPPENDORFF_2011)).counts()
    assert krippendorff_alpha(counts, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(counts, "interval", values=[1, 2, 3, 4, 5]) == pytest.approx(0.849, abs=5e-4)
    with pytest.raises(DataError, match="category values"):
        krippendorff_alpha(counts, "interval")
    with pytest.raises(DataError, match="unknown level"):
        krippendorff_alpha(counts, "cardinal")


def test_two_coders_nominal_alpha_is_scotts_pi_with_sample_correction():
    # 4 items, A = [1, 1, 2, 2], B = [1, 2, 2, 2]; coincidences n_1 = 3, n_2 = 5, n = 8, one disagreeing
    # unit -> alpha = 1 - (n - 1) * 2 / (2 * n_1 * n_2) = 1 - 7 * 2 / 30.
    table = rating_table(long_rows([[1, 1, 2, 2], [1, 2, 2, 2]]))
    assert krippendorff_alpha(table) == pytest.approx(1 - 14 / 30)
    assert percent_agreement(table) == pytest.approx(0.75)


def test_single_category_has_undefined_chance_correction():
    table = rating_table(long_rows([[1, 1], [1, 1]]))
    assert percent_agreement(table) == 1.0
    assert math.isnan(fleiss_kappa(table))
    assert math.isnan(krippendorff_alpha(table))


def test_items_with_one_label_are_ignored():
    with_lonely = rating_table(long_rows([[1, 2, 1], [1, 2, None]]))
    without = rating_table(long_rows([[1, 2], [1, 2]]))
    assert fleiss_kappa(with_lonely) == fleiss_kappa(without) == pytest.approx(1.0)


def test_per_annotator_against_the_others():
    # Items 0-3; c disagrees with a and b on items 2 and 3.
    table = rating_table(long_rows([["A", "A", "B", "B"], ["A", "A", "B", "B"], ["A", "A", "A", "A"]]))
    stats = {s.annotator: s for s in per_annotator(table)}
    assert stats[2].n_items == 4
    assert stats[2].agreement_with_others == pytest.approx(0.5)
    assert stats[2].agreement_with_majority == pytest.approx(0.5)
    assert stats[2].kappa_with_majority == pytest.approx(0.0)
    # a: others b and c agree with it on items 0-1 (2/2), half of them on 2-3 (1/2) -> 0.75.
    assert stats[0].agreement_with_others == pytest.approx(0.75)
    # a's leave-one-out majority (b, c) ties on items 2-3, so only items 0-1 count.
    assert stats[0].agreement_with_majority == 1.0


def test_pairwise_kappa_names_pairs():
    table = rating_table(long_rows([["A", "B", "A", "B"], ["A", "B", "A", "B"], ["A", "A", "B", "B"]]))
    kappas = pairwise_kappa(table)
    assert kappas["0 vs 1"] == pytest.approx(1.0)
    assert kappas["0 vs 2"] == pytest.approx(0.0)


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    table = rating_table(long_rows(KRIPPENDORFF_2011))
    low, high = bootstrap_ci(table, krippendorff_alpha, n_boot=300, seed=1)
    assert (low, high) == bootstrap_ci(table, krippendorff_alpha, n_boot=300, seed=1)
    assert low < krippendorff_alpha(table) < high
    assert 0.0 < high - low < 1.0
    assert bootstrap_ci(table, krippendorff_alpha, n_boot=300, seed=2) != (low, high)


def test_bootstrap_of_perfect_agreement_is_a_point():
    table = rating_table(long_rows([[1, 2, 3, 1, 2], [1, 2, 3, 1, 2]]))
    assert bootstrap_ci(table, percent_agreement, n_boot=100) == (1.0, 1.0)


def test_report_has_ratings_levels_and_json():
    report = agreement_report(rating_table(long_rows(KRIPPENDORFF_2011)), ratings=True, n_boot=200)
    assert set(report.alpha) == {"nominal", "ordinal", "interval"}
    assert report.alpha["interval"] == pytest.approx(0.849, abs=5e-4)
    assert set(report.intervals) == {
        "percent_agreement",
        "fleiss_kappa",
        "alpha_nominal",
        "alpha_ordinal",
        "alpha_interval",
    }
    assert report.n_items == 12 and report.n_annotators == 4 and report.n_labels == 41
    data = report.to_dict()
    assert data["alpha"]["ordinal"] == pytest.approx(0.815, abs=5e-4)
    assert isinstance(data["per_annotator"][0]["kappa_with_majority"], float | None)


def test_report_refuses_non_numeric_ratings():
    with pytest.raises(DataError, match="not a number"):
        agreement_report(rating_table(long_rows([["A", "B"], ["A", "A"]])), ratings=True, n_boot=0)
