"""The real multi-annotator data sets under ../shared/data (skipped when absent), checked against the counts
their SOURCE.md files and papers publish, and against sane ranges."""

from __future__ import annotations

import numpy as np
import pytest

from directalign.quality.aggregation import dawid_skene
from directalign.quality.agreement import (
    agreement_report,
    fleiss_kappa,
    krippendorff_alpha,
    pairwise_kappa,
    percent_agreement,
)
from directalign.quality.diagnostics import diagnose
from directalign.quality.pairs import build_pairs
from directalign.quality.sources import (
    alpaca_eval_labels,
    llmbar_records,
    oasst_scored,
    pandalm_labels,
    pandalm_records,
    vicuna80_score_labels,
    vicuna80_scored,
    xstest_labels,
)
from directalign.quality.table import rating_table
from tests.quality.conftest import shared_path

pytestmark = pytest.mark.shared_data


def label_counts(table, annotator) -> dict:
    labels = list(table.labels_of(annotator).values())
    return {c: labels.count(c) for c in table.categories}


def test_pandalm_three_humans_match_the_published_counts_and_kappas():
    table = rating_table(pandalm_labels(shared_path("pandalm-testset")))
    assert (len(table.items), len(table.annotators)) == (999, 3)
    # SOURCE.md: annotator1 97/427/475, annotator3 113/411/475 (tie/1/2); all three agree on 879.
    assert label_counts(table, "annotator1") == {"tie": 97, "response1": 427, "response2": 475}
    assert label_counts(table, "annotator3") == {"tie": 113, "response1": 411, "response2": 475}
    assert int((table.counts().max(axis=1) == 3).sum()) == 879
    # PandaLM README: pairwise Cohen's kappa 0.85-0.88.
    for name, kappa in pairwise_kappa(table).items():
        assert 0.85 <= round(kappa, 2) <= 0.88, name
    fleiss, alpha = fleiss_kappa(table), krippendorff_alpha(table)
    assert 0.80 < fleiss < 0.92
    assert alpha == pytest.approx(fleiss, abs=0.005)  # large n: alpha's small-sample correction is tiny
    assert percent_agreement(table) > fleiss


def test_pandalm_judges_agree_less_with_humans_than_humans_do():
    table = rating_table(pandalm_labels(shared_path("pandalm-testset"), judges=True))
    kappas = pairwise_kappa(table)
    human = [v for k, v in kappas.items() if "annotator" in k.split(" vs ")[1]]
    judge = [v for k, v in kappas.items() if "annotator" not in k.split(" vs ")[1]]
    assert min(human) > max(judge) + 0.2
    assert len(table.labels_of("gpt-3.5-turbo")) == 999 - 25  # 25 "garbage" verdicts become missing
    reliability = dawid_skene(table).reliability
    assert min(reliability[f"annotator{i}"] for i in (1, 2, 3)) > max(
        reliability["gpt-3.5-turbo"], reliability["pandalm-7b"]
    )


def test_pandalm_majority_records():
    records, agreement = pandalm_records(shared_path("pandalm-testset"))
    assert 700 < len(records) < 999 and len(agreement) == len(records)
    assert set(agreement) <= {2 / 3, 1.0}
    report = diagnose(records)
    assert 0.0 < report.length_bias_chars.rate < 1.0
    assert report.length_bias_chars.ci_low < report.length_bias_chars.rate < report.length_bias_chars.ci_high


def test_xstest_two_humans_agree_on_2169_of_2250():
    table = rating_table(xstest_labels(shared_path("xstest-completions")))
    assert (len(table.items), len(table.annotators)) == (2250, 2)
    assert percent_agreement(table) == pytest.approx(2169 / 2250)  # SOURCE.md: the `agreement` column
    kappa = pairwise_kappa(table)["annotation_1 vs annotation_2"]
    assert 0.85 < kappa < percent_agreement(table)


def test_alpaca_eval_judges_high_raw_agreement_but_moderate_kappa():
    table = rating_table(alpaca_eval_labels(shared_path("alpaca-eval-three-judges")))
    assert (len(table.items), len(table.annotators)) == (805, 3)
    # SOURCE.md rounded verdicts: weighted 733/72, gpt4_turbo_fn 740/65, each counting its one 1.5 as 2.
    assert label_counts(table, "weighted_alpaca_eval_gpt4_turbo") == {"output_1": 733, "output_2": 71, "tie": 1}
    assert label_counts(table, "alpaca_eval_gpt4_turbo_fn") == {"output_1": 740, "output_2": 64, "tie": 1}
    report = agreement_report(table, n_boot=200)
    assert report.percent_agreement > 0.9
    assert 0.3 < report.fleiss_kappa < 0.7  # 91% of verdicts are output_1: chance agreement is high
    low, high = report.intervals["fleiss_kappa"]
    assert low < report.fleiss_kappa < high and high - low < 0.3


def test_llmbar_natural_records():
    records = llmbar_records(shared_path("llmbar", "LLMBar", "Natural", "dataset.json"))
    assert len(records) == 100
    report = diagnose(records)
    assert report.n_pairs == 100 and report.length_bias_chars.total <= 100


def test_vicuna80_scores_become_ranked_records():
    items = vicuna80_scored(shared_path("vicuna80-gpt4-reviews"))
    assert len(items) == 80 and all(len(item.responses) == 7 for item in items)
    assert all(0.0 <= s <= 10.0 for item in items for s in item.scores)
    records, report = build_pairs(items, "all-pairs", min_margin=1.0)
    assert len(records) + report.removed == 80
    for record, item in zip(
        records, [i for i in items if any(max(i.scores) - s >= 1.0 for s in i.scores)], strict=True
    ):
        assert all(item.scores[a] - item.scores[b] >= 1.0 for a, b in record.pairs)
    assert np.mean([len(r.pairs) for r in records]) > 3


def test_vicuna80_judge_scores_agree_more_as_intervals_than_as_categories():
    # Each answer is scored by GPT-4 in 3-4 different pairings: 560 answers, 13 review files, missing cells.
    table = rating_table(vicuna80_score_labels(shared_path("vicuna80-gpt4-reviews")))
    assert (len(table.items), len(table.annotators)) == (560, 13)
    assert int((table.codes >= 0).sum()) == 2 * 1040
    nominal, ordinal, interval = (krippendorff_alpha(table, level) for level in ("nominal", "ordinal", "interval"))
    # 8 vs 8.5 is a full disagreement for nominal alpha but a small one for interval alpha.
    assert 0.2 < nominal < ordinal < interval < 0.95


def test_oasst_ranked_replies_become_scored_responses():
    items = oasst_scored(shared_path("oasst-en-100-trees", "en_100_tree.jsonl"))
    # 212 conversation turns of the 100 trees have 2-9 ranked assistant replies, 641 in all.
    assert len(items) == 212 and sum(len(i.responses) for i in items) == 641
    first = items[0]
    assert first.prompt[-1]["role"] == "user" and first.scores == [0.0, -1.0, -2.0]  # rank 0 is the best
    deeper = [i for i in items if len(i.prompt) > 1]
    assert deeper and all([m["role"] for m in i.prompt][-2:] == ["assistant", "user"] for i in deeper)
