"""Attention for the shared and packed layouts that computes only the blocks their mask lets through.

Their mask (directalign.data.batching) is block-sparse: a record attends only within itself, its prompt causally,
each response to the prompt and causally to itself. A dense kernel given that mask still computes every T x T
score of the row, so a row of two records of 300 tokens pays for 600^2 scores of which under a quarter count.
segment_attention runs, per record, one causal SDPA call for the prompt (the fused kernel skips the blocks above
the diagonal) and one for all its responses over [prompt, responses] keys with the record's small response mask
(RecordSpan.response_mask), so the scores computed are the record's own. It is registered with transformers as
"directalign_segments"; ResponseLogProbs switches an sdpa model to it for the duration of a forward over such a
batch, and any call without record spans (generation) falls back to transformers' SDPA.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from directalign.data.batching import RecordSpan

SEGMENT_ATTENTION = "directalign_segments"


def segment_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    record_spans: list[list[RecordSpan]] | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """query (rows, heads, T, d), key / value (rows, kv_heads, T, d) -> (rows, T, heads, d), as transformers wants."""
    if record_spans is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    gqa = getattr(module, "num_key_value_groups", 1) > 1
    if query.device.type == "cpu":
        # In fp32 even under bf16 autocast: the CPU kernel's bf16 backward takes twice its fp32 time.
        with torch.autocast("cpu", enabled=False):
            out = _record_attention(query.float(), key.float(), value.float(), record_spans, dropout, scaling, gqa)
    else:
        out = _record_attention(query, key, value, record_spans, dropout, scaling, gqa)
    return out.transpose(1, 2).contiguous().to(query.dtype), None


def _record_attention(query, key, value, record_spans, dropout, scaling, gqa: bool) -> torch.Tensor:
    rows = []
    for row, spans in enumerate(record_spans):
        q, k, v = query[row : row + 1], key[row : row + 1], value[row : row + 1]
        used = spans[-1].end if spans else 0
        sizes = [n for s in spans for n in (s.prompt_end - s.start, s.end - s.prompt_end)]
        # split, not slices, for the queries: its backward concatenates instead of zero-filling per piece.
        q_parts = q.split([*sizes, q.shape[2] - used], dim=2)
        pieces = []
        for i, s in enumerate(spans):
            k_record, v_record = k[:, :, s.start : s.end], v[:, :, s.start : s.end]
            prompt = s.prompt_end - s.start
            if prompt:
                pieces.append(F.scaled_dot_product_attention(
                    q_parts[2 * i], k_record[:, :, :prompt], v_record[:, :, :prompt], dropout_p=dropout,
                    is_causal=True, scale=scaling, enable_gqa=gqa,
                ))
            pieces.append(F.scaled_dot_product_attention(
                q_parts[2 * i + 1], k_record, v_record, attn_mask=s.response_mask, dropout_p=dropout, scale=scaling,
                enable_gqa=gqa,
            ))
        if used < q.shape[2]:  # padding: its output is never read
            pieces.append(torch.zeros_like(q_parts[-1]))
        rows.append(torch.cat(pieces, dim=2))
    return torch.cat(rows)


@contextlib.contextmanager
def attention_implementation(config, name: str):
    """Run the model with another registered attention implementation, then restore its own."""
    saved = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = saved


AttentionInterface.register(SEGMENT_ATTENTION, segment_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(SEGMENT_ATTENTION, sdpa_mask)
