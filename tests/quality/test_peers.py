"""Agreement statistics, Dawid-Skene and Wilson intervals against independent implementations.

Peers (the dev extra): scikit-learn's cohen_kappa_score, statsmodels' fleiss_kappa and proportion_confint,
the `krippendorff` package's alpha, crowd-kit's DawidSkene. Synthetic tables always run; the real multi-annotator
files under ../shared/data (PandaLM's three humans and two judges, AlpacaEval's three judges, Vicuna-80's GPT-4
scores) run when present. Where the algorithms are the same the match is to 1e-12.
"""

from __future__ import annotations

import itertools

import krippendorff
import numpy as np
import pandas as pd
import pytest
from crowdkit.aggregation import DawidSkene
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss_kappa
from statsmodels.stats.proportion import proportion_confint

from directalign.quality.aggregation import dawid_skene
from directalign.quality.agreement import cohen_kappa, fleiss_kappa, krippendorff_alpha
from directalign.quality.sources import alpaca_eval_labels, pandalm_labels, vicuna80_score_labels
from directalign.quality.stats import wilson_interval
from directalign.quality.table import RatingTable, rating_table
from tests.quality.conftest import shared_path

# crowd-kit 1.4.2 on pandas 3 warns about its own deprecated pandas calls on every step.
pytestmark = pytest.mark.filterwarnings("ignore:The (inplace|copy) keyword")

EXACT = 1e-12
# crowd-kit floors every confusion cell and posterior at 1e-10 (its _EPS); ours keeps the exact 0 of the ML
# estimate, so cells the floor lifts differ by at most 2e-10 after normalisation.
CROWDKIT_FLOOR = 1e-10


def synthetic_table(seed: int, n_items: int = 60, n_annotators: int = 4, n_categories: int = 3,
                    missing: float = 0.2, accuracy: float = 0.7) -> RatingTable:
    """Annotators who give the item's true category with probability `accuracy`, else a uniform one."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_categories, n_items)
    rows = []
    for item, annotator in itertools.product(range(n_items), range(n_annotators)):
        if rng.random() < missing:
            continue
        label = truth[item] if rng.random() < accuracy else rng.integers(0, n_categories)
        rows.append({"item_id": item, "annotator_id": f"a{annotator}", "label": int(label) + 1})
    return rating_table(rows)


def reliability_data(table: RatingTable) -> np.ndarray:
    """Annotators x items of category values (NaN where missing), the layout the krippendorff package reads."""
    values = np.asarray(table.categories, dtype=float) if table.numeric else np.arange(len(table.categories))
    data = np.where(table.codes >= 0, values[np.maximum(table.codes, 0)], np.nan)
    return data.T


def complete_items(table: RatingTable) -> RatingTable:
    return table.subset(np.flatnonzero((table.codes >= 0).all(axis=1)))


def assert_cohen_matches_sklearn(table: RatingTable) -> float:
    worst = 0.0
    for a, b in itertools.combinations(range(len(table.annotators)), 2):
        both = (table.codes[:, a] >= 0) & (table.codes[:, b] >= 0)
        ours = cohen_kappa(list(table.codes[both, a]), list(table.codes[both, b]))
        worst = max(worst, abs(ours - cohen_kappa_score(table.codes[both, a], table.codes[both, b])))
    assert worst < EXACT
    return worst


def assert_alpha_matches_krippendorff(table: RatingTable, levels: tuple[str, ...]) -> None:
    data = reliability_data(table)
    domain = np.asarray(table.categories, dtype=float) if table.numeric else np.arange(len(table.categories))
    for level in levels:
        theirs = krippendorff.alpha(reliability_data=data, level_of_measurement=level, value_domain=domain)
        assert krippendorff_alpha(table, level) == pytest.approx(theirs, abs=EXACT), level


def crowdkit_frame(table: RatingTable) -> pd.DataFrame:
    items, annotators = np.nonzero(table.codes >= 0)
    return pd.DataFrame({
        "task": [table.items[i] for i in items],
        "worker": [table.annotators[a] for a in annotators],
        "label": [table.categories[table.codes[i, a]] for i, a in zip(items, annotators, strict=True)],
    })


def assert_dawid_skene_matches_crowdkit(table: RatingTable, n_iter: int) -> None:
    """The same EM (majority-vote start, then M and E steps) run for the same number of iterations, ours without
    smoothing: posteriors, priors and confusion matrices equal crowd-kit's up to its 1e-10 floor."""
    theirs = DawidSkene(n_iter=n_iter, tol=-np.inf).fit(crowdkit_frame(table))
    ours = dawid_skene(table, max_iter=n_iter, tol=-1.0, smoothing=0.0)
    assert ours.n_iter == len(theirs.loss_history_) == n_iter
    posteriors = theirs.probas_.reindex(index=table.items, columns=table.categories).to_numpy()
    assert np.abs(posteriors - np.maximum(ours.posteriors, CROWDKIT_FLOOR)).max() < 1e-10
    assert np.abs(theirs.priors_.reindex(table.categories).to_numpy() - ours.priors).max() < EXACT
    for annotator in table.annotators:
        # crowd-kit's errors_ is (observed label x true label); ours is pi[true, observed].
        errors = theirs.errors_.loc[annotator].reindex(index=table.categories, columns=table.categories)
        assert np.abs(errors.to_numpy().T - ours.confusion[annotator]).max() <= 2 * CROWDKIT_FLOOR + EXACT


