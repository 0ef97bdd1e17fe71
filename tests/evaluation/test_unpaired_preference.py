"""Held-out metrics for unpaired (KTO) records: every (desirable, undesirable) combination counts as a pair."""

import pytest
import torch

from directalign.data.types import TokenizedRecord
from directalign.evaluation.preference import _pair_accuracy, evaluate_preferences
from directalign.models.logprobs import ResponseLogProbs
from directalign.models.reference import FrozenReference
from tests.conftest import tiny_llama


def test_pair_accuracy_is_the_auc_with_ties_half():
    labels = torch.tensor([True, False, True, False])
    assert _pair_accuracy(torch.tensor([3.0, 1.0, 2.0, 0.0]), labels) == 1.0
    assert _pair_accuracy(torch.tensor([0.0, 1.0, 2.0, 3.0]), labels) == pytest.approx(1 / 4)  # only 2 > 1
    assert _pair_accuracy(torch.zeros(4), labels) == 0.5


def test_unpaired_records_get_class_means_and_auc():
    records = [
        TokenizedRecord([5, 6], [[7, 8, 9]], pairs=[], labels=[True]),
        TokenizedRecord([10], [[11, 12]], pairs=[], labels=[False]),
        TokenizedRecord([13, 14, 15], [[16]], pairs=[], labels=[True]),
    ]
    policy, reference = ResponseLogProbs(tiny_llama(seed=0)), FrozenReference(tiny_llama(seed=1))
    result = evaluate_preferences(policy, records, pad_token_id=0, beta=0.1, reference=reference)
    assert (result["n_desirable"], result["n_undesirable"]) == (2, 1)
    assert result["mean_margin"] == pytest.approx(result["rewards_chosen"] - result["rewards_rejected"])
    assert result["implicit_accuracy"] in (0.0, 0.5, 1.0)  # two combinations
    alone = evaluate_preferences(policy, records[:1], pad_token_id=0, beta=0.1)
    assert "logp_accuracy" not in alone and alone["n_undesirable"] == 0  # one class: nothing to rank
