"""Precomputed reference log-probs: equal to the live reference, cached on disk, invalidated by what they depend on."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from directalign.config import load_config
from directalign.data.batching import build_batch
from directalign.engine.metrics import read_metrics
from directalign.models.logprobs import ResponseLogProbs
from directalign.models.reference import (
    AdapterReference,
    CachedReference,
    cached_reference_logps,
    compute_reference_logps,
    reference_cache_key,
    weights_fingerprint,
    with_reference_logps,
)
from directalign.training import reference_cache as reference_cache_module
from directalign.training.dpo import train
from tests.conftest import tiny_llama
from tests.perf.helpers import random_records


def lora_policy(seed: int = 0) -> ResponseLogProbs:
    model = get_peft_model(tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # a trained adapter: the policy differs from its reference
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return ResponseLogProbs(model, chunk_size=7)


def test_cached_logps_equal_the_live_reference():
    policy = lora_policy()
    reference = AdapterReference(policy)
    records = random_records(n=6, k=3)
    cached = with_reference_logps(
        records,
        compute_reference_logps(reference.sequence_logps, records, pad_token_id=0, batch_size=4, layout="packed"),
    )
    for start in (0, 2, 4):
        batch = build_batch(cached[start : start + 2], 0, "shared")
        live = reference.sequence_logps(batch)
        torch.testing.assert_close(CachedReference().sequence_logps(batch), live, atol=1e-5, rtol=0)
    with torch.no_grad():
        policy_logps = policy(batch)
    assert not torch.allclose(policy_logps.sum(), live.sum()), "the reference must run without the adapter"


def test_cache_is_reused_and_invalidated(tmp_path, monkeypatch):
    monkeypatch.setenv("DIRECTALIGN_HOME", str(tmp_path))
    records = random_records(n=3, k=2)
    counts = [len(r.response_ids) for r in records]
    calls = []

    def compute():
        calls.append(1)
        return [[float(i), float(i) + 0.5] for i in range(len(records))]

    weights = weights_fingerprint(tiny_llama())
    key = reference_cache_key(weights, records, max_length=64)
    first, hit_first = cached_reference_logps(key, compute, counts)
    second, hit_second = cached_reference_logps(key, compute, counts)
    assert (hit_first, hit_second, len(calls)) == (False, True, 1)
    assert second == first
    assert list((tmp_path / "ref-cache").glob("*.safetensors")) == [tmp_path / "ref-cache" / f"{key}.safetensors"]

    changed = records[:2] + [records[2].__class__(records[2].prompt_ids + [5], records[2].response_ids, [(0, 1)])]
    assert reference_cache_key(weights, changed, max_length=64) != key
    assert reference_cache_key(weights, records, max_length=65) != key
    assert reference_cache_key(weights_fingerprint(tiny_llama(seed=1)), records, max_length=64) != key
    # The adapters a reference runs without do not change its key.
    assert weights_fingerprint(lora_policy(seed=0).model) == weights_fingerprint(lora_policy(seed=1).model)


def _cfg(tiny_model_dir, out, **kw):
    base = dict(
        model=str(tiny_model_dir), output_dir=str(out), max_steps=3, logging_steps=1, builtin_train_pairs=12,
        builtin_eval_pairs=4, per_device_train_batch_size=2, gradient_accumulation_steps=2, learning_rate=1e-2,
        save_steps=0, seed=3, kl_prompts=0, resume=False,
    )
    return load_config("train", overrides={**base, **kw})


def _losses(run):
    return [e["loss"] for e in read_metrics(run / "metrics.jsonl") if e["split"] == "train"]


def test_training_reads_the_cache_and_matches_the_live_reference(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIRECTALIGN_HOME", str(tmp_path / "home"))
    train(_cfg(tiny_model_dir, tmp_path / "live"))
    train(_cfg(tiny_model_dir, tmp_path / "cold", precompute_ref_log_probs=True))
    assert "computed and cached" in capsys.readouterr().out

    def forbidden(*args, **kwargs):
        raise AssertionError("a reference forward ran although the cache holds every log-prob")

    monkeypatch.setattr(reference_cache_module, "compute_reference_logps", forbidden)
    monkeypatch.setattr(AdapterReference, "sequence_logps", forbidden)
    result = train(_cfg(tiny_model_dir, tmp_path / "warm", precompute_ref_log_probs=True))
    assert "read from the cache" in capsys.readouterr().out
    assert result.eval_after["mean_margin"] != 0.0
    assert _losses(tmp_path / "warm") == _losses(tmp_path / "cold")
    assert _losses(tmp_path / "cold") == pytest.approx(_losses(tmp_path / "live"), abs=1e-5)

    with pytest.raises(AssertionError, match="a reference forward ran"):  # other max lengths: another key
        train(_cfg(tiny_model_dir, tmp_path / "other", precompute_ref_log_probs=True, max_length=1000))
