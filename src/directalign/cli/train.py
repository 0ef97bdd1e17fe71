"""`directalign train`: the DPO family and KTO from a YAML config, flags and `--key value` overrides."""

from __future__ import annotations

import argparse
from importlib.resources import files

from directalign.cli.common import add_config_command, config_from_args

BUILTIN_CONFIG = str(files("directalign") / "configs" / "builtin.yaml")


def register(subparsers) -> None:
    p = add_config_command(
        subparsers,
        "train",
        "train",
        help="align a model on preference data (default: the embedded model on the built-in set)",
        description="Train with DPO or a relative (the losses table below). Any config key can be given as "
        "--key value (dash or underscore), e.g. --max-steps 40 --beta 0.2 --loss-type ipo. Without --config or "
        "--data, the built-in default job (configs/builtin.yaml).",
        losses=("paired", "unpaired"),
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from directalign.training.dpo import train

    default = None
    if args.config is None and not any(t.split("=")[0] in ("--data",) for t in args.extra):
        default = BUILTIN_CONFIG
        print(f"config: {default} (the built-in default job)")
    result = train(config_from_args(args, "train", default))
    print(summary(result))
    return 0


def summary(result) -> str:
    lines = [f"outputs: {result.output_dir} ({result.steps} steps; metrics in metrics.jsonl)"]
    if result.stop_reason:
        lines.append(f"stopped early: {result.stop_reason}")
    before, after = result.eval_before, result.eval_after
    if after:
        lines.append(f"{'held-out':<22}{'before':>10}{'after':>10}")
        for key in ("implicit_accuracy", "mean_margin", "logp_accuracy", "kl", "lengths/generated", "reward"):
            if key in after:
                b = f"{before[key]:.3f}" if before and key in before else "-"
                lines.append(f"{key:<22}{b:>10}{after[key]:>10.3f}")
        for key in ("n_pairs", "n_desirable", "n_undesirable"):
            if key in after:
                lines.append(f"{key:<22}{'':>10}{after[key]:>10}")
    lines.append(f"report: directalign report {result.output_dir}")
    return "\n".join(lines)
