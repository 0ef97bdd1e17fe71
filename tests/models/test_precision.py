"""bf16 storage of the frozen linear weights: the same numbers as autocast's per-call casts, fp32 where it trains."""

from __future__ import annotations

import torch

from directalign.data.batching import build_batch
from directalign.models.logprobs import ResponseLogProbs, sequence_logps
from directalign.models.precision import store_frozen_linears_in
from tests.conftest import tiny_llama
from tests.perf.helpers import lora_with_nonzero_adapters, random_records


def _logps_and_grads(model, batch, autocast: bool):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logps = sequence_logps(ResponseLogProbs(model, 7)(batch), batch)
    (logps * torch.linspace(-1, 1, logps.numel())).sum().backward()
    return logps.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_bf16_frozen_weights_reproduce_autocast_and_keep_trainable_weights_fp32():
    batch = build_batch(random_records(n=3, k=2), 0, "packed", 200)
    reference = lora_with_nonzero_adapters(tiny_llama())
    expected = _logps_and_grads(reference, batch, autocast=True)

    model = lora_with_nonzero_adapters(tiny_llama())
    cast = store_frozen_linears_in(model, torch.bfloat16)
    frozen_linear = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    assert frozen_linear.weight.dtype == torch.bfloat16
    assert cast == sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)
                       and m.weight.dtype == torch.bfloat16)
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)  # LoRA: fp32 for AdamW
    assert model.get_output_embeddings().weight.dtype == torch.float32  # the tied head / embedding
    logps, grads = _logps_and_grads(model, batch, autocast=True)
    torch.testing.assert_close(logps, expected[0], atol=1e-6, rtol=0)
    for name, grad in expected[1].items():
        torch.testing.assert_close(grads[name], grad, atol=1e-6, rtol=1e-5)


def test_a_bf16_model_also_runs_without_autocast():
    batch = build_batch(random_records(n=2, k=2), 0, "shared")
    model = lora_with_nonzero_adapters(tiny_llama())
    with torch.no_grad():
        fp32 = sequence_logps(ResponseLogProbs(model)(batch), batch)
    store_frozen_linears_in(model, torch.bfloat16)
    store_frozen_linears_in(model, torch.bfloat16)  # idempotent: one pair of casting hooks per layer
    up_proj = model.base_model.model.model.layers[0].mlp.up_proj
    assert len(up_proj._forward_pre_hooks) == len(up_proj._forward_hooks) == 1
    with torch.no_grad():
        bf16 = sequence_logps(ResponseLogProbs(model)(batch), batch)  # generation and eval call it like this
        generated = model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=3, do_sample=False)
    assert bf16.dtype == torch.float32 and generated.shape == (1, 6)
    assert 0 < (bf16 - fp32).abs().max() < 0.05
