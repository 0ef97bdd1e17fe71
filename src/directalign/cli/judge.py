"""`directalign judge validate | pairs`: how far to trust a judge, and judge the pairs of a preference file.

Thin: parse -> call directalign.judges -> print. A judge is "KIND:ARGUMENT" (judges.backends.judge_from_spec):
openai:MODEL (or openai:MODEL@URL), local:MODEL, reward-model:DIR, reward:MODULE:FUNCTION or
reward:FILE.py:FUNCTION; several --judge options vote. OpenAI judges read OPENAI_API_KEY and OPENAI_BASE_URL
when --api-key and --base-url are not given.
"""

from __future__ import annotations

import argparse
import json

from directalign.cli.common import COUNT, NONNEGATIVE_INT, number


def register(subparsers) -> None:
    p = subparsers.add_parser("judge", help="LLM-as-judge: validate a judge on human labels, judge pairs")
    commands = p.add_subparsers(dest="judge_command", metavar="COMMAND")

    v = commands.add_parser(
        "validate",
        help="agreement (raw, Cohen's kappa) of judges with human preferences",
        description="Judge human-labelled pairs (both orders; chosen shown first or second at random) and report "
        "each judge's agreement with the humans, and the judges' agreement with one another.",
    )
    v.add_argument("--human", required=True, help="pandalm:FOLDER, llmbar:FILE, annotate:FILE (an annotation "
                   "project's dpo export, with its votes), or any preference file")
    add_judge_arguments(v)
    v.add_argument("--limit", type=COUNT, help="only the first N pairs")
    v.add_argument("--bootstrap", type=NONNEGATIVE_INT, default=1000, help="resamples for the kappa interval (0: none)")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.set_defaults(func=run_validate)

    j = commands.add_parser(
        "pairs",
        help="judge the chosen and rejected responses of a preference file; write the judge's pairs",
        description="Rows where the judge names a winner are written with chosen = the judge's winner and "
        "columns judge, judge_rationale, judge_confidence and agrees_with_data; ties and unparseable verdicts "
        "are dropped and counted.",
    )
    j.add_argument("--data", required=True, help="preference file")
    j.add_argument("--out", required=True, help="output .jsonl")
    add_judge_arguments(j)
    j.add_argument("--limit", type=COUNT, help="only the first N records")
    j.set_defaults(func=run_pairs)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def add_judge_arguments(
    p: argparse.ArgumentParser,
    base_url_help: str = "of openai: judges",
    batch_size_help: str = "local and reward-model judges",
) -> None:
    """The options that pick judges and how their verdicts combine (also `directalign synth`'s)."""
    p.add_argument(
        "--judge",
        action="append",
        required=True,
        metavar="KIND:ARG",
        help="openai:MODEL, openai:MODEL@URL, local:MODEL, reward-model:DIR, reward:FILE.py:FUNCTION; repeat to let "
        "judges vote",
    )
    p.add_argument("--base-url", help=f"{base_url_help} (default $OPENAI_BASE_URL, else http://localhost:8000/v1)")
    p.add_argument(
        "--api-key", help="of openai: judges and servers (default $OPENAI_API_KEY, which keeps it out of `ps`)"
    )
    p.add_argument("--tie-margin", type=number(float, 0), default=0.0,
                   help="local and score judges: a smaller lead is a tie")
    p.add_argument("--batch-size", type=COUNT, default=4, help=batch_size_help)
    p.add_argument("--no-swap", action="store_true", help="judge one order only (no position debiasing)")
    p.add_argument(
        "--rule",
        choices=("flip-tie", "mean-probability"),
        default="flip-tie",
        help="how the verdicts on both orders combine (default flip-tie: a flip is a tie)",
    )
    p.add_argument("--seed", type=NONNEGATIVE_INT, default=0, help="of the order pairs are shown in (and of sampling)")


def judges_of(args: argparse.Namespace) -> list:
    from directalign.judges.backends import judge_from_spec

    return [judge_from_spec(s, args.base_url, args.api_key, args.tie_margin, args.batch_size) for s in args.judge]


def human_pairs(spec: str, seed: int) -> list:
    """Labelled pairs from "pandalm:FOLDER", "llmbar:FILE", "annotate:FILE" or a preference file."""
    from directalign.judges.validation import annotation_pairs, pairs_from_records, pandalm_pairs

    kind, _, path = spec.partition(":")
    if kind == "pandalm" and path:
        return pandalm_pairs(path)
    if kind == "annotate" and path:
        return annotation_pairs(path, seed)
    if kind == "llmbar" and path:
        from directalign.quality.sources import llmbar_records

        return pairs_from_records(llmbar_records(path), seed)
    from directalign.cli.common import load_data

    return pairs_from_records(load_data(spec).records, seed)


