"""Summarise a preference data file before training: schema, usable rows, skipped rows, token lengths."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from directalign.data.formats import LoadResult, load_records
from directalign.data.tokenize import tokenize_records

PERCENTILES = (50, 90, 99)


def inspect_file(
    path: str | Path,
    tokenizer: Any = None,
    *,
    split: str | None = None,
    config: str | None = None,
    **tokenize_kwargs: Any,
) -> dict[str, Any]:
    """Load a file, folder or Hub dataset and summarise it; token lengths and truncation only with a tokenizer.

    split and config go to `load_records`; tokenize_kwargs to `tokenize_records` (max_length,
    max_prompt_length, use_chat_template).
    """
    return inspect_records(load_records(path, split=split, config=config), tokenizer, **tokenize_kwargs)


def inspect_records(loaded: LoadResult, tokenizer: Any = None, **tokenize_kwargs: Any) -> dict[str, Any]:
    """The summary `inspect_file` returns, for records already loaded (a plain dict, ready for JSON)."""
    summary: dict[str, Any] = {
        "path": loaded.path,
        "schema": loaded.schema,
        "rows": loaded.num_rows,
        "records": len(loaded.records),
        "skipped": dict(loaded.skipped),
        "skipped_examples": list(loaded.skipped_examples),
    }
    if tokenizer is None:
        return summary
    stats = tokenize_records(loaded.records, tokenizer, **tokenize_kwargs).stats
    summary["chat_template"] = stats.chat_template
    summary["tokens"] = {
        "prompt": percentiles(stats.prompt_lengths),
        "chosen": percentiles(stats.chosen_lengths),
        "rejected": percentiles(stats.rejected_lengths),
    }
    summary["truncation"] = {
        "max_length": stats.max_length,
        "max_prompt_length": stats.max_prompt_length,
        "prompts_truncated": stats.prompts_truncated,
        "responses_truncated": stats.responses_truncated,
        "responses": stats.num_responses,
        "prompt_boundary_mismatches": stats.prompt_boundary_mismatches,
    }
    return summary


def percentiles(values: list[int]) -> dict[str, int]:
    """Nearest-rank p50/p90/p99 and max (actual lengths, never interpolated); zeros when empty."""
    ordered = sorted(values)
    if not ordered:
        return {**{f"p{p}": 0 for p in PERCENTILES}, "max": 0}
    ranks = {f"p{p}": ordered[max(math.ceil(p / 100 * len(ordered)), 1) - 1] for p in PERCENTILES}
    return {**ranks, "max": ordered[-1]}


def format_inspection(summary: dict[str, Any]) -> str:
    """The summary as a plain-text report."""
    lines = [
        f"file      {summary['path']}",
        f"schema    {summary['schema']}",
        f"rows      {summary['rows']}",
        f"records   {summary['records']}",
        f"skipped   {summary['rows'] - summary['records']}",
    ]
    width = max(map(len, summary["skipped"]), default=0)
    lines += [f"  {reason:<{width}}  {count:>6}" for reason, count in summary["skipped"].items()]
    lines += [f"  {example}" for example in summary["skipped_examples"]]
    if "tokens" in summary:
        template = "chat template" if summary["chat_template"] else "plain text, no chat template"
        columns = list(next(iter(summary["tokens"].values())))
        lines += ["", f"tokens ({template})", "            " + "".join(f"{c:>8}" for c in columns)]
        for part, row in summary["tokens"].items():
            lines.append(f"  {part:<10}" + "".join(f"{row[c]:>8}" for c in columns))
        cut = summary["truncation"]
        lines += [
            "",
            f"truncation (max_length {cut['max_length']}, max_prompt_length {cut['max_prompt_length']})",
            f"  prompts truncated    {cut['prompts_truncated']:>6} of {summary['records']}",
            f"  responses truncated  {cut['responses_truncated']:>6} of {cut['responses']}",
        ]
        if cut["prompt_boundary_mismatches"]:
            lines.append(
                f"  prompts not a prefix of prompt + response under the template: "
                f"{cut['prompt_boundary_mismatches']} (their prompt ids stop where the two diverge)"
            )
    return "\n".join(lines)
