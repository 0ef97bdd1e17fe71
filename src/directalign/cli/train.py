"""`directalign train`: run a training job from a YAML config, flags and `--key value` overrides."""

from __future__ import annotations

import argparse
from importlib.resources import files

from directalign.training.config import load_config, parse_cli_overrides

BUILTIN_CONFIG = str(files("directalign") / "configs" / "builtin.yaml")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="align a model on preference data (default: the embedded model on the built-in set)",
        description="Train with DPO or a relative. Any config key can be given as --key value "
        "(dash or underscore), e.g. --max-steps 40 --beta 0.2 --loss-type ipo.",
    )
    p.add_argument("--config", help="YAML file of config keys")
    p.add_argument("--data", help="preference data file or folder (default: the built-in set)")
    p.add_argument("--model", help="embedded name, local folder or hub id (default: smollm2-135m-instruct)")
    p.add_argument("--output-dir", "--output_dir", dest="output_dir", help="where checkpoints and metrics go")
    p.set_defaults(func=run, accepts_extra=True)


def run(args: argparse.Namespace) -> int:
    from directalign.training.loop import train

    overrides = parse_cli_overrides(args.extra)
    for key in ("data", "model", "output_dir"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    config = args.config
    if config is None and args.data is None and "data" not in overrides:
        config = BUILTIN_CONFIG
        print(f"config: {config} (the built-in default job)")
    cfg = load_config(config, overrides)
    result = train(cfg)
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
