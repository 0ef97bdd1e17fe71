"""`directalign demo`: the on-policy loop end to end, on the embedded model, in minutes on a CPU.

It runs iterative DPO (configs/demo.yaml) on built-in verifiable tasks the model is right on some of the time,
the pairs chosen by the verifier's content half (or by a judge, --judge), and prints per round the held-out
reward, the KL to the starting model, and the shares of held-out answers with the right content and with the
asked-for format, scored apart. It ends with the held-out content accuracy before and after, and a paired
bootstrap interval of its change.
"""

from __future__ import annotations

import argparse
import time
from importlib.resources import files

from directalign.cli.common import add_config_command, config_from_args

DEMO_CONFIG = str(files("directalign") / "configs" / "demo.yaml")


def register(subparsers) -> None:
    p = add_config_command(
        subparsers,
        "demo",
        "iterative-dpo",
        help="iterative DPO on the embedded model with verifiable rewards; prints held-out content accuracy",
        description="Iterative DPO on built-in verifiable tasks, pairs chosen by their verifiers' content half "
        "(or by --judge); prints the held-out reward, KL, content and format per round and the held-out content "
        f"accuracy before and after. Settings: {DEMO_CONFIG}; override any key with --key value (every "
        "iterative-dpo key, listed below).",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from directalign.training.iterative import iterative_dpo, rounds_table
    from directalign.training.rollout import heldout_checks, paired_change

    cfg = config_from_args(args, "iterative-dpo", DEMO_CONFIG)
    print(f"config: {args.config or DEMO_CONFIG}" + (f", pairs judged by {cfg.judge}" if cfg.judge else ""))
    started = time.perf_counter()
    result = iterative_dpo(cfg)
    minutes = (time.perf_counter() - started) / 60
    print(rounds_table(result.history))
    first, last = result.history[0], result.history[-1]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"held-out reward {first['reward']:.3f} -> {last['reward']:.3f} over {last['round']} rounds, "
          f"{minutes:.1f} min on {device}; pairs, samples and metrics in {result.output_dir}")
    if "content" not in first:
        return 0  # not the built-in tasks (--prompts): no content / format split
    samples = result.output_dir / "eval_samples"
    before = heldout_checks(samples / f"round_{first['round']}.jsonl")
    after = heldout_checks(samples / f"round_{last['round']}.jsonl")
    fmt = (sum(f for _, f in before) / len(before), sum(f for _, f in after) / len(after))
    change, low, high = paired_change([float(c) for c, _ in before], [float(c) for c, _ in after])
    print(f"held-out format {fmt[0]:.3f} -> {fmt[1]:.3f}")
    print(f"held-out content accuracy {first['content']:.3f} -> {last['content']:.3f} ({change:+.3f}, 95% CI "
          f"[{low:+.3f}, {high:+.3f}], paired bootstrap over {len(before)} prompts)")
    return 0
