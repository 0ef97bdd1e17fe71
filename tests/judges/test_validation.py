"""Judge validation against human labels: the statistics by hand, and a real baseline on PandaLM and LLMBar."""

import pytest

from directalign.data.types import PreferenceRecord
from directalign.errors import DataError
from directalign.judges.backends import reward_function_judge
from directalign.judges.pairwise import PairJudgement
from directalign.judges.validation import pairs_from_records, pandalm_pairs, validate_judgements, validate_judges
from directalign.quality.agreement import cohen_kappa
from directalign.quality.sources import llmbar_records
from tests.quality.conftest import shared_path


def judgements(winners):
    return [PairJudgement(w, None if w is None else 0.5) for w in winners]


def test_agreement_kappa_and_confusion_by_hand():
    judged = ["A", "A", "B", "tie", None, "B"]
    human = ["A", "B", "B", "A", "A", "tie"]
    report = validate_judgements("j", judgements(judged), human, n_boot=500)
    assert (report.n, report.n_parsed, report.coverage, report.judge_ties) == (6, 5, 5 / 6, 1)
    assert report.agreement == pytest.approx(2 / 5)
    assert report.kappa == pytest.approx(cohen_kappa(["A", "A", "B", "tie", "B"], ["A", "B", "B", "A", "tie"]))
    assert (report.decisive_agreement, report.n_decisive) == (pytest.approx(2 / 3), 3)
    assert report.confusion["A"] == {"A": 1, "B": 0, "tie": 1, "unparseable": 1}
    assert "tie" in report.confusion and report.confusion["tie"]["B"] == 1
    low, high = report.kappa_interval
    assert low <= report.kappa <= high
    assert report.agreement_interval[0] < 0.4 < report.agreement_interval[1]


def test_perfect_agreement_has_a_degenerate_interval_and_bad_labels_fail():
    report = validate_judgements("j", judgements(["A", "B", "A", "B"]), ["A", "B", "A", "B"], n_boot=200)
    assert (report.kappa, report.kappa_interval) == (1.0, (1.0, 1.0))
    with pytest.raises(DataError, match="A, B or tie"):
        validate_judgements("j", judgements(["A"]), ["chosen"])


def test_records_are_shown_in_a_seeded_random_order():
    records = [
        PreferenceRecord(
            [{"role": "user", "content": f"q{i}"}],
            [[{"role": "assistant", "content": f"good {i}"}], [{"role": "assistant", "content": f"bad {i}"}]],
        )
        for i in range(40)
    ]
    pairs = pairs_from_records(records, seed=1)
    assert pairs == pairs_from_records(records, seed=1) and pairs != pairs_from_records(records, seed=2)
    assert 10 < sum(p.human == "A" for p in pairs) < 30
    for pair in pairs:
        good = pair.response_a if pair.human == "A" else pair.response_b
        assert good.startswith("good")


def longer(prompts, completions, **columns):
    return [float(len(c)) for c in completions]


@pytest.mark.shared_data
def test_longer_is_better_baseline_on_pandalm_human_labels():
    pairs = pandalm_pairs(shared_path("pandalm-testset"))
    assert len(pairs) == 999 and [sum(p.human == h for p in pairs) for h in ("A", "B", "tie")] == [422, 472, 105]
    assert len(pandalm_pairs(shared_path("pandalm-testset"), ties=False)) == 894
    (report,) = validate_judges([reward_function_judge(longer)], pairs).validations
    assert (report.n_parsed, report.judge_ties) == (999, 18)
    assert report.agreement == pytest.approx(610 / 999)
    assert report.kappa == pytest.approx(0.3027, abs=1e-4)  # length says something on PandaLM ...


@pytest.mark.shared_data
def test_longer_is_better_baseline_on_llmbar_natural():
    records = llmbar_records(shared_path("llmbar", "LLMBar", "Natural", "dataset.json"))
    (report,) = validate_judges([reward_function_judge(longer)], pairs_from_records(records, seed=0)).validations
    assert report.n == 100 and report.agreement == pytest.approx(0.56)
    assert report.kappa_interval[0] < 0 < report.kappa_interval[1]  # ... and nothing on LLMBar, built to defeat it


def test_human_ceiling_by_hand():
    from directalign.judges.validation import human_ceiling

    votes = [{"A": 3, "B": 0, "tie": 0}, {"A": 2, "B": 1, "tie": 0}, {"A": 1, "B": 1, "tie": 1},
             {"A": 2, "B": 0, "tie": 0}, {"A": 1, "B": 0, "tie": 0}]  # the last has one vote: no ceiling item
    c = human_ceiling(["A", "B", "tie", None, "A"], votes)
    assert c.n_items == 4 and c.annotator_vs_annotator == pytest.approx((1 + 1 / 3 + 0 + 1) / 4)
    assert c.judge_vs_annotator == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)  # the unparseable verdict left out
    assert c.n_items_decisive == 4 and c.annotator_vs_annotator_decisive == pytest.approx((1 + 1 / 3 + 0 + 1) / 4)
    assert c.judge_vs_annotator_decisive == pytest.approx((1 + 1 / 3) / 2)  # the judge's tie left out


def test_annotation_exports_keep_their_votes(tmp_path):
    import json

    from directalign.judges.validation import annotation_pairs

    rows = [
        {"prompt": "q1", "chosen": "good", "rejected": "bad", "outcome": "chosen", "votes_chosen": 2,
         "votes_rejected": 1, "votes_tie": 0, "votes_both_bad": 0},
        {"prompt": "q2", "chosen": "x", "rejected": "y", "outcome": "tie", "votes_chosen": 1, "votes_rejected": 1,
         "votes_tie": 1, "votes_both_bad": 1},
    ]
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, second = annotation_pairs(path, seed=0)
    good = first.human  # "good" is shown as A or as B at random; its votes follow it
    assert first.votes == {good: 2, {"A": "B", "B": "A"}[good]: 1, "tie": 0}
    assert second.human == "tie" and second.votes["tie"] == 2 and sum(second.votes.values()) == 4
    (report,) = validate_judges([reward_function_judge(longer)], [first, second], n_boot=0).validations
    assert report.ceiling.n_items == 2
    path.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(DataError, match="export.jsonl:1: no votes_chosen column"):
        annotation_pairs(path)


@pytest.mark.shared_data
def test_pandalm_pairs_carry_the_three_annotators_votes():
    pairs = pandalm_pairs(shared_path("pandalm-testset"))
    assert all(sum(p.votes.values()) == 3 and max(p.votes, key=p.votes.get) == p.human for p in pairs)
    (report,) = validate_judges([reward_function_judge(longer)], pairs[:200], n_boot=0).validations
    c = report.ceiling
    assert c.n_items == 200 and 0.5 < c.annotator_vs_annotator < 1 and 0 < c.judge_vs_annotator < 1
