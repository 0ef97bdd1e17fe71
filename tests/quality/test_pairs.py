from __future__ import annotations

import random

import pytest

from directalign.errors import DataError
from directalign.quality.pairs import ScoredResponses, build_pairs, choose_pairs


def test_best_vs_worst():
    assert choose_pairs([3, 5, 1, 4], "best-vs-worst") == [(1, 2)]
    assert choose_pairs([3, 5, 1, 4], "best-vs-worst", min_margin=5) == []
    assert choose_pairs([2, 2], "best-vs-worst") == []  # a tie is no pair
    assert choose_pairs([5, 1, 5, 1], "best-vs-worst") == [(0, 1)]  # first listed wins ties


def test_all_pairs_above_margin():
    assert choose_pairs([3, 5, 1], "all-pairs") == [(1, 0), (1, 2), (0, 2)]
    assert choose_pairs([3, 5, 1], "all-pairs", min_margin=2.5) == [(1, 2)]
    assert choose_pairs([3, 3, 1], "all-pairs") == [(0, 2), (1, 2)]


def test_best_vs_random_is_seeded_and_respects_margin():
    scores = [9, 1, 2, 3, 8.5]
    seen = {choose_pairs(scores, "best-vs-random", rng=random.Random(seed))[0] for seed in range(50)}
    assert seen == {(0, 1), (0, 2), (0, 3), (0, 4)}
    assert choose_pairs(scores, "best-vs-random", 1.0, random.Random(0))[0][1] in (1, 2, 3)
    first = build_pairs([ScoredResponses("q", ["a", "b", "c"], [3, 1, 2])] * 5, "best-vs-random", seed=7)
    second = build_pairs([ScoredResponses("q", ["a", "b", "c"], [3, 1, 2])] * 5, "best-vs-random", seed=7)
    assert [r.pairs for r in first[0]] == [r.pairs for r in second[0]]


def test_build_pairs_keeps_all_responses_and_reports_dropped_prompts():
    items = [
        ScoredResponses("q1", ["a", "b", "c"], [1, 3, 2], source="r:1"),
        ScoredResponses("q2", ["x", "y"], [2, 2], source="r:2"),
    ]
    records, report = build_pairs(items, "all-pairs")
    assert len(records) == 1
    record = records[0]
    assert record.prompt == [{"role": "user", "content": "q1"}]
    assert len(record.responses) == 3 and record.pairs == [(1, 2), (1, 0), (2, 0)]
    assert record.chosen == [{"role": "assistant", "content": "b"}]
    assert (report.removed, report.kept) == (1, 3)
    assert report.examples == ["r:2: no pair (scores [2, 2])"]


def test_bad_input():
    with pytest.raises(DataError, match="unknown pairing strategy"):
        choose_pairs([1, 2], "best-of-n")
    with pytest.raises(DataError, match="2 scores for 3 responses"):
        build_pairs([ScoredResponses("q", ["a", "b", "c"], [1, 2], source="r:9")])
