"""What gradient_checkpointing costs and saves: the same DPO steps with it off and on, each in a fresh process.

Prints seconds per step (the median of the steps after the first) and the process's peak resident memory (on
CUDA, torch's peak allocated memory), and the ratios on / off. The losses of both runs are compared too: the
recomputation must not change them.

    python benchmarks/gradient_checkpointing.py --data ../shared/data/hh-rlhf-harmless-test/test.jsonl.gz
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time


def child(args: argparse.Namespace) -> None:
    import resource

    import torch

    from directalign import train

    times: list[float] = []
    last = [time.perf_counter()]

    def on_step(step, metrics):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    with tempfile.TemporaryDirectory() as out:
        result = train(
            model=args.model, data=args.data, output_dir=out, max_steps=args.steps, logging_steps=1,
            per_device_train_batch_size=args.batch_size, max_length=args.max_length, eval_split=0.0,
            max_train_records=args.steps * args.batch_size, gradient_checkpointing=args.checkpointing,
            eval_before_training=False, kl_prompts=0, save_steps=0, layout=args.layout, on_step=on_step,
        )
        losses = [e["loss"] for e in result.events if e["split"] == "train"]
    if torch.cuda.is_available():
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"s_per_step": statistics.median(times[1:]), "peak_mb": peak_mb, "losses": losses}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--layout", default="shared")
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    runs = {}
    for on in (False, True):
        argv = [sys.executable, __file__, "--child", "--data", args.data, "--model", args.model, "--steps",
                str(args.steps), "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
                "--layout", args.layout] + (["--checkpointing"] if on else [])
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        runs[on] = json.loads(out.strip().splitlines()[-1])
    off, on = runs[False], runs[True]
    worst = max(abs(a - b) for a, b in zip(off["losses"], on["losses"], strict=True))
    print(f"gradient_checkpointing off: {off['s_per_step']:.2f} s/step, peak {off['peak_mb']:.0f} MB")
    print(f"gradient_checkpointing on:  {on['s_per_step']:.2f} s/step, peak {on['peak_mb']:.0f} MB")
    print(f"on / off: {on['s_per_step'] / off['s_per_step']:.2f}x the time, {on['peak_mb'] / off['peak_mb']:.2f}x the "
          f"peak memory; largest loss difference {worst:.1e}")


if __name__ == "__main__":
    main()
