"""Several reward models as one: per-axis models with changeable weights, and disagreement-penalised ensembles.

A member is anything that scores responses: a RewardModel (or any object with score(prompts, responses)) or a
reward function f(prompts, completions, **columns). Both combinations below score each member once
(`member_scores`) and combine those scores in `combine`, so new weights or a new penalty re-combine stored
scores instead of scoring again, and no member is retrained.

- StackedRewardModel: helpfulness, harmlessness, conciseness, ... each its own model; score = sum_k w_k z_k.
- EnsembleRewardModel: members of the same axis (seeds, data subsets); score = mean_k z_k - lambda std_k z_k,
  which ranks lower where the members disagree, the responses a policy would exploit (Coste et al. 2024,
  "Reward Model Ensembles Help Mitigate Overoptimization", uncertainty-weighted optimisation; Eisenstein et
  al. 2023, "Helping or Herding?").
z_k is the member's raw score, or (r_k - mean_k) / std_k once `calibrate` has measured the member on a sample,
since reward models' scales are arbitrary. Both can then adjust for length: length_penalty subtracts
alpha * length (in words, characters or tokens), and calibrate(remove_length_bias=True) measures the slope of
the combined score on length over the sample and removes it, score - b (length - mean length), the part of
the score length alone explains (Singhal et al. 2023, "A Long Way to Go: Investigating Length Correlations in
RLHF").
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from directalign.errors import ConfigError
from directalign.generation.rewards import LENGTH_UNITS, RewardFunction, checked_scores, completion_text

Member = Any  # an object with score(prompts, responses), or a reward function


class _Combination:
    def __init__(
        self,
        members: Mapping[str, Member],
        length_penalty: float = 0.0,
        length_unit: str = "words",
        tokenizer: Any = None,
    ):
        if not members:
            raise ConfigError("a combined reward model needs at least one member")
        if length_unit not in LENGTH_UNITS:
            raise ConfigError(f"length_unit must be one of {', '.join(LENGTH_UNITS)}, got {length_unit!r}")
        if length_unit == "tokens" and tokenizer is None:
            raise ConfigError("length_unit='tokens' needs a tokenizer")
        self.members = dict(members)
        self.length_penalty, self.length_unit, self.tokenizer = length_penalty, length_unit, tokenizer
        self.normalization: dict[str, tuple[float, float]] = {}
        self.length_slope, self.length_mean = 0.0, 0.0

    def member_scores(self, prompts: Sequence, responses: Sequence, **columns) -> dict[str, list[float]]:
        """Each member's raw score of each response, by member name."""
        return {name: _score(name, member, prompts, responses, columns) for name, member in self.members.items()}

    def combine(self, member_scores: Mapping[str, Sequence[float]], responses: Sequence) -> list[float]:
        """The combined score from stored member scores (normalised, combined, length-adjusted)."""
        combined = self._combine(self._matrix(member_scores))
        if self.length_penalty or self.length_slope:
            lengths = np.array(self.lengths(responses), dtype=float)
            combined = combined - self.length_penalty * lengths - self.length_slope * (lengths - self.length_mean)
        return combined.tolist()

    def score(self, prompts: Sequence, responses: Sequence, **columns) -> list[float]:
        return self.combine(self.member_scores(prompts, responses, **columns), responses)

    def calibrate(self, prompts: Sequence, responses: Sequence, remove_length_bias: bool = False, **columns):
        """Standardise each member by its mean and std on this sample; optionally remove the length slope."""
        raw = self.member_scores(prompts, responses, **columns)
        self.normalization = {
            name: (float(np.mean(scores)), float(np.std(scores)) or 1.0) for name, scores in raw.items()
        }
        self.length_slope = self.length_mean = 0.0
        if remove_length_bias:
            lengths = np.array(self.lengths(responses), dtype=float)
            combined = self._combine(self._matrix(raw))
            variance = float(np.var(lengths))
            if variance > 0:
                self.length_slope = float(np.cov(lengths, combined, bias=True)[0, 1] / variance)
                self.length_mean = float(lengths.mean())
        return self

    def lengths(self, responses: Sequence) -> list[int]:
        texts = [completion_text(r) for r in responses]
        if self.length_unit == "words":
            return [len(t.split()) for t in texts]
        if self.length_unit == "chars":
            return [len(t) for t in texts]
        return [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]

    def as_reward_function(self, name: str | None = None) -> RewardFunction:
        """f(prompts, completions, **columns) -> list[float], usable wherever a reward function is."""

        def reward(prompts, completions, **columns) -> list[float]:
            return self.score(prompts, completions, **columns)

        reward.__name__ = reward.__qualname__ = name or type(self).__name__
        return reward

    def _matrix(self, member_scores: Mapping[str, Sequence[float]]) -> np.ndarray:
        """(members, responses): each member's scores, standardised when calibrated."""
        rows = []
        for name in self.members:
            mean, std = self.normalization.get(name, (0.0, 1.0))
            rows.append((np.asarray(member_scores[name], dtype=float) - mean) / std)
        return np.array(rows)

    def _combine(self, matrix: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class StackedRewardModel(_Combination):
    """Per-axis members combined with weights: score = sum_k w_k z_k (module docstring).

    weights default to 1 for every member; `with_weights` gives a copy with new ones, same members.
    """

    def __init__(self, members: Mapping[str, Member], weights: Mapping[str, float] | None = None, **length_options):
        super().__init__(members, **length_options)
        self.weights = self._checked({name: 1.0 for name in self.members} | dict(weights or {}))

    def with_weights(self, **weights: float) -> StackedRewardModel:
        """A copy sharing the members (nothing is rescored or retrained) with some weights changed."""
        stacked = copy.copy(self)
        stacked.weights = self._checked(self.weights | weights)
        return stacked

    def _checked(self, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(self.members))
        if unknown:
            raise ConfigError(f"weights for unknown members {unknown}; the members are {sorted(self.members)}")
        return {name: float(weights[name]) for name in self.members}

    def _combine(self, matrix: np.ndarray) -> np.ndarray:
        return np.array([self.weights[name] for name in self.members]) @ matrix


class EnsembleRewardModel(_Combination):
    """Members of one axis: score = mean_k z_k - disagreement_penalty * std_k z_k (population std)."""

    def __init__(
        self, members: Mapping[str, Member] | Sequence[Member], disagreement_penalty: float = 1.0, **length_options
    ):
        if not isinstance(members, Mapping):
            members = {f"member_{k}": member for k, member in enumerate(members)}
        if disagreement_penalty < 0:
            raise ConfigError(f"disagreement_penalty must be >= 0, got {disagreement_penalty}")
        super().__init__(members, **length_options)
        self.disagreement_penalty = disagreement_penalty

    def _combine(self, matrix: np.ndarray) -> np.ndarray:
        return matrix.mean(axis=0) - self.disagreement_penalty * matrix.std(axis=0)


def _score(name: str, member: Member, prompts: Sequence, responses: Sequence, columns: dict) -> list[float]:
    if hasattr(member, "score"):
        scores = member.score(prompts, responses)
    else:
        scores = member(prompts, responses, **columns)
    return checked_scores(name, scores, len(responses))
