"""How the cost of a DPO training step grows with sequence length, batch and model size, against this machine's
measured matmul rate.

    python benchmarks/cost_scaling.py [--models 135m 360m] [--lengths 128 256 512] [--batches 1 2 4] [--reps 2]

A step is directalign's policy forward and backward (LoRA r 16 / alpha 32 on q_proj and v_proj, fp32) over one
micro-batch in the packed layout (its pairs in one row, each prompt once with its chosen and rejected responses
after it), the reference's log-probs read from the cache, as in a run with precompute_ref_log_probs. Records are
synthetic: `--lengths` is the tokens of prompt + one response, 3/4 prompt and 1/4 response, so a pair puts
5/4 x length tokens through the decoder; `--batches` is the pairs in the micro-batch.

Models: 135m is the embedded SmolLM2-135M-Instruct; 360m and 1.7b are SmolLM2-360M's and SmolLM2-1.7B's shapes
(hidden size, layers, heads, intermediate size, the same vocabulary), randomly initialised from a config: a step's
cost depends on the shapes, not on the weights' values.

FLOPs count the matmuls of the step (attention scores excluded): 4 x B x T + 4 x H x R, with B the decoder's
parameters (embedding excluded), T the row's tokens, H the LM head's parameters and R the response tokens (input
gradients only: the base weights are frozen; LoRA's products are negligible). The achieved rate is FLOPs / the
median step time; HFU divides it by the 4096 x 4096 fp32 matmul rate and by the rate at the model's own shapes for
that row (benchmarks/matmul_rate.py: each linear layer's forward and input-gradient product on T rows, the head's
on R), which is what the step could reach if it were nothing but its matmuls.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.matmul_rate import matmul_flops, model_shape_flops  # noqa: E402

# SmolLM2's larger siblings (their config.json on the Hub), as overrides of the 135M config.
SHAPES = {
    "135m": {},
    "360m": dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
                 num_key_value_heads=5, head_dim=64),
    "1.7b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                 num_key_value_heads=32, head_dim=64),
}


def build_policy(name: str):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from directalign.models.loading import DEFAULT_MODEL, load_model, resolve_model
    from directalign.models.logprobs import ResponseLogProbs

    if SHAPES[name]:
        config = AutoConfig.from_pretrained(resolve_model(DEFAULT_MODEL))
        for key, value in SHAPES[name].items():
            setattr(config, key, value)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    else:
        model = load_model()
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    return ResponseLogProbs(get_peft_model(model, lora)).train(), model.config


def records_of(length: int, batch: int, generator: torch.Generator):
    from directalign.data.types import TokenizedRecord

    prompt, response = length * 3 // 4, length // 4

    def ids(n):
        return torch.randint(100, 40000, (n,), generator=generator).tolist()

    return [TokenizedRecord(ids(prompt), [ids(response), ids(response)], [(0, 1)]) for _ in range(batch)]


def step_seconds(policy, records, reps: int) -> tuple[float, int, int]:
    """Median seconds of a step after one warm-up, the row's tokens and the response tokens."""
    from directalign.data.batching import build_batch
    from directalign.models.logprobs import sequence_logps

    tokens = sum(len(r.prompt_ids) + sum(map(len, r.response_ids)) for r in records)
    times = []
    for _ in range(reps + 1):
        start = time.perf_counter()
        batch = build_batch(records, 0, "packed", tokens)
        sequence_logps(policy(batch), batch).sum().backward()
        times.append(time.perf_counter() - start)
    policy.zero_grad(set_to_none=True)
    return statistics.median(times[1:]), batch.num_tokens, int(batch.gather_pos.numel())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["135m", "360m"], choices=sorted(SHAPES))
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args(argv)

    square = matmul_flops("float32")
    print(f"machine: {torch.get_num_threads()} threads; fp32 4096x4096 matmul {square / 1e9:.0f} GFLOP/s", flush=True)
    print(f"{'model':>5s} {'length':>6s} {'batch':>5s} {'tokens':>6s} {'step s':>7s} {'tokens/s':>8s} "
          f"{'GFLOP/s':>7s} {'HFU sq':>6s} {'shapes GFLOP/s':>14s} {'HFU shapes':>10s}", flush=True)
    generator = torch.Generator().manual_seed(0)
    for name in args.models:
        policy, config = build_policy(name)
        head = config.vocab_size * config.hidden_size
        body = sum(p.numel() for n, p in policy.named_parameters() if "lora_" not in n) - head
        for length in args.lengths:
            for batch in args.batches:
                seconds, tokens, responses = step_seconds(policy, records_of(length, batch, generator), args.reps)
                flops = 4 * body * tokens + 4 * head * responses
                rate = model_shape_flops(config, tokens, responses)
                achieved = flops / seconds
                print(f"{name:>5s} {length:6d} {batch:5d} {tokens:6d} {seconds:7.2f} {tokens / seconds:8.0f} "
                      f"{achieved / 1e9:7.0f} {achieved / square:6.1%} {rate / 1e9:14.0f} {achieved / rate:10.1%}",
                      flush=True)
        del policy
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
