"""How directalign's training step scales with prompt length and responses per prompt, per layout.

    python benchmarks/scaling.py [--prompt-lengths 64 256 512] [--ks 2 4] [--response-length 32] [--records 2]

One micro-batch = `--records` synthetic records (random token ids) of one prompt and k responses, every pair of
responses scored (k(k-1)/2 pairs, as ranked data gives). A step = policy forward + backward through the embedded
SmolLM2-135M-Instruct with LoRA r 16 on q_proj, v_proj (fp32), the reference log-probs read from a cache. The
padded layout computes what a TRL-style trainer computes (each response with its own copy of the prompt); shared
and packed compute each prompt once. Times are the median of --reps steps after one warm-up step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def step_seconds(policy, records, layout: str, reps: int) -> float:
    from directalign.data.batching import build_batch
    from directalign.models.logprobs import sequence_logps

    times = []
    for _ in range(reps + 1):
        start = time.perf_counter()
        batch = build_batch(records, 0, layout)
        sequence_logps(policy(batch), batch).sum().backward()
        times.append(time.perf_counter() - start)
    policy.zero_grad(set_to_none=True)
    return statistics.median(times[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompt-lengths", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--response-length", type=int, default=32)
    parser.add_argument("--records", type=int, default=2)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--layouts", nargs="+", default=["padded", "shared", "packed"])
    args = parser.parse_args(argv)

    from peft import LoraConfig, get_peft_model

    from directalign.data.batching import build_batch
    from directalign.data.types import TokenizedRecord
    from directalign.models.loading import load_model
    from directalign.models.logprobs import ResponseLogProbs

    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    policy = ResponseLogProbs(get_peft_model(load_model(), lora)).train()
    g = torch.Generator().manual_seed(0)
    print(f"{'prompt':>6s} {'k':>2s} {'layout':>7s} {'tokens':>7s} {'step s':>7s} {'responses/s':>11s} "
          f"{'pairs/s':>8s} {'vs padded':>9s}", flush=True)
    for prompt_length in args.prompt_lengths:
        for k in args.ks:
            records = [
                TokenizedRecord(
                    torch.randint(100, 40000, (prompt_length,), generator=g).tolist(),
                    [torch.randint(100, 40000, (args.response_length,), generator=g).tolist() for _ in range(k)],
                    [(a, b) for a in range(k) for b in range(a + 1, k)],
                )
                for _ in range(args.records)
            ]
            pairs = args.records * k * (k - 1) // 2
            baseline = None
            for layout in args.layouts:
                tokens = build_batch(records, 0, layout).num_tokens
                seconds = step_seconds(policy, records, layout, args.reps)
                baseline = baseline or seconds
                print(f"{prompt_length:6d} {k:2d} {layout:>7s} {tokens:7d} {seconds:7.2f} "
                      f"{args.records * k / seconds:11.2f} {pairs / seconds:8.2f} {baseline / seconds:8.2f}x",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
