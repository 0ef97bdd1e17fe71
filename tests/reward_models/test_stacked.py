"""Stacked (weighted per-axis) and ensemble (disagreement-penalised) reward models, with length adjustments."""

import numpy as np
import pytest

from directalign.errors import ConfigError
from directalign.reward_models.stacked import EnsembleRewardModel, StackedRewardModel


class Fixed:
    """A member whose score of response i is scores[i]; counts how often it is asked."""

    def __init__(self, scores):
        self.scores, self.calls = scores, 0

    def score(self, prompts, responses):
        self.calls += 1
        return list(self.scores)


def words(prompts, completions, **columns):
    return [float(len(c.split())) for c in completions]


RESPONSES = ["a", "a b", "a b c d"]


def test_weights_change_without_rescoring():
    helpful, harmless = Fixed([1.0, 2.0, 3.0]), Fixed([0.0, 1.0, -1.0])
    stacked = StackedRewardModel(
        {"helpfulness": helpful, "harmlessness": harmless, "words": words}, weights={"words": 0.0}
    )
    assert stacked.score(["p"] * 3, RESPONSES) == pytest.approx([1.0, 3.0, 2.0])
    scores = stacked.member_scores(["p"] * 3, RESPONSES)
    assert scores == {"helpfulness": [1.0, 2.0, 3.0], "harmlessness": [0.0, 1.0, -1.0], "words": [1.0, 2.0, 4.0]}
    safer = stacked.with_weights(harmlessness=3.0, words=0.5)
    assert safer.combine(scores, RESPONSES) == pytest.approx([1 + 0 + 0.5, 2 + 3 + 1, 3 - 3 + 2])
    assert stacked.weights["harmlessness"] == 1.0  # the original keeps its weights
    assert helpful.calls == 2 and safer.members["helpfulness"] is helpful
    with pytest.raises(ConfigError, match="unknown members \\['honesty'\\]"):
        stacked.with_weights(honesty=1.0)


def test_ensemble_is_mean_minus_lambda_std():
    members = [Fixed([1.0, 0.0, 2.0]), Fixed([1.0, 2.0, 2.0]), Fixed([1.0, 1.0, -1.0])]
    matrix = np.array([m.scores for m in members])
    expected = matrix.mean(axis=0) - 0.5 * matrix.std(axis=0)
    ensemble = EnsembleRewardModel(members, disagreement_penalty=0.5)
    assert ensemble.score(["p"] * 3, RESPONSES) == pytest.approx(expected.tolist())
    assert list(ensemble.members) == ["member_0", "member_1", "member_2"]
    # unanimous members lose nothing; disagreeing ones do, even when their mean is higher
    assert ensemble.score(["p"] * 3, RESPONSES)[0] == 1.0
    plain = EnsembleRewardModel(members, disagreement_penalty=0.0).score(["p"] * 3, RESPONSES)
    assert plain == pytest.approx(matrix.mean(axis=0).tolist())
    with pytest.raises(ConfigError, match="disagreement_penalty must be >= 0"):
        EnsembleRewardModel(members, disagreement_penalty=-1)


def test_calibration_standardises_members_and_removes_the_length_slope():
    big, small = Fixed([100.0, 200.0, 300.0]), Fixed([0.1, 0.3, 0.2])
    stacked = StackedRewardModel({"big": big, "small": small}).calibrate(["p"] * 3, RESPONSES)
    z_big, z_small = np.array([-1.0, 0.0, 1.0]) * np.sqrt(1.5), np.array([-1.0, 1.0, 0.0]) * np.sqrt(1.5)
    assert stacked.score(["p"] * 3, RESPONSES) == pytest.approx((z_big + z_small).tolist())

    longer_is_better = StackedRewardModel({"len": words}).calibrate(["p"] * 3, RESPONSES, remove_length_bias=True)
    assert longer_is_better.score(["p"] * 3, RESPONSES) == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)


def test_length_penalty_and_reward_function_interface():
    stacked = StackedRewardModel({"h": Fixed([1.0, 1.0, 1.0])}, length_penalty=0.25, length_unit="chars")
    fn = stacked.as_reward_function("safe_and_short")
    assert fn.__name__ == "safe_and_short"
    assert fn(["p"] * 3, RESPONSES, answer=[0, 0, 0]) == pytest.approx([1 - 0.25, 1 - 0.75, 1 - 1.75])
    with pytest.raises(ConfigError, match="length_unit='tokens' needs a tokenizer"):
        StackedRewardModel({"h": words}, length_unit="tokens")
    with pytest.raises(ConfigError, match="returned 2 scores for 3 completions"):
        StackedRewardModel({"bad": lambda p, c, **k: [1.0, 2.0]}).score(["p"] * 3, RESPONSES)
