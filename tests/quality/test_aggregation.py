from __future__ import annotations

import numpy as np
import pytest

from directalign.errors import DataError
from directalign.quality.aggregation import aggregate, dawid_skene, majority_vote
from directalign.quality.table import rating_table
from tests.quality.conftest import long_rows


def test_majority_vote_reports_ties_and_agreement():
    table = rating_table(long_rows([["A", "A", "A"], ["A", "B", None], ["B", None, None]]))
    first, second, third = majority_vote(table)
    assert (first.label, first.agreement, first.n_labels) == ("A", pytest.approx(2 / 3), 3)
    assert second.label is None and second.tied == ["A", "B"] and second.agreement == 0.0
    assert (third.label, third.confidence) == ("A", 1.0)


def simulated(seed: int = 0, n_items: int = 400):
    """Two careful annotators (90% right), three spammers (uniform guesses), 3 classes with priors .5/.3/.2."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(3, size=n_items, p=[0.5, 0.3, 0.2])
    rows = []
    for annotator, accuracy in enumerate([0.9, 0.9, None, None, None]):
        for item, true in enumerate(truth):
            if accuracy is None:
                label = int(rng.integers(3))
            else:
                label = int(true) if rng.random() < accuracy else int(rng.choice([c for c in range(3) if c != true]))
            rows.append({"item_id": item, "annotator_id": f"a{annotator}", "label": label})
    return rating_table(rows), truth


def test_dawid_skene_beats_majority_when_most_annotators_are_spammers():
    table, truth = simulated()
    result = dawid_skene(table)
    ds_accuracy = np.mean([lab.label == t for lab, t in zip(result.labels, truth, strict=True)])
    mv_accuracy = np.mean([lab.label == t for lab, t in zip(majority_vote(table), truth, strict=True)])
    assert result.converged
    assert ds_accuracy > 0.9
    assert ds_accuracy > mv_accuracy + 0.1
    assert result.reliability["a0"] == pytest.approx(0.9, abs=0.05)
    assert result.reliability["a3"] == pytest.approx(1 / 3, abs=0.1)
    assert result.priors == pytest.approx(np.bincount(truth) / len(truth), abs=0.03)
    assert result.posteriors.sum(axis=1) == pytest.approx(np.ones(len(truth)))
    assert result.confusion["a1"].sum(axis=1) == pytest.approx(np.ones(3))


def test_dawid_skene_agrees_with_unanimous_annotators():
    table = rating_table(long_rows([["A", "B", "A", "C"], ["A", "B", "A", "C"], ["A", "B", "A", "C"]]))
    labels = dawid_skene(table).labels
    assert [lab.label for lab in labels] == ["A", "B", "A", "C"]
    assert all(lab.confidence > 0.95 and lab.agreement == 1.0 for lab in labels)


def test_aggregate_dispatch():
    table = rating_table(long_rows([["A"], ["A"]]))
    assert aggregate(table, "majority")[0].label == "A"
    assert aggregate(table, "dawid-skene")[0].label == "A"
    with pytest.raises(DataError, match="unknown aggregation method"):
        aggregate(table, "mean")
