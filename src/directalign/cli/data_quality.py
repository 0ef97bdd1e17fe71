"""`directalign data agreement | diagnose | filter | pairs | aggregate | calibration`: is this data worth training on?

Thin: parse -> call directalign.quality -> print a table (or one JSON object with --json). `register` adds the
subcommands to the `data` group's sub-parsers.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from directalign.cli.common import COUNT, FINITE, FRACTION, NONNEGATIVE_INT, number
from directalign.data.types import PreferenceRecord
from directalign.errors import DataError
from directalign.quality import filters, render
from directalign.quality.aggregation import METHODS, dawid_skene, majority_vote
from directalign.quality.agreement import agreement_report
from directalign.quality.calibration import gold_calibration, gold_labels
from directalign.quality.diagnostics import diagnose
from directalign.quality.pairs import STRATEGIES, ScoredResponses, build_pairs
from directalign.quality.sources import oasst_scored, vicuna80_scored
from directalign.quality.stats import json_ready
from directalign.quality.table import RatingTable, coerce_label, rating_table, read_rows, wide_to_long


def register(data_subparsers: argparse._SubParsersAction) -> None:
    """Add the data-quality subcommands to the `directalign data` group."""
    p = data_subparsers.add_parser("agreement", help="inter-annotator agreement of a label table")
    _table_arguments(p)
    p.add_argument("--ratings", action="store_true", help="numeric ratings: add ordinal and interval alpha")
    p.add_argument("--bootstrap", type=NONNEGATIVE_INT, default=1000, help="bootstrap resamples for the CIs (0: none)")
    p.add_argument("--seed", type=NONNEGATIVE_INT, default=0, help="seed of the bootstrap")
    p.set_defaults(func=run_agreement)

    p = data_subparsers.add_parser("diagnose", help="biases, duplicates and prompt diversity of pair data")
    p.add_argument("file")
    p.add_argument("--position-col", help="column: true when the chosen response was shown first")
    p.add_argument("--duplicate-threshold", type=FRACTION, default=0.8, help="near-duplicate Jaccard")
    p.add_argument("--identical-threshold", type=FRACTION, default=0.9, help="near-identical similarity")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_diagnose)

    p = data_subparsers.add_parser("filter", help="drop pairs not worth training on")
    p.add_argument("file")
    p.add_argument("--out", required=True, help="output .jsonl or .json (prompt/chosen/rejected messages)")
    p.add_argument("--min-margin", type=FINITE, help="drop pairs whose score margin is below this")
    p.add_argument("--drop-ties", action="store_true", help="drop pairs whose score margin is 0")
    p.add_argument("--margin-col", help="column holding the margin (default: chosen - rejected score)")
    p.add_argument("--chosen-score-col", default="score_chosen", help="default: score_chosen")
    p.add_argument("--rejected-score-col", default="score_rejected", help="default: score_rejected")
    p.add_argument("--min-agreement", type=FRACTION, help="drop pairs whose annotator agreement is below this")
    p.add_argument("--agreement-col", default="agreement", help="default: agreement")
    p.add_argument("--max-length-ratio", type=number(float, 1), help="drop pairs with longer/shorter above this")
    p.add_argument("--drop-near-identical", type=FRACTION, metavar="SIMILARITY", help="e.g. 0.9")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_filter)

    p = data_subparsers.add_parser(
        "pairs",
        help="ratings or ranks of several responses per prompt -> preference pairs",
        description="Reads oasst:FILE (OpenAssistant trees, crowd ranks), vicuna80:FOLDER (GPT-4 scores) or a "
        "file of {prompt, responses, scores (higher is better) | ranks (0 = best)} rows; writes one row per "
        "prompt with all its responses and the chosen pairs, which `directalign train` reads as it is (each "
        "prompt computed once for all its pairs).",
    )
    p.add_argument("source", help="oasst:FILE, vicuna80:FOLDER, or a .jsonl/.json/.csv/.parquet file")
    p.add_argument("--out", required=True, help="output .jsonl or .json")
    p.add_argument("--strategy", choices=STRATEGIES, default="best-vs-worst")
    p.add_argument("--min-margin", type=number(float, 0), default=0.0, help="a pair needs this score difference")
    p.add_argument("--seed", type=NONNEGATIVE_INT, default=0, help="of best-vs-random")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_pairs)

    p = data_subparsers.add_parser("aggregate", help="one label per item from several annotators")
    _table_arguments(p)
    p.add_argument("--out", required=True, help="output .jsonl, .json or .csv")
    p.add_argument("--method", choices=METHODS, default="majority")
    p.set_defaults(func=run_aggregate)

    p = data_subparsers.add_parser("calibration", help="annotators' accuracy and drift on gold items")
    _table_arguments(p)
    p.add_argument("--gold", required=True, help="file of gold answers (item and label columns)")
    p.add_argument("--gold-item-col", help="item column of the gold file (default: --item-col)")
    p.add_argument("--gold-label-col", help="label column of the gold file (default: --label-col)")
    p.add_argument("--order-col", help="column giving the time/order of annotations (default: row order)")
    p.add_argument("--window", type=COUNT, default=20, help="gold answers per window")
    p.add_argument("--threshold", type=FRACTION, default=0.7, help="flag accuracy below this")
    p.add_argument("--min-items", type=COUNT, default=5, help="judge annotators with at least this many")
    p.set_defaults(func=run_calibration)


def run_agreement(args: argparse.Namespace) -> int:
    """Print percent agreement, kappas and alphas with bootstrap intervals, overall and per annotator."""
    report = agreement_report(_load_table(args), ratings=args.ratings, n_boot=args.bootstrap, seed=args.seed)
    if args.json:
        return _print_json({"file": args.file, **report.to_dict()})
    print(render.agreement_text(args.file, report))
    return 0


def run_diagnose(args: argparse.Namespace) -> int:
    """Print length/position bias, duplicates, contradictions, near-identical pairs, prompt diversity."""
    records = _load_records(args.file)
    shown_first = _column(args.file, records, args.position_col, _flag) if args.position_col else None
    report = diagnose(records, shown_first, args.duplicate_threshold, args.identical_threshold)
    if args.json:
        return _print_json({"file": args.file, **report.to_dict()})
    print(render.diagnostics_text(args.file, report, records))
    return 0


def run_filter(args: argparse.Namespace) -> int:
    """Apply the chosen filters (ties, margin, agreement, length ratio, near-identical); write the rest."""
    records = _load_records(args.file)
    reports = []
    if args.drop_ties:
        ties = [None if m is None else m == 0 for m in _margins(args, records)]
        records, report = filters.drop_ties(records, ties)
        reports.append(report)
    if args.min_margin is not None:
        records, report = filters.drop_low_margin(records, _margins(args, records), args.min_margin)
        reports.append(report)
    if args.min_agreement is not None:
        values = _column(args.file, records, args.agreement_col, _number)
        records, report = filters.drop_low_agreement(records, values, args.min_agreement)
        reports.append(report)
    if args.max_length_ratio is not None:
        records, report = filters.drop_extreme_length_ratio(records, args.max_length_ratio)
        reports.append(report)
    if args.drop_near_identical is not None:
        records, report = filters.drop_near_identical(records, args.drop_near_identical)
        reports.append(report)
    rows = [row for record in records for row in render.pair_rows(record)]
    _write_rows(args.out, rows)
    if args.json:
        reports_json = [asdict(r) for r in reports]
        return _print_json({"file": args.file, "out": args.out, "kept_pairs": len(rows), "filters": reports_json})
    print(render.filter_text(args.file, args.out, reports, len(rows)))
    return 0


def run_pairs(args: argparse.Namespace) -> int:
    """Turn scored responses into pairs by strategy and margin; write them as ranked rows."""
    items = _scored_responses(args.source)
    records, report = build_pairs(items, args.strategy, args.min_margin, args.seed)
    if not records:
        raise DataError(f"{args.source}: no prompt gives a pair with {args.strategy} and margin >= {args.min_margin}")
    _write_rows(args.out, [render.ranked_row(record) for record in records])
    responses = sum(len(item.responses) for item in items)
    if args.json:
        return _print_json({"source": args.source, "out": args.out, "prompts": len(items), "responses": responses,
                            "records": len(records), "pairs": report.kept, "prompts_without_pair": report.removed})
    print(f"{args.source}: {len(items)} prompts with {responses} scored responses")
    print(f"{report.name}: {report.kept} pairs from {len(records)} prompts; {report.removed} prompts gave none")
    for example in report.examples:
        print(f"  {example}")
    print(f"wrote {len(records)} rows (all responses of a prompt in one row, with its pairs) to {args.out}")
    return 0


def _scored_responses(source: str) -> list[ScoredResponses]:
    kind, _, path = source.partition(":")
    if kind == "oasst" and path:
        return oasst_scored(path)
    if kind == "vicuna80" and path:
        return vicuna80_scored(path)
    items = []
    for row_number, row in read_rows(source):
        place = f"{source}:{row_number}"
        name = "scores" if "scores" in row else "ranks"
        values, responses = row.get(name), row.get("responses")
        if row.get("prompt") is None or not isinstance(responses, list) or not isinstance(values, list):
            raise DataError(f"{place}: expected prompt, responses (a list) and scores or ranks (a list)")
        if len(values) != len(responses) or not all(isinstance(v, int | float) for v in values):
            raise DataError(f"{place}: {name} must be {len(responses)} numbers, one per response")
        scores = [float(v) if name == "scores" else float(-v) for v in values]
        items.append(ScoredResponses(row["prompt"], responses, scores, source=place))
    return items


def run_aggregate(args: argparse.Namespace) -> int:
    """Write one label per item (majority vote or Dawid-Skene) with its confidence and agreement."""
    table = _load_table(args)
    reliability = None
    if args.method == "dawid-skene":
        result = dawid_skene(table)
        labels, reliability = result.labels, result.reliability
    else:
        labels = majority_vote(table)
    _write_rows(args.out, [json_ready(asdict(label)) for label in labels])
    if args.json:
        summary = {"file": args.file, "out": args.out, "method": args.method, "items": len(labels)}
        summary["unresolved"] = sum(label.label is None for label in labels)
        return _print_json({**summary, "reliability": reliability})
    print(render.aggregate_text(args.file, args.out, args.method, labels, reliability))
    return 0


def run_calibration(args: argparse.Namespace) -> int:
    """Print each annotator's gold accuracy, windowed accuracy and flag."""
    item_col, label_col = args.gold_item_col or args.item_col, args.gold_label_col or args.label_col
    gold = gold_labels(read_rows(args.gold), item_col, label_col, source=args.gold)
    rows = _long_rows(args)
    results = gold_calibration(
        rows,
        gold,
        item_col="item_id" if args.label_cols else args.item_col,
        annotator_col="annotator_id" if args.label_cols else args.annotator_col,
        label_col="label" if args.label_cols else args.label_col,
        order_col=args.order_col,
        window=args.window,
        threshold=args.threshold,
        min_items=args.min_items,
        source=args.file,
    )
    if not results:
        raise DataError(f"{args.file}: no annotation of any of the {len(gold)} gold items in {args.gold}")
    if args.json:
        return _print_json({"file": args.file, "gold": args.gold, "annotators": [asdict(r) for r in results]})
    print(render.calibration_text(args.file, args.gold, results, args.threshold, args.window))
    return 0


