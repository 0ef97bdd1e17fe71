"""`directalign demo`: the on-policy loop end to end, on the embedded model, in minutes on a CPU.

It runs iterative DPO (configs/demo.yaml) on the built-in verifiable tasks, scored by their verifiers, and prints
the held-out reward (greedy answers to prompts never trained on, fixed seed) and the KL to the starting model,
for the untouched model (round 0) and after every round.
"""

from __future__ import annotations

import argparse
import time
from importlib.resources import files

DEMO_CONFIG = str(files("directalign") / "configs" / "demo.yaml")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="iterative DPO on the embedded model with verifiable rewards; prints held-out reward per round",
        description=f"{__doc__.splitlines()[2]} Settings: {DEMO_CONFIG}; override any key with --key value.",
    )
    p.add_argument("--output-dir", "--output_dir", dest="output_dir", help="default: runs/demo")
    p.set_defaults(func=run, accepts_extra=True)


def run(args: argparse.Namespace) -> int:
    from directalign.training.config import load_config, parse_cli_overrides
    from directalign.training.iterative import iterative_dpo, rounds_table
    from directalign.training.onpolicy import OnPolicyConfig
    from directalign.training.rollout import device_for_run

    overrides = parse_cli_overrides(args.extra)
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    cfg = load_config(DEMO_CONFIG, overrides, config_class=OnPolicyConfig)
    print(f"config: {DEMO_CONFIG}")
    started = time.perf_counter()
    result = iterative_dpo(cfg)
    minutes = (time.perf_counter() - started) / 60
    print(rounds_table(result.history))
    before, after = result.history[0]["reward"], result.history[-1]["reward"]
    print(
        f"held-out reward {before:.3f} -> {after:.3f} ({after - before:+.3f}) over {cfg.num_rounds} rounds, "
        f"{minutes:.1f} min on {device_for_run().type}; pairs, samples and metrics in {result.output_dir}"
    )
    return 0
