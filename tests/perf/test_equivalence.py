"""The fast paths compute what the plain path computes: layouts, the chunked head and bf16 autocast, on log-probs
and on gradients (full model and LoRA), with k >= 2 responses per prompt and with real-tokenizer records."""

from __future__ import annotations

import pytest
import torch

from directalign.data.batching import build_batch
from directalign.data.formats import load_records
from directalign.data.tokenize import tokenize_records
from directalign.errors import ConfigError
from directalign.models.kernels import check_device
from directalign.models.logprobs import ResponseLogProbs, check_attention, sequence_logps
from tests.conftest import tiny_llama
from tests.perf.helpers import lora_with_nonzero_adapters as lora
from tests.perf.helpers import random_records


def logps_and_grads(model, records, layout, chunk_size=7, row_budget=60):
    """Per-response log-probs and the gradient of a fixed weighting of them, for every trainable parameter."""
    model.zero_grad()
    batch = build_batch(records, 0, layout, row_budget)
    logps = sequence_logps(ResponseLogProbs(model, chunk_size)(batch), batch)
    weights = torch.linspace(-1.0, 1.0, logps.numel())
    (logps * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return logps.detach(), grads


def assert_same(got, expected, atol=1e-5):
    # Sequence log-probs reach -1000 on real records, where one fp32 ulp is 6e-5: the reduction order of the
    # layouts' kernels (which differs between CPU kinds) moves them by an ulp or two, hence the relative term.
    torch.testing.assert_close(got[0], expected[0], atol=atol, rtol=1e-6)
    assert got[1].keys() == expected[1].keys()
    for name in expected[1]:
        torch.testing.assert_close(got[1][name], expected[1][name], atol=atol, rtol=1e-4, msg=name)


@pytest.mark.parametrize("layout", ["shared", "packed"])
@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("adapter", [False, True])
def test_layouts_give_padded_logps_and_gradients(layout, k, adapter):
    model = lora(tiny_llama()) if adapter else tiny_llama()
    records = random_records(n=5, k=k)
    assert_same(logps_and_grads(model, records, layout), logps_and_grads(model, records, "padded"))


def test_chunked_head_gives_plain_logps_and_gradients_through_the_model():
    model = lora(tiny_llama())
    records = random_records(n=4, k=3)
    assert_same(logps_and_grads(model, records, "shared", chunk_size=5),
                logps_and_grads(model, records, "shared", chunk_size=None))


def test_real_tokenizer_records(smollm2_tokenizer, hh_rlhf_file):
    records = load_records(hh_rlhf_file).records[:4]
    tokenized = tokenize_records(records, smollm2_tokenizer, max_length=256, max_prompt_length=192).records
    model = lora(tiny_llama(vocab_size=len(smollm2_tokenizer), pad_token_id=None))
    padded = logps_and_grads(model, tokenized, "padded", chunk_size=64)
    for layout in ("shared", "packed"):
        assert_same(logps_and_grads(model, tokenized, layout, chunk_size=64, row_budget=2048), padded)


def test_bf16_autocast_keeps_the_head_in_fp32_and_stays_close():
    model = lora(tiny_llama())
    records = random_records(n=4, k=2)
    batch = build_batch(records, 0, "shared")
    policy = ResponseLogProbs(model)
    with torch.no_grad():
        fp32 = policy(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = policy(batch)
    assert bf16.dtype == torch.float32
    assert 0 < (bf16 - fp32).abs().max() < 0.05


def test_attention_implementations_that_cannot_take_the_mask_are_refused():
    check_attention("flash_attention_2", "padded")
    check_attention("eager", "packed")
    with pytest.raises(ConfigError, match="flash_attention_2 cannot take the shared layout's mask"):
        check_attention("flash_attention_2", "shared")
    check_attention("flex_attention", "packed")  # a BlockMask, on CUDA
    with pytest.raises(ConfigError, match="flex_attention needs a CUDA device"):
        check_device("flex_attention", cuda=False)
    check_device("flex_attention", cuda=True)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (no FlexAttention CPU backward)")


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("layout", ["shared", "packed"])
@pytest.mark.parametrize("impl", ["flex_attention", "sdpa"])
def test_cuda_layouts_match_the_padded_layout(layout, impl):
    records = random_records(n=5, k=3, seed=5)
    model = lora(tiny_llama(attn_implementation=impl)).cuda()
    got = logps_and_grads_on(model, records, layout, "cuda")
    padded = lora(tiny_llama(attn_implementation="sdpa")).cuda()  # the same seeds: the same weights
    assert_same(got, logps_and_grads_on(padded, records, "padded", "cuda"), atol=1e-4)


@cuda
@pytest.mark.cuda
def test_cuda_bf16_autocast_stays_near_fp32():
    records = random_records(n=4, k=2, seed=6)
    model = lora(tiny_llama()).cuda()
    policy = ResponseLogProbs(model, chunk_size=7)
    batch = build_batch(records, 0, "shared").to("cuda")
    with torch.no_grad():
        fp32 = policy(batch)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = policy(batch)
    assert bf16.dtype == torch.float32 and 0 < (bf16 - fp32).abs().max() < 0.05


def logps_and_grads_on(model, records, layout, device, chunk_size=7, row_budget=60):
    model.zero_grad()
    batch = build_batch(records, 0, layout, row_budget).to(device)
    logps = sequence_logps(ResponseLogProbs(model, chunk_size)(batch), batch)
    weights = torch.linspace(-1.0, 1.0, logps.numel(), device=device)
    (logps * weights).sum().backward()
    grads = {n: p.grad.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    return logps.detach().cpu(), grads


def test_sdpa_models_run_the_per_record_attention(monkeypatch):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from directalign.models.attention import SEGMENT_ATTENTION

    calls = []
    real = ALL_ATTENTION_FUNCTIONS[SEGMENT_ATTENTION]

    def counted(*args, record_spans=None, **kwargs):
        calls.append(record_spans is not None)
        return real(*args, record_spans=record_spans, **kwargs)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, SEGMENT_ATTENTION, counted)
    model = tiny_llama()
    for layout in ("padded", "shared", "packed"):
        batch = build_batch(random_records(n=3, k=3), 0, layout, 60)
        ResponseLogProbs(model)(batch)
    assert calls == [True] * 4  # two layers, for the shared and the packed batch; padded rows use plain SDPA
    assert model.config._attn_implementation == "sdpa"
