"""`directalign online-dpo | iterative-dpo | grpo`: on-policy training from a YAML config and --key value overrides."""

from __future__ import annotations

import argparse

from directalign.training.onpolicy import METHODS

HELP = {
    "online-dpo": "online DPO: sample k completions per prompt each step, score, DPO on best-vs-worst pairs",
    "iterative-dpo": "iterative DPO: rounds of generate -> score -> pairs file -> offline DPO",
    "grpo": "GRPO: group-normalised advantages and the clipped policy-gradient objective",
}


def register(subparsers) -> None:
    for method in METHODS:
        p = subparsers.add_parser(
            method,
            help=HELP[method],
            description=f"{HELP[method]}. Any config key can be given as --key value (dash or underscore), e.g. "
            "--num-generations 8 --reward-funcs builtin,my_rewards.py:brevity --max-steps 20.",
        )
        p.add_argument("--config", help="YAML file of config keys (TrainConfig and OnPolicyConfig fields)")
        p.add_argument("--prompts", help="prompt file (a prompt or messages column); default: built-in tasks")
        p.add_argument("--model", help="embedded name, local folder or hub id (default: smollm2-135m-instruct)")
        p.add_argument("--output-dir", "--output_dir", dest="output_dir", help="default: runs/<method>")
        p.set_defaults(func=run, method=method, accepts_extra=True)


def run(args: argparse.Namespace) -> int:
    from directalign.training.config import load_config, parse_cli_overrides
    from directalign.training.onpolicy import OnPolicyConfig

    overrides = parse_cli_overrides(args.extra)
    for key in ("prompts", "model", "output_dir"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    overrides["method"] = args.method
    cfg = load_config(args.config, overrides, config_class=OnPolicyConfig)
    result = run_method(cfg)
    print(summary(result))
    return 0


def run_method(cfg):
    if cfg.method == "online-dpo":
        from directalign.training.online import online_dpo

        return online_dpo(cfg)
    if cfg.method == "grpo":
        from directalign.training.grpo import grpo

        return grpo(cfg)
    from directalign.training.iterative import iterative_dpo

    return iterative_dpo(cfg)


def summary(result) -> str:
    from directalign.training.iterative import rounds_table

    lines = [f"outputs: {result.output_dir} (metrics in metrics.jsonl)"]
    if result.history and "round" in result.history[0]:
        lines.append(rounds_table(result.history))
    elif result.eval_after:
        before = result.eval_before or {}
        lines.append(f"{'held-out':<26}{'before':>10}{'after':>10}")
        for key, value in result.eval_after.items():
            if isinstance(value, float) and not key.endswith("_time_s"):
                b = f"{before[key]:.3f}" if key in before else "-"
                lines.append(f"{key:<26}{b:>10}{value:>10.3f}")
    return "\n".join(lines)
