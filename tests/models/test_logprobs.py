import pytest
import torch

from directalign.data.batching import build_batch
from directalign.data.types import TokenizedRecord
from directalign.models.logprobs import ResponseLogProbs, sequence_logps, token_logprobs
from tests.conftest import tiny_llama


def _records(seed=0, n=4, k=2):
    g = torch.Generator().manual_seed(seed)
    recs = []
    for i in range(n):
        plen = int(torch.randint(1, 12, (1,), generator=g))
        prompt = torch.randint(3, 128, (plen,), generator=g).tolist()
        responses = [
            torch.randint(3, 128, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
            for _ in range(k)
        ]
        pairs = [(a, b) for a in range(k) for b in range(a + 1, k)]
        recs.append(TokenizedRecord(prompt, responses, pairs, source=f"t:{i}"))
    return recs


def _unshared_logps(model, records):
    """Reference computation: each prompt + response alone through the plain model."""
    out = []
    for rec in records:
        for resp in rec.response_ids:
            ids = torch.tensor([rec.prompt_ids + resp])
            logits = model(input_ids=ids).logits[0].float().log_softmax(-1)
            p = len(rec.prompt_ids)
            out.append(sum(logits[p - 1 + k, t] for k, t in enumerate(resp)))
    return torch.stack(out)


@pytest.mark.parametrize("layout", ["padded", "shared", "packed"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("k", [2, 3])
def test_layouts_match_unshared_forward(layout, attn, k):
    model = tiny_llama(attn_implementation=attn)
    records = _records(k=k)
    expected = _unshared_logps(model, records)
    batch = build_batch(records, pad_token_id=0, layout=layout, max_tokens_per_row=40)
    got = sequence_logps(ResponseLogProbs(model, chunk_size=7)(batch), batch)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert batch.response_lengths.tolist() == [len(r) for rec in records for r in rec.response_ids]


def test_shared_layout_computes_fewer_tokens():
    records = _records(k=3)
    padded = build_batch(records, 0, "padded")
    shared = build_batch(records, 0, "shared")
    assert shared.num_tokens == sum(r.num_tokens for r in records)
    assert padded.num_tokens == sum(r.num_tokens_unshared for r in records)
    assert shared.num_tokens < padded.num_tokens


def test_pairs_index_responses_across_records():
    records = _records(n=2, k=3)
    batch = build_batch(records, 0, "shared")
    assert batch.chosen_index.tolist() == [0, 0, 1, 3, 3, 4]
    assert batch.rejected_index.tolist() == [1, 2, 2, 4, 5, 5]


def test_chunked_head_gradients_equal_plain():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=True)
    hidden = torch.randn(23, 16, requires_grad=True)
    labels = torch.randint(0, 50, (23,))
    weights = torch.randn(23)
    grads = []
    for chunk in (None, 5):
        head.zero_grad()
        hidden.grad = None
        (token_logprobs(hidden, head, labels, chunk) * weights).sum().backward()
        grads.append((hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone()))
    for plain, chunked in zip(*grads, strict=True):
        torch.testing.assert_close(chunked, plain, atol=1e-6, rtol=1e-5)


def test_frozen_head_gradients_from_the_forward_jacobian_equal_plain():
    # LoRA's case: the head is frozen, so the chunked head computes d logp / d h in the forward pass.
    torch.manual_seed(1)
    head = torch.nn.Linear(16, 50, bias=False).requires_grad_(False)
    hidden = torch.randn(23, 16, requires_grad=True)
    labels = torch.randint(0, 50, (23,))
    weights = torch.randn(23)
    grads, values = [], []
    for chunk in (None, 5):
        hidden.grad = None
        logps = token_logprobs(hidden, head, labels, chunk)
        (logps * weights).sum().backward()
        grads.append(hidden.grad.clone())
        values.append(logps.detach())
    torch.testing.assert_close(values[1], values[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)
    with torch.no_grad():  # no gradient wanted: nothing is computed for one
        torch.testing.assert_close(token_logprobs(hidden, head, labels, 5), values[0], atol=1e-6, rtol=1e-5)


def test_shared_layout_gradients_match_padded():
    model = tiny_llama()
    records = _records(k=2)
    grads = []
    for layout in ("padded", "shared"):
        model.zero_grad()
        batch = build_batch(records, 0, layout)
        sequence_logps(ResponseLogProbs(model)(batch), batch).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)