def assert_dawid_skene_defaults_agree(table: RatingTable, min_label_agreement: float) -> None:
    """Our defaults (smoothing 0.01, relative log-likelihood stop) against crowd-kit's (no smoothing, ELBO stop):
    different fixed points, so only the labels and priors should agree closely."""
    theirs = DawidSkene().fit(crowdkit_frame(table))
    ours = dawid_skene(table)
    labels = theirs.labels_.reindex(table.items).to_numpy()
    agree = np.mean([mine.label == label for mine, label in zip(ours.labels, labels, strict=True)])
    assert agree >= min_label_agreement
    assert np.abs(theirs.priors_.reindex(table.categories).to_numpy() - ours.priors).max() < 1e-3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cohen_kappa_matches_sklearn_on_synthetic_tables(seed):
    assert_cohen_matches_sklearn(synthetic_table(seed, n_categories=2 + seed))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fleiss_kappa_matches_statsmodels_on_synthetic_tables(seed):
    table = synthetic_table(seed, n_annotators=5, missing=0.0, n_categories=2 + seed)
    ours, theirs = fleiss_kappa(table), statsmodels_fleiss_kappa(table.counts(), method="fleiss")
    assert ours == pytest.approx(theirs, abs=EXACT)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_krippendorff_alpha_matches_the_package_at_every_level(seed):
    table = synthetic_table(seed, n_categories=5, missing=0.3)
    assert_alpha_matches_krippendorff(table, ("nominal", "ordinal", "interval", "ratio"))


@pytest.mark.parametrize("seed", [0, 1])
def test_dawid_skene_matches_crowdkit_on_synthetic_tables(seed):
    table = synthetic_table(seed, n_items=150, n_annotators=5, accuracy=0.6)
    assert_dawid_skene_matches_crowdkit(table, n_iter=25)
    assert_dawid_skene_defaults_agree(table, min_label_agreement=0.97)


def test_wilson_interval_matches_statsmodels():
    for successes, total in [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (71, 805), (500, 999), (7.5, 32)]:
        for confidence in (0.8, 0.95, 0.99):
            theirs = proportion_confint(successes, total, alpha=1 - confidence, method="wilson")
            assert np.abs(np.subtract(wilson_interval(successes, total, confidence), theirs)).max() < EXACT


@pytest.mark.shared_data
def test_pandalm_humans_and_judges_match_every_peer():
    table = rating_table(pandalm_labels(shared_path("pandalm-testset"), judges=True))
    humans = rating_table(pandalm_labels(shared_path("pandalm-testset")))
    assert len(humans.annotators) == 3 and len(table.annotators) == 5
    assert_cohen_matches_sklearn(table)
    for t in (humans, complete_items(table)):
        assert fleiss_kappa(t) == pytest.approx(statsmodels_fleiss_kappa(t.counts(), method="fleiss"), abs=EXACT)
    assert_alpha_matches_krippendorff(table, ("nominal",))  # 25 garbage verdicts of gpt-3.5 are missing
    assert_dawid_skene_matches_crowdkit(humans, n_iter=20)
    assert_dawid_skene_defaults_agree(humans, min_label_agreement=1.0)


@pytest.mark.shared_data
def test_alpaca_eval_three_judges_match_every_peer():
    table = rating_table(alpaca_eval_labels(shared_path("alpaca-eval-three-judges")))
    assert table.codes.shape == (805, 3)
    assert_cohen_matches_sklearn(table)
    assert fleiss_kappa(table) == pytest.approx(statsmodels_fleiss_kappa(table.counts(), method="fleiss"), abs=EXACT)
    assert_alpha_matches_krippendorff(table, ("nominal",))
    assert_dawid_skene_matches_crowdkit(table, n_iter=20)
    assert_dawid_skene_defaults_agree(table, min_label_agreement=1.0)


@pytest.mark.shared_data
def test_vicuna80_scores_match_krippendorff_at_every_level():
    table = rating_table(vicuna80_score_labels(shared_path("vicuna80-gpt4-reviews")))
    assert table.numeric and (table.codes < 0).any()
    assert_alpha_matches_krippendorff(table, ("nominal", "ordinal", "interval", "ratio"))
