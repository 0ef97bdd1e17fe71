"""`directalign reward-model train | score`: train a Bradley-Terry reward model, score preference data with it.

Thin: parse -> call directalign.reward_models -> print. `train` takes every reward-model key (--help lists them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from directalign.cli.common import COUNT, add_config_command, config_from_args
from directalign.errors import DataError


def register(subparsers) -> None:
    p = subparsers.add_parser("reward-model", help="train a Bradley-Terry reward model, or score data with one")
    commands = p.add_subparsers(dest="reward_model_command", metavar="COMMAND")

    train = add_config_command(
        commands,
        "train",
        "reward-model train",
        help="train on preference pairs (LoRA by default)",
        description="Bradley-Terry reward model: the policy's architecture with a one-output score head, "
        "loss -log sigmoid(r_chosen - r_rejected - margin). Writes metrics.jsonl and reward_model/.",
    )
    train.set_defaults(func=run_train)

    score = commands.add_parser(
        "score",
        help="score a preference file (accuracy, margins) or prompt/response rows",
        description="A preference file gets each pair's chosen and rejected scores, held-out accuracy and mean "
        "margin; rows of prompt and response (or completion) get one score each.",
    )
    score.add_argument("--model", required=True, help="a `reward-model train` output folder")
    score.add_argument("--data", required=True, help="preference file, or rows with prompt and response")
    score.add_argument("--limit", type=COUNT, help="only the first N rows")
    score.add_argument("--batch-size", type=COUNT, default=8)
    score.add_argument("--out", help="write the rows with their scores (.jsonl)")
    score.add_argument("--json", action="store_true", help="print one JSON object")
    score.set_defaults(func=run_score)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_train(args: argparse.Namespace) -> int:
    from directalign.reward_models.trainer import train_reward_model

    result = train_reward_model(config_from_args(args, "reward-model train"))
    print(f"reward model: {result.model_dir} ({result.steps} steps; metrics in {result.output_dir / 'metrics.jsonl'})")
    before, after = result.eval_before, result.eval_after
    if after:
        print(f"{'held-out':<14}{'before':>10}{'after':>10}")
        for key in ("accuracy", "mean_margin", "loss"):
            b = f"{before[key]:.3f}" if before else "-"
            print(f"{key:<14}{b:>10}{after[key]:>10.3f}")
        print(f"{'n_pairs':<14}{'':>10}{after['n_pairs']:>10}")
    return 0


def run_score(args: argparse.Namespace) -> int:
    from directalign.cli.common import load_data
    from directalign.data.formats import read_rows
    from directalign.judges.synthetic import write_jsonl
    from directalign.reward_models.scoring import RewardModel

    model = RewardModel.load(args.model, batch_size=args.batch_size)
    try:
        records = load_data(args.data).records[: args.limit]
    except DataError:
        records = None
    if records is None:
        rows = [row for _, row in read_rows(_path(args.data), None)][: args.limit]
        prompts, responses = _prompt_response(rows, args.data)
        scores = model.score(prompts, responses)
        out_rows = [{**row, "score": s} for row, s in zip(rows, scores, strict=True)]
        summary = {"n_rows": len(scores), "mean_score": sum(scores) / len(scores)}
    else:
        chosen, rejected = model.score_records(records)
        margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
        out_rows = [
            {"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected, "score_chosen": c, "score_rejected": s}
            for r, c, s in zip(records, chosen, rejected, strict=True)
        ]
        summary = {
            "n_pairs": len(margins),
            "accuracy": sum(m > 0 for m in margins) / len(margins),
            "mean_margin": sum(margins) / len(margins),
        }
    if args.out:
        write_jsonl(out_rows, args.out)
        summary["out"] = args.out
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:<14}{value:>10.4f}" if isinstance(value, float) else f"{key:<14}{value:>10}")
    return 0


def _prompt_response(rows: list, source: str) -> tuple[list, list]:
    prompts, responses = [], []
    for number, row in enumerate(rows, start=1):
        response = row.get("response", row.get("completion")) if isinstance(row, dict) else None
        if response is None or row.get("prompt") is None:
            raise DataError(
                f"{source}:{number}: neither a preference row nor a row with prompt and response (or completion)"
            )
        prompts.append(row["prompt"])
        responses.append(response)
    if not rows:
        raise DataError(f"{source}: no rows")
    return prompts, responses


def _path(value: str) -> Path:
    path = Path(value)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    return path
