"""Win rate: ties, intervals, the length-controlled estimate, and the three kinds of judge."""

import numpy as np
import pytest

from directalign.errors import ConfigError
from directalign.evaluation.winrate import (
    judge_scores,
    length_controlled,
    reward_scores,
    wilson_interval,
    win_rate,
)
from directalign.judges.base import Verdict


def test_wilson_interval_known_values():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_ties_count_half_and_are_reported():
    result = win_rate([1, 1, 0.5, 0, 0.5, 1])
    assert (result.wins, result.ties, result.losses, result.n) == (3, 2, 1, 6)
    assert result.win_rate == pytest.approx(4 / 6)
    assert result.ci_low < result.win_rate < result.ci_high


def test_bootstrap_interval_brackets_the_rate_and_is_seeded():
    scores = [1] * 30 + [0] * 10 + [0.5] * 10
    a, b = win_rate(scores, method="bootstrap", seed=1), win_rate(scores, method="bootstrap", seed=1)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert a.ci_low < 0.7 < a.ci_high and a.ci_high - a.ci_low < 0.3


def test_unparseable_verdicts_are_left_out_and_counted():
    result = win_rate([1, None, 0, None], length_diff=[3, 1, -2, 0])
    assert result.n == 2 and result.unparseable == 2 and result.win_rate == 0.5


def test_length_control_removes_a_pure_length_preference():
    # The judge prefers the longer answer (P(win) = sigmoid(2 d)) and the model is longer on average:
    # the raw win rate is high, the win rate at equal lengths is 1/2.
    rng = np.random.default_rng(0)
    d = rng.normal(1.0, 1.0, 3000)
    scores = (rng.random(3000) < 1 / (1 + np.exp(-2 * d))).astype(float)
    result = win_rate(scores.tolist(), d.tolist())
    assert result.win_rate > 0.72
    assert result.lc_win_rate == pytest.approx(0.5, abs=0.04)
    assert result.lc_ci_low < 0.5 < result.lc_ci_high and result.length_coefficient > 1.5


def test_length_control_keeps_a_preference_that_is_not_about_length():
    rng = np.random.default_rng(1)
    d = rng.normal(0.0, 5.0, 3000)
    scores = (rng.random(3000) < 0.75).astype(float)
    rate, coefficient = length_controlled(scores, d)
    assert rate == pytest.approx(scores.mean(), abs=0.02) and abs(coefficient) < 0.1
    assert length_controlled([1, 0, 1, 0], [0, 0, 0, 0])[0] == pytest.approx(0.5)  # no length spread


def test_errors():
    with pytest.raises(ConfigError, match="wilson or bootstrap"):
        win_rate([1], method="normal")
    with pytest.raises(ConfigError, match="at least one"):
        win_rate([None])


def test_a_plain_callable_judge_alternates_positions():
    seen = []

    def first_wins(prompt, a, b):
        seen.append((a, b))
        return "a"  # pure position bias

    scores = judge_scores(first_wins, ["p"] * 4, ["ours"] * 4, ["theirs"] * 4)
    assert scores == [1.0, 0.0, 1.0, 0.0]  # the bias cancels: a win rate of 1/2
    assert seen[0] == ("ours", "theirs") and seen[1] == ("theirs", "ours")
    with pytest.raises(ConfigError, match="'a', 'b' or 'tie'"):
        judge_scores(lambda p, a, b: "maybe", ["p"], ["x"], ["y"])


class LengthJudge:
    """A directalign.judges PairwiseJudge: the longer response wins; "??" makes it unparseable."""

    name, order_invariant = "length", False

    def judge(self, prompts, responses_a, responses_b):
        return [self.verdict(a, b) for a, b in zip(responses_a, responses_b, strict=True)]

    @staticmethod
    def verdict(a, b):
        if "??" in a + b:
            return Verdict(None)
        return Verdict("A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie")


def test_a_pairwise_judge_object_is_judged_in_both_orders():
    ours, theirs = ["long answer", "x", "same", "??"], ["short", "longer", "same", "y"]
    scores = judge_scores(LengthJudge(), ["p"] * 4, ours, theirs)
    assert scores == [1.0, 0.0, 0.5, None]


def test_reward_scores_compare_rewards():
    def reward(prompts, completions, **columns):
        return [float(len(c)) for c in completions]

    scores, ours, theirs = reward_scores(reward, ["p"] * 3, ["aaa", "a", "aa"], ["a", "aaa", "aa"])
    assert scores == [1.0, 0.0, 0.5] and ours == [3.0, 1.0, 2.0] and theirs == [1.0, 3.0, 2.0]
