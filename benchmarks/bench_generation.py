"""Generation throughput: `model.generate` against the shared-prefix engine, on the embedded model.

    python benchmarks/bench_generation.py [--prompts 8] [--max-new-tokens 64] [--k 4 8] [--reps 3] [--json]

Both engines sample the same prompts (the first N built-in task prompts, as the demo and the on-policy methods use
them) from the embedded SmolLM2-135M-Instruct in fp32 at temperature 1.0, k samples per prompt, up to
max_new_tokens each, through TransformersGenerator (engine "generate": batch_size prompts per call, each repeated
k times before its prefill; engine "shared-prefix": one prefill per prompt, finished rows leave the batch, batches
by token budget). Both get config.seed (prompt_seeds would make "generate" run one prompt at a time, its only way to
seed prompts apart). Seeds differ between engines, so the completions (and their lengths) are different samples of
the same distribution: tokens/s, which counts the tokens each engine generated, is the fairer rate when lengths
differ; completions/s is what an on-policy step sees.

One process, the model loaded once; after a warm-up call of each, the engines alternate over --reps repetitions
and the medians are printed. "CPU s" is the process CPU time of a call: on a machine shared with other jobs it
tracks the work better than wall time (run with --threads 1 for that).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace

import torch

from directalign.data.builtin import builtin_tasks
from directalign.generation.base import GenerationConfig
from directalign.generation.transformers_backend import TransformersGenerator
from directalign.models.loading import load_model, load_tokenizer

ENGINES = ("generate", "shared-prefix")


def measure(generator: TransformersGenerator, prompts, config: GenerationConfig, seed: int) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    # config.seed, not prompt_seeds: with prompt_seeds the generate engine must run one prompt at a time.
    out = generator.generate(prompts, replace(config, seed=seed))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    tokens = sum(len(c.token_ids) for group in out for c in group)
    completions = sum(len(group) for group in out)
    return {"wall_s": wall, "cpu_s": cpu, "tokens": tokens, "completions": completions,
            "completions_per_s": completions / wall, "tokens_per_s": tokens / wall}  # fmt: skip


def bench(args, model, tokenizer, k: int) -> dict:
    prompts = [[{"role": "user", "content": t.prompt}] for t in builtin_tasks(args.prompts)]
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=1.0, num_samples=k)
    generators = {
        engine: TransformersGenerator(model, tokenizer, batch_size=args.batch_size, engine=engine) for engine in ENGINES
    }
    for engine in ENGINES:  # warm-up
        measure(generators[engine], prompts[:2], GenerationConfig(max_new_tokens=4, num_samples=k), seed=0)
    runs: dict[str, list[dict]] = {engine: [] for engine in ENGINES}
    for rep in range(args.reps):
        for engine in ENGINES if rep % 2 == 0 else ENGINES[::-1]:
            runs[engine].append(measure(generators[engine], prompts, config, seed=1000 * rep))
            m = runs[engine][-1]
            print(f"k={k} rep {rep + 1}/{args.reps} {engine}: {m['completions_per_s']:.2f} completions/s, "
                  f"{m['tokens_per_s']:.1f} tokens/s ({m['wall_s']:.1f} s)", file=sys.stderr, flush=True)  # fmt: skip
    result = {"k": k}
    for engine in ENGINES:
        result[engine] = {key: statistics.median(r[key] for r in runs[engine]) for key in runs[engine][0]}
    fast, plain = result["shared-prefix"], result["generate"]
    result["speedup_completions"] = fast["completions_per_s"] / plain["completions_per_s"]
    result["speedup_tokens"] = fast["tokens_per_s"] / plain["tokens_per_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--k", type=int, nargs="+", default=[4, 8], help="samples per prompt")
    parser.add_argument("--batch-size", type=int, default=8, help="most prompts per batch (both engines)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(), load_tokenizer()
    results = [bench(args, model, tokenizer, k) for k in args.k]
    if args.json:
        print(json.dumps({"settings": vars(args), "results": results}, indent=2))
        return
    print(f"{args.prompts} prompts, up to {args.max_new_tokens} new tokens, temperature 1.0, "
          f"{torch.get_num_threads()} threads, median of {args.reps}")  # fmt: skip
    print(f"{'k':>3} {'engine':<14} {'completions/s':>14} {'tokens/s':>9} {'tokens':>7} {'wall s':>7} {'CPU s':>7}")
    for r in results:
        for engine in ENGINES:
            m = r[engine]
            print(f"{r['k']:>3} {engine:<14} {m['completions_per_s']:>14.2f} {m['tokens_per_s']:>9.1f} "
                  f"{m['tokens']:>7.0f} {m['wall_s']:>7.1f} {m['cpu_s']:>7.1f}")  # fmt: skip
        print(f"{'':>3} {'speedup':<14} {r['speedup_completions']:>13.2f}x {r['speedup_tokens']:>8.2f}x")


if __name__ == "__main__":
    main()
