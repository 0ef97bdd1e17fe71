"""This machine's measured matmul rate, square and at a model's own shapes: the denominators of MFU and HFU.

A 4096 x 4096 matmul is the machine's best case; the decoder's matmuls are skinnier (SmolLM2-135M: hidden 576,
k/v 192, intermediate 1536, vocabulary 49152) and run on as many rows as a micro-batch has tokens, so their rate is
what a step can reach at most. `model_shape_flops` times, in the given precision, every linear layer's forward
product and its input-gradient product (the frozen base weights need no weight gradient) for a row of `tokens`
tokens, and the LM head's for `head_rows` rows, and returns their FLOPs over their time: the rate a LoRA step of
that shape would run at if it were nothing but its matmuls.

    python benchmarks/matmul_rate.py [--tokens 1296] [--head-rows 211]
"""

from __future__ import annotations

import argparse
import time

import torch


def matmul_flops(dtype_name: str, size: int = 4096, repeats: int = 5) -> float:
    """FLOP/s of a size x size torch.matmul in `dtype_name`: the best of `repeats` after one warm-up (on a
    shared machine the best is the one least disturbed by other jobs)."""
    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def linear_shapes(config) -> list[tuple[int, int, int]]:
    """(in, out, count) of one decoder layer's linear layers, from a transformers Llama-family config."""
    hidden, inter = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    return [(hidden, config.num_attention_heads * head_dim, 1), (hidden, kv, 2),  # q; k and v
            (config.num_attention_heads * head_dim, hidden, 1), (hidden, inter, 2), (inter, hidden, 1)]


def _time(rows: int, n_in: int, n_out: int, dtype: torch.dtype, repeats: int) -> float:
    """Best time of a forward (rows, in) x (in, out) plus the input-gradient (rows, out) x (out, in) product."""
    x, weight, grad = (torch.randn(rows, n_in, dtype=dtype), torch.randn(n_out, n_in, dtype=dtype),
                       torch.randn(rows, n_out, dtype=dtype))
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        start = time.perf_counter()
        torch.nn.functional.linear(x, weight)
        grad @ weight
        best = min(best, time.perf_counter() - start)
    return best


def model_shape_flops(config, tokens: int, head_rows: int, dtype_name: str = "float32", repeats: int = 3) -> float:
    """FLOP/s of one layer's linear products and the LM head's, forward and input gradient (module docstring)."""
    dtype = getattr(torch, dtype_name)
    flops = seconds = 0.0
    for n_in, n_out, count in linear_shapes(config):
        flops += count * config.num_hidden_layers * 4 * tokens * n_in * n_out
        seconds += count * config.num_hidden_layers * _time(tokens, n_in, n_out, dtype, repeats)
    if head_rows:
        flops += 4 * head_rows * config.hidden_size * config.vocab_size
        seconds += _time(head_rows, config.hidden_size, config.vocab_size, dtype, repeats)
    return flops / seconds


def main() -> int:
    from transformers import AutoConfig

    from directalign.models.loading import resolve_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=1296, help="tokens of a micro-batch's row")
    parser.add_argument("--head-rows", type=int, default=211, help="response tokens through the LM head")
    args = parser.parse_args()
    config = AutoConfig.from_pretrained(resolve_model("smollm2-135m-instruct"))
    print(f"fp32 4096x4096 matmul: {matmul_flops('float32') / 1e9:.0f} GFLOP/s")
    rate = model_shape_flops(config, args.tokens, args.head_rows)
    print(f"fp32 at SmolLM2-135M's shapes, {args.tokens} tokens, {args.head_rows} head rows: {rate / 1e9:.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
