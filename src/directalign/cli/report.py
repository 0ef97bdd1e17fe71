"""`directalign report RUN_DIR`: a self-contained HTML page of a training run or a sweep."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="write an HTML report (plots, health warnings, generations; sweep frontier and table)",
        description="Write report.html into a run folder (metrics.jsonl) or a sweep folder (results.json): "
        "one self-contained file with every plot embedded.",
    )
    p.add_argument("folder", help="a training run's output_dir, or a sweep folder")
    p.add_argument("-o", "--output", help="where to write the page (default: FOLDER/report.html)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from directalign.reports.html import write_report

    print(f"report: {write_report(args.folder, args.output)}")
    return 0
