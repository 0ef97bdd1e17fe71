"""`directalign demo`: the on-policy loop end to end, on the embedded model, in minutes on a CPU.

It runs iterative DPO (configs/demo.yaml) on the built-in verifiable tasks, scored by their verifiers, and prints
the held-out reward (greedy answers to prompts never trained on, fixed seed) and the KL to the starting model,
for the untouched model (round 0) and after every round.
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
        help="iterative DPO on the embedded model with verifiable rewards; prints held-out reward per round",
        description="Iterative DPO on the built-in verifiable tasks, scored by their verifiers; prints the held-out "
        f"reward and the KL to the starting model per round. Settings: {DEMO_CONFIG}; override any key with "
        "--key value (every iterative-dpo key, listed below).",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from directalign.training.iterative import iterative_dpo, rounds_table

    cfg = config_from_args(args, "iterative-dpo", DEMO_CONFIG)
    print(f"config: {args.config or DEMO_CONFIG}")
    started = time.perf_counter()
    result = iterative_dpo(cfg)
    minutes = (time.perf_counter() - started) / 60
    print(rounds_table(result.history))
    before, after = result.history[0]["reward"], result.history[-1]["reward"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"held-out reward {before:.3f} -> {after:.3f} ({after - before:+.3f}) over {cfg.num_rounds} rounds, "
        f"{minutes:.1f} min on {device}; pairs, samples and metrics in {result.output_dir}"
    )
    return 0