def run_validate(args: argparse.Namespace) -> int:
    from directalign.judges.validation import validate_judges

    pairs = human_pairs(args.human, args.seed)[: args.limit]
    report = validate_judges(
        judges_of(args), pairs, swap=not args.no_swap, n_boot=args.bootstrap, seed=args.seed, rule=args.rule
    )
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0
    print(f"{len(pairs)} labelled pairs from {args.human}")
    header = f"{'judge':<32}{'parsed':>8}{'ties':>6}{'flips':>7}  {'agreement [95% CI]':<24}{'kappa [95% CI]':<26}"
    print(header + "decisive")
    for v in report.validations:
        agreement = f"{v.agreement:.3f} [{v.agreement_interval[0]:.3f}, {v.agreement_interval[1]:.3f}]"
        kappa = f"{v.kappa:.3f} [{v.kappa_interval[0]:.3f}, {v.kappa_interval[1]:.3f}]"
        print(
            f"{v.judge:<32}{v.n_parsed:>8}{v.judge_ties:>6}{v.position_flips:>7}  {agreement:<24}{kappa:<26}"
            + (f"{v.decisive_agreement:.3f}" if v.decisive_agreement == v.decisive_agreement else "n/a (all ties)")
        )
    ceilings = [v for v in report.validations if v.ceiling is not None]
    if ceilings:
        c = ceilings[0].ceiling
        print(f"human-human ceiling (two different annotators of an item agree): {c.annotator_vs_annotator:.3f} with "
              f"ties ({c.n_items} items with 2+ votes), {c.annotator_vs_annotator_decisive:.3f} without "
              f"({c.n_items_decisive} items with 2+ decisive votes)")
        for v in ceilings:
            print(f"  {v.judge}: agrees with a random annotator {v.ceiling.judge_vs_annotator:.3f} with ties, "
                  f"{v.ceiling.judge_vs_annotator_decisive:.3f} without")
    if report.judge_agreement.get("pairwise_kappa"):
        print(
            f"judges with one another: percent agreement {report.judge_agreement['percent_agreement']:.3f}, "
            f"Fleiss' kappa {report.judge_agreement['fleiss_kappa']:.3f}"
        )
        for pair, kappa in report.judge_agreement["pairwise_kappa"].items():
            print(f"  Cohen's kappa {pair}: {kappa:.3f}")
    return 0


def run_pairs(args: argparse.Namespace) -> int:
    from directalign.cli.common import load_data
    from directalign.judges.ensemble import JudgeEnsemble
    from directalign.judges.synthetic import write_jsonl
    from directalign.judges.validation import pairs_from_records

    records = load_data(args.data).records[: args.limit]
    pairs = pairs_from_records(records, args.seed)
    ensemble = JudgeEnsemble(judges_of(args), swap=not args.no_swap, rule=args.rule)
    result = ensemble.run([p.prompt for p in pairs], [p.response_a for p in pairs], [p.response_b for p in pairs])
    rows, counts = [], {"A": 0, "B": 0, "tie": 0, None: 0}
    for record, pair, judgement in zip(records, pairs, result.judgements, strict=True):
        counts[judgement.winner] += 1
        if judgement.winner not in ("A", "B"):
            continue
        shown = [[{"role": "assistant", "content": text}] for text in (pair.response_a, pair.response_b)]
        chosen, rejected = shown if judgement.winner == "A" else shown[::-1]
        rows.append(
            {
                "prompt": record.prompt,
                "chosen": chosen,
                "rejected": rejected,
                "judge": ensemble.name,
                "judge_rationale": judgement.rationale,
                "judge_chosen_position": judgement.winner,
                "judge_confidence": judgement.confidence,
                "agrees_with_data": judgement.winner == pair.human,
            }
        )
    write_jsonl(rows, args.out)
    agree = sum(row["agrees_with_data"] for row in rows)
    print(
        f"{len(pairs)} pairs judged: {len(rows)} written to {args.out}, {counts['tie']} ties "
        f"({sum(j.position_flip for j in result.judgements)} from order flips), {counts[None]} unparseable"
    )
    if rows:
        print(f"the judge agrees with the file's label on {agree} of {len(rows)} ({agree / len(rows):.1%})")
    return 0