def _table_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help=".jsonl, .json, .csv (optionally .gz) or .parquet table of labels")
    p.add_argument("--item-col", default="item_id", help="column naming the item (default: item_id)")
    p.add_argument("--annotator-col", default="annotator_id", help="default: annotator_id")
    p.add_argument("--label-col", default="label", help="default: label")
    p.add_argument("--label-cols", type=lambda s: s.split(","), help="wide table: one column per annotator, a,b,c")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _long_rows(args: argparse.Namespace) -> list:
    rows = read_rows(args.file)
    return wide_to_long(rows, args.item_col, args.label_cols, args.file) if args.label_cols else rows


def _load_table(args: argparse.Namespace) -> RatingTable:
    if args.label_cols:
        return rating_table(_long_rows(args), source=args.file)
    return rating_table(read_rows(args.file), args.item_col, args.annotator_col, args.label_col, args.file)


def _load_records(path: str) -> list[PreferenceRecord]:
    from directalign.cli.common import load_data

    records = load_data(path).records
    if not records:
        raise DataError(f"{path}: no usable preference pairs")
    return records


def _column(
    path: str, records: Sequence[PreferenceRecord], col: str, convert: Callable[[Any], Any] = lambda v: v
) -> list[Any]:
    """convert(value of `col`) in each record's own row, found through its source "file:N".

    convert raises ValueError for a value it cannot use; the DataError then names the row and field.
    """
    rows = _rows_by_number(path)
    values = []
    for record in records:
        number = record.source.rsplit(":", 1)[-1]
        row = rows.get(int(number)) if number.isdigit() else None
        if row is None:
            raise DataError(f"{record.source}: cannot find the row of this record in {path}")
        if col not in row:
            raise DataError(f"{record.source}: missing field {col!r}")
        try:
            values.append(convert(row[col]))
        except ValueError as err:
            raise DataError(f"{record.source}: field {col!r}: {err}") from err
    return values


