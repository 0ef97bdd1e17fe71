from __future__ import annotations

import math

import pytest

from directalign.data.types import PreferenceRecord
from directalign.errors import DataError
from directalign.quality.diagnostics import (
    contradictions,
    diagnose,
    distinct_n,
    exact_duplicates,
    length_bias,
    near_duplicates,
    near_identical_pairs,
    normalized_entropy,
    position_bias,
    prompt_diversity,
)


def pair(prompt: str, chosen: str, rejected: str, source: str = "") -> PreferenceRecord:
    return PreferenceRecord(
        prompt=[{"role": "user", "content": prompt}],
        responses=[[{"role": "assistant", "content": chosen}], [{"role": "assistant", "content": rejected}]],
        source=source,
    )


def test_length_bias_counts_longer_chosen_and_skips_ties():
    records = [
        pair("p", "long answer", "short"),
        pair("p", "longer one", "x"),
        pair("p", "ab", "cd"),
        pair("p", "y", "much longer"),
    ]
    bias = length_bias(records)
    assert (bias.count, bias.total, bias.skipped) == (2, 3, 1)
    assert bias.rate == pytest.approx(2 / 3)
    assert bias.ci_low < 2 / 3 < bias.ci_high
    words = length_bias(records, "words")
    assert (words.count, words.total, words.skipped) == (2, 3, 1)  # "ab" vs "cd": one word each
    with pytest.raises(DataError):
        length_bias(records, "tokens")


def test_length_bias_counts_every_pair_of_a_ranked_record():
    ranked = PreferenceRecord(
        prompt=[{"role": "user", "content": "q"}],
        responses=[
            [{"role": "assistant", "content": "aaa"}],
            [{"role": "assistant", "content": "bb"}],
            [{"role": "assistant", "content": "c"}],
        ],
        pairs=[(0, 1), (0, 2), (2, 1)],
    )
    bias = length_bias([ranked])
    assert (bias.count, bias.total) == (2, 3)


def test_position_bias():
    records = [pair("p", "a", "b")] * 4
    bias = position_bias(records, [True, True, False, None])
    assert (bias.count, bias.total, bias.skipped) == (2, 3, 1)
    with pytest.raises(DataError, match="3 flags for 4 records"):
        position_bias(records, [True] * 3)


def test_duplicates_and_contradictions():
    records = [
        pair("What is 2+2?", "4", "5"),
        pair("What is 2+2?", "4", "5"),
        pair("What is 2+2?", "5", "4"),
        pair("what is 2 + 2", "4", "5"),
        pair("Other", "x", "y"),
    ]
    assert exact_duplicates(records) == [[0, 1]]
    assert contradictions(records) == [[0, 1, 2]]
    # The swapped pair shares only 2 of 6 word 3-grams: a contradiction, not a near duplicate.
    assert near_duplicates(records, threshold=0.9) == [[0, 1, 3]]


def test_near_identical_pairs():
    records = [pair("p", "The answer is 42.", "the answer is 42"), pair("p", "yes", "no")]
    assert near_identical_pairs(records) == [(0, 0, 1.0)]


def test_distinct_n_and_entropy_hand_computed():
    tokens = [["a", "b", "a"], ["a", "c"]]
    assert distinct_n(tokens, 1) == pytest.approx(3 / 5)
    assert distinct_n(tokens, 2) == pytest.approx(3 / 3)
    assert normalized_entropy([5, 5]) == pytest.approx(1.0)
    assert normalized_entropy([10]) == 0.0
    assert normalized_entropy([3, 1]) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2))


def test_prompt_diversity_uses_the_last_user_turn():
    record = PreferenceRecord(
        prompt=[{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Write a poem"}],
        responses=[[{"role": "assistant", "content": "a"}], [{"role": "assistant", "content": "b"}]],
    )
    other = pair("Explain gravity to children", "a", "b")
    stats = prompt_diversity([record, record, other])
    assert (stats.n_prompts, stats.unique_prompts) == (3, 2)
    assert stats.top_first_words == [("write", 2), ("explain", 1)]
    assert ("poem", 2) in stats.top_keywords and all(w != "to" for w, _ in stats.top_keywords)
    assert stats.length_median == 3.0


def test_diagnose_report_is_json_ready():
    records = [pair("q1", "a b c", "a b"), pair("q2", "x", "y z")]
    report = diagnose(records, chosen_shown_first=[True, False])
    data = report.to_dict()
    assert data["n_pairs"] == 2 and data["position_bias"]["count"] == 1
    assert data["length_bias_chars"]["rate"] == 0.5
    with pytest.raises(DataError):
        diagnose([])
