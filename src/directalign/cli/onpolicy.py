"""`directalign online-dpo | iterative-dpo | grpo`: on-policy training from a YAML config and --key value overrides."""

from __future__ import annotations

import argparse

from directalign.cli.common import add_config_command, config_from_args

HELP = {
    "online-dpo": "online DPO: sample k completions per prompt each step, score, DPO on best-vs-worst pairs",
    "iterative-dpo": "iterative DPO: rounds of generate -> score -> pairs file -> offline DPO",
    "grpo": "GRPO: group-normalised advantages and the clipped policy-gradient objective",
}


def register(subparsers) -> None:
    for method, text in HELP.items():
        p = add_config_command(
            subparsers,
            method,
            method,
            help=text,
            description=f"{text}. Any config key can be given as --key value (dash or underscore), e.g. "
            "--num-generations 8 --reward-funcs builtin,my_rewards.py:brevity --max-steps 20.",
            losses=("paired",) if method != "grpo" else (),
        )
        p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, args.config_command)
    print(summary(run_method(cfg)))
    return 0


def run_method(cfg, reward_fn=None):
    if cfg.command == "online-dpo":
        from directalign.training.online import online_dpo

        return online_dpo(cfg, reward_fn)
    if cfg.command == "grpo":
        from directalign.training.grpo import grpo

        return grpo(cfg, reward_fn)
    from directalign.training.iterative import iterative_dpo

    return iterative_dpo(cfg, reward_fn)


def summary(result) -> str:
    from directalign.training.iterative import rounds_table

    lines = [f"outputs: {result.output_dir} ({result.steps} steps; metrics in metrics.jsonl)"]
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
