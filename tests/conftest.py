"""Shared fixtures: tiny randomly initialised models built from a config (no download)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("DIRECTALIGN_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


def tiny_llama(vocab_size: int = 128, seed: int = 0, attn_implementation: str = "sdpa", **overrides):
    """A 2-layer Llama from a config, randomly initialised with a fixed seed; `overrides` replace any field."""
    torch.manual_seed(seed)
    fields = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
                  pad_token_id=0, eos_token_id=1, bos_token_id=2)
    config = LlamaConfig(**{**fields, **overrides})
    config._attn_implementation = attn_implementation
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def tiny_model():
    return tiny_llama()


@pytest.fixture
def hh_rlhf_file() -> Path:
    path = shared_data_dir() / "hh-rlhf-harmless-test" / "test.jsonl.gz"
    if not path.is_file():
        pytest.skip(f"shared data not found at {path} (set DIRECTALIGN_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The embedded model's tokenizer (real chat template), read straight from the GGUF file in about 5 s."""
    from transformers import AutoTokenizer

    from directalign.models.loading import DEFAULT_MODEL, EMBEDDED_MODELS, _gguf_path

    gguf = _gguf_path(EMBEDDED_MODELS[DEFAULT_MODEL])
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_tokenizer) -> Path:
    """A tiny random Llama with the real tokenizer, saved as a local folder any --model option accepts."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama(vocab_size=len(smollm2_tokenizer), pad_token_id=None).save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    return folder
