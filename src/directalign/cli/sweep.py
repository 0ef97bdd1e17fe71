"""`directalign sweep`: an Optuna sweep of training runs, ranked by a held-out metric, resumable."""

from __future__ import annotations

import argparse

from directalign.cli.common import COUNT, NONNEGATIVE_INT


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="sweep beta, learning rate, epochs, warmup, loss type, LoRA rank (Optuna grid or TPE)",
        description="Run training trials over a search space and rank them by a held-out metric. "
        "--param NAME uses the default range (beta 0.1-0.5; learning_rate 1e-5 to 5e-4 with LoRA, 1e-7 to "
        "5e-6 full; num_train_epochs 1-3; warmup_ratio 0.05-0.15; label_smoothing 0-0.1; loss_type "
        "sigmoid,ipo; lora_r 8,16,32); NAME=LOW:HIGH a range; NAME=A,B,C values. Any other --key value is a "
        "training config key shared by every trial. Rerunning the same command resumes the sweep.",
    )
    p.add_argument("--output-dir", "--output_dir", dest="output_dir", default="runs/sweep", help="sweep folder")
    p.add_argument("--config", help="YAML file of training config keys shared by every trial")
    p.add_argument("--param", action="append", default=[], help="a swept parameter (repeatable)")
    p.add_argument("--sampler", choices=["tpe", "grid"], default="tpe")
    p.add_argument("--n-trials", type=COUNT, help="trials to complete (default: the grid's size, or 8 for tpe)")
    p.add_argument("--grid-points", type=COUNT, default=3, help="values per range in a grid (default 3)")
    p.add_argument("--metric", default="implicit_accuracy",
                   help="held-out metric to rank by: implicit_accuracy, logp_accuracy, mean_margin, reward, kl")
    p.add_argument("--direction", choices=["maximize", "minimize"], help="default: minimize kl/loss, else maximize")
    p.add_argument("--seed", type=NONNEGATIVE_INT, default=0, help="sampler seed")
    p.set_defaults(func=run, accepts_extra=True)


def run(args: argparse.Namespace) -> int:
    from directalign.config import load_config, parse_cli_overrides
    from directalign.reports.html import write_report
    from directalign.training.sweep import SweepSettings, format_results, parse_param, run_sweep

    overrides = parse_cli_overrides(args.extra)
    use_peft = load_config("train", args.config, overrides).use_peft
    params = [parse_param(spec, use_peft) for spec in args.param or ["beta", "learning_rate"]]
    settings = SweepSettings(args.metric, args.direction, args.sampler, args.n_trials, args.grid_points, args.seed)
    results = run_sweep(args.output_dir, params, settings, args.config, overrides)
    print(format_results(results))
    print(f"report: {write_report(args.output_dir)}")
    return 0
