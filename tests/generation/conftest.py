"""Fixtures for generation tests: a tiny random Llama over the embedded SmolLM2 tokenizer's vocabulary."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_llama


@pytest.fixture(scope="module")
def tiny_policy(smollm2_tokenizer):
    """A 2-layer Llama over SmolLM2's vocabulary; <|im_end|> (id 2) is its eos, as in SmolLM2.

    initializer_range 0.2 (not 0.02) makes greedy outputs depend on the prompt instead of repeating one token,
    so that padding and batching mistakes change what comes out.
    """
    return tiny_llama(vocab_size=len(smollm2_tokenizer), hidden_size=64, intermediate_size=128,
                      num_key_value_heads=4, initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=2)
