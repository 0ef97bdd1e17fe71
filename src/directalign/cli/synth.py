"""`directalign synth`: a synthetic preference data set from prompts, a generator and judges.

Thin: parse -> call directalign.judges.synthetic -> print. The output is TRL's conversational form with judge
columns, which `directalign train --data` reads as it is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from directalign.cli.common import COUNT
from directalign.cli.judge import add_judge_arguments
from directalign.errors import DataError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="sample responses at several temperatures, judge them, write preference pairs",
        description="For each prompt: sample at each temperature, judge every pair of distinct responses in both "
        "orders (an order flip is a tie), keep best-vs-worst or all decided pairs, and write "
        "{prompt, chosen, rejected} message lists with judge, judge_rationale and judge_confidence columns.",
    )
    p.add_argument("--prompts", required=True, help="rows with a prompt (text or messages), or a preference file")
    p.add_argument("--out", required=True, help="output .jsonl")
    p.add_argument(
        "--model",
        default="smollm2-135m-instruct",
        help="generator: embedded name, folder, hub id, or the served model with --backend openai",
    )
    p.add_argument("--backend", choices=("transformers", "openai", "vllm"), default="transformers")
    p.add_argument("--judge-base-url", help="of openai: judges when they are served elsewhere")
    p.add_argument("--temperatures", default="0.3,0.5,0.7,1.0", help="comma-separated (default: 0.3,0.5,0.7,1.0)")
    p.add_argument("--samples-per-temperature", type=COUNT, default=1)
    p.add_argument("--max-new-tokens", type=COUNT, default=256)
    p.add_argument("--pairing", choices=("best-vs-worst", "all-pairs"), default="best-vs-worst")
    p.add_argument("--limit", type=COUNT, help="only the first N prompts")
    add_judge_arguments(
        p, base_url_help="of the openai backend and openai: judges", batch_size_help="generation and local judges"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from directalign.judges.backends import judge_from_spec
    from directalign.judges.synthetic import build_preferences, write_jsonl

    prompts = read_prompts(args.prompts)[: args.limit]
    try:
        temperatures = [float(t) for t in args.temperatures.split(",") if t.strip()]
    except ValueError as err:
        raise DataError(f"--temperatures: expected numbers separated by commas, got {args.temperatures!r}") from err
    judge_url = args.judge_base_url or args.base_url
    judges = [judge_from_spec(s, judge_url, args.api_key, args.tie_margin, args.batch_size) for s in args.judge]
    result = build_preferences(
        prompts,
        generator_of(args),
        judges,
        temperatures=temperatures,
        samples_per_temperature=args.samples_per_temperature,
        max_new_tokens=args.max_new_tokens,
        pairing=args.pairing,
        seed=args.seed,
        swap=not args.no_swap,
        rule=args.rule,
    )
    write_jsonl(result.rows, args.out)
    s = result.stats
    print(
        f"{s.prompts} prompts -> {s.responses} distinct responses ({s.duplicates_dropped} duplicates, "
        f"{s.empty_dropped} empty dropped)"
    )
    print(
        f"{s.pairs_judged} pairs judged: {s.ties} ties ({s.position_flips} from order flips), "
        f"{s.unparseable} unparseable; {s.prompts_without_pair} prompts without a pair"
    )
    if s.judge_agreement.get("pairwise_kappa"):
        kappas = ", ".join(f"{pair} {k:.3f}" for pair, k in s.judge_agreement["pairwise_kappa"].items())
        print(f"judges' agreement: Fleiss' kappa {s.judge_agreement['fleiss_kappa']:.3f}; Cohen's kappa {kappas}")
    print(f"{s.rows} preference pairs ({args.pairing}) written to {args.out}")
    return 0


def generator_of(args: argparse.Namespace):
    from directalign.generation.base import make_generator

    if args.backend == "openai":
        return make_generator("openai", model=args.model, base_url=args.base_url, api_key=args.api_key)
    if args.backend == "vllm":
        return make_generator("vllm", model=args.model)
    from directalign.models.loading import load_model, load_tokenizer

    return make_generator(
        "transformers", model=load_model(args.model), tokenizer=load_tokenizer(args.model), batch_size=args.batch_size
    )


def read_prompts(path: str) -> list:
    """The prompt of each row (text or messages); a preference file without a prompt column gives its prompts."""
    from directalign.data.formats import load_records, read_rows

    if not Path(path).exists():
        raise DataError(f"{path}: no such file or folder")
    rows = read_rows(Path(path), None)
    if any(isinstance(row, dict) and "chosen" in row for _, row in rows):
        return [record.prompt for record in load_records(path).records]
    prompts = []
    for number, row in rows:
        prompt = row.get("prompt") if isinstance(row, dict) else None
        if not (isinstance(prompt, str | list) and prompt):
            raise DataError(f"{path}:{number}: field 'prompt' must be a non-empty text or message list")
        prompts.append(prompt)
    if not prompts:
        raise DataError(f"{path}: no rows")
    return prompts
