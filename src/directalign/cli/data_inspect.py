"""`directalign data inspect FILE`: the schema, usable rows, skipped rows and token lengths of a data file."""

from __future__ import annotations

import argparse
import json

from directalign.cli.common import COUNT, number
from directalign.data.formats import load_records
from directalign.data.inspect import format_inspection, inspect_records

DEFAULT_MODEL = "smollm2-135m-instruct"


def register(data_subparsers: argparse._SubParsersAction) -> None:
    parser = data_subparsers.add_parser(
        "inspect",
        help="detect a data file's schema and report skipped rows and token lengths",
        description=__doc__,
    )
    parser.add_argument(
        "file", help=".jsonl, .json, .csv, .parquet (text formats also .gz) or a datasets folder"
    )
    parser.add_argument("--split", default=None, help="split of a DatasetDict folder or JSON object (train)")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"tokenizer: {DEFAULT_MODEL} (embedded), a local folder or a hub id (default: %(default)s)",
    )
    parser.add_argument("--max-length", type=number(int, 2), default=1024, help="prompt + response tokens (1024)")
    parser.add_argument("--max-prompt-length", type=COUNT, default=512, help="prompt tokens (512)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_records(args.file, split=args.split)  # before the tokenizer (and torch): a bad file fails fast
    from directalign.models.loading import load_tokenizer

    summary = inspect_records(
        loaded,
        load_tokenizer(args.model),
        max_length=args.max_length,
        max_prompt_length=args.max_prompt_length,
    )
    print(json.dumps(summary, indent=2) if args.json else format_inspection(summary))
    return 0
