"""One directalign training step under torch.profiler, its time split by operator kind.

    python benchmarks/profile_step.py --data FILE [--method dpo] [--pairs 16] [--json]

The run is bench_vs_trl.py's (the same config, vs_trl_runs.directalign_config) for two optimizer steps; the second
is profiled (the first warms the allocator and the kernels). Each ATen operator's self CPU time on the
training thread goes to one kind:
- head: matmuls and softmax-family ops with the vocabulary as a dimension (the chunked LM head);
- LoRA: matmuls with the adapter rank as a dimension;
- linear: the other matmuls (the frozen q/k/v/o, gate/up/down products and their input gradients);
- attention: scaled_dot_product_attention and its kernels, forward and backward;
- optimizer: every op under the optimizer's step (AdamW, clipping is "other");
- other ops: elementwise, norms, copies, indexing, the loss;
- Python and framework: the step's wall time not spent inside any operator (the loop, autograd's bookkeeping,
  batching, logging).
The step's matmul FLOPs (head, LoRA and linear, counted from the recorded shapes) over their time give the matmul
rate the step reached, to set beside benchmarks/matmul_rate.py's rate at the same shapes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_vs_trl import write_pairs  # noqa: E402
from benchmarks.vs_trl_runs import METHODS, MODEL, SETTINGS, directalign_config  # noqa: E402

MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
ATTENTION = ("scaled_dot_product", "flash_attention", "efficient_attention", "_attention")
KINDS = ("linear", "LoRA", "head", "attention", "optimizer", "other ops", "Python and framework")


def classify(event, vocab: int, rank: int, in_optimizer: bool) -> str:
    dims = {d for shape in (event.input_shapes or []) for d in (shape or [])}
    if in_optimizer:
        return "optimizer"
    if any(word in event.name for word in ATTENTION):
        return "attention"
    if vocab in dims and (event.name in MATMULS or "softmax" in event.name or "logsumexp" in event.name):
        return "head"
    if event.name in MATMULS:
        return "LoRA" if rank in dims else "linear"
    return "other ops"


def matmul_flops(event) -> float:
    """2 m k n of an mm / addmm / bmm from its recorded input shapes (0 when they are missing)."""
    shapes = [s for s in (event.input_shapes or []) if s]
    if event.name == "aten::addmm" and len(shapes) >= 3:
        shapes = shapes[1:3]
    if len(shapes) < 2 or len(shapes[0]) < 2 or len(shapes[1]) < 2:
        return 0.0
    a, b = shapes[0], shapes[1]
    batch = a[0] if len(a) == 3 else 1
    return 2.0 * batch * a[-2] * a[-1] * b[-1]


def _under_optimizer(event) -> bool:
    while event is not None:
        if event.name.startswith("Optimizer.step"):
            return True
        event = event.cpu_parent
    return False


def split(events, wall_s: float, vocab: int, rank: int) -> dict:
    seconds: dict[str, float] = defaultdict(float)
    flops = matmul_s = 0.0
    for event in events:
        if not event.name.startswith("aten::") or event.thread != events[0].thread:
            continue
        kind = classify(event, vocab, rank, _under_optimizer(event))
        seconds[kind] += event.self_cpu_time_total / 1e6
        if event.name in MATMULS and kind != "optimizer":
            flops += matmul_flops(event)
            matmul_s += event.self_cpu_time_total / 1e6
    seconds["Python and framework"] = max(wall_s - sum(seconds.values()), 0.0)
    return {"step_s": wall_s, "seconds": {k: seconds.get(k, 0.0) for k in KINDS},
            "shares": {k: seconds.get(k, 0.0) / wall_s for k in KINDS},
            "matmul_gflop": flops / 1e9, "matmul_gflops_reached": flops / matmul_s / 1e9 if matmul_s else 0.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="preference data file (e.g. hh-rlhf harmless-base test.jsonl.gz)")
    parser.add_argument("--method", choices=[m for m in METHODS if m != "rm"], default="dpo")
    parser.add_argument("--pairs", type=int, default=16, help="pairs written for the run (two steps need 16)")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the split")
    args = parser.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoConfig

    from directalign.models.loading import resolve_model
    from directalign.training import dpo as loop

    data = Path(tempfile.mkdtemp()) / "pairs.jsonl"
    write_pairs(args.data, args.pairs, data, args.method, args.model)
    cfg = directalign_config(args.method, str(data), model_name=args.model, max_steps=2)
    profiler = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
    marks: list[float] = []

    def on_step(step: int, metrics: dict) -> None:
        marks.append(time.perf_counter())
        if step == 1:
            profiler.start()
        else:
            profiler.stop()

    loop.train(cfg, on_step=on_step)
    config = AutoConfig.from_pretrained(resolve_model(args.model))
    result = split(profiler.events(), marks[1] - marks[0], config.vocab_size, SETTINGS["lora_r"])
    result.update(method=args.method, threads=torch.get_num_threads())
    print(f"one {args.method} step of {SETTINGS['batch'] * SETTINGS['accumulation']} pairs, "
          f"{result['threads']} threads: {result['step_s']:.2f} s (profiled)")
    for kind in KINDS:
        print(f"  {kind:22s} {result['seconds'][kind]:7.2f} s {result['shares'][kind]:6.1%}")
    print(f"matmuls: {result['matmul_gflop']:.0f} GFLOP at {result['matmul_gflops_reached']:.0f} GFLOP/s")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
