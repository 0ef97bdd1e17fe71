"""gradient_checkpointing: the same gradients as without it, in every batch layout."""

from __future__ import annotations

import copy

import pytest
import torch

from directalign.config import load_config
from directalign.data.batching import build_batch
from directalign.data.types import TokenizedRecord
from directalign.models.logprobs import ResponseLogProbs, sequence_logps
from directalign.models.policy import enable_checkpointing
from tests.conftest import tiny_llama

RECORDS = [
    TokenizedRecord([5, 6, 7], [[8, 9, 10], [11, 12]], pairs=[(0, 1)]),
    TokenizedRecord([13, 14], [[15, 16], [17, 18, 19, 20]], pairs=[(1, 0)]),
]


def _grads(model, layout: str) -> dict[str, torch.Tensor]:
    policy = ResponseLogProbs(model).train()
    batch = build_batch(RECORDS, 0, layout, max_tokens_per_row=32)
    sequence_logps(policy(batch), batch).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("layout", ["padded", "shared", "packed"])
def test_checkpointed_gradients_equal_plain_ones(layout):
    plain = tiny_llama(seed=1)
    checkpointed = copy.deepcopy(plain)
    enable_checkpointing(load_config("train", overrides={"gradient_checkpointing": True}), checkpointed)
    assert checkpointed.model.gradient_checkpointing
    expected, got = _grads(plain, layout), _grads(checkpointed, layout)
    assert expected.keys() == got.keys() and len(got) > 10
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)