@functools.lru_cache(maxsize=4)
def _rows_by_number(path: str) -> dict[int, dict[str, Any]]:
    return dict(read_rows(path))


def _margins(args: argparse.Namespace, records: Sequence[PreferenceRecord]) -> list[float | None]:
    if args.margin_col:
        return _column(args.file, records, args.margin_col, _number)
    chosen = _column(args.file, records, args.chosen_score_col, _number)
    rejected = _column(args.file, records, args.rejected_score_col, _number)
    return [None if c is None or r is None else c - r for c, r in zip(chosen, rejected, strict=True)]


def _number(value: Any) -> float | None:
    value = coerce_label(value)
    if value is not None and not isinstance(value, int | float):
        raise ValueError(f"must be a number, found {value!r}")
    return value


def _flag(value: Any) -> bool | None:
    flags = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "none": None}
    text = str(coerce_label(value)).lower()
    if text not in flags:
        raise ValueError(f"must be true or false, found {value!r}")
    return flags[text]


def _write_rows(path: str, rows: list[dict[str, Any]]) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == ".jsonl":
        target.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    elif target.suffix == ".json":
        target.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    elif target.suffix == ".csv":
        render.write_csv(target, rows)
    else:
        raise DataError(f"{path}: output must end in .jsonl, .json or .csv")


def _print_json(value: dict[str, Any]) -> int:
    print(json.dumps(json_ready(value), ensure_ascii=False))
    return 0
