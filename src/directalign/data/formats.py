"""Load preference data: read a source's rows, detect their schema and parse each into a PreferenceRecord.

Sources (directalign.data.readers, directalign.data.hub): .jsonl, .json (a list of rows, or {"train" | "data":
[...]}), .csv, .parquet, the text formats also gzip-compressed, folders written by `datasets`' save_to_disk or
holding data files in Hub layout, and Hub dataset ids. Schemas: directalign.data.schemas. A row that cannot be
used is skipped and counted by reason (`LoadResult.skipped`, with the first few in `skipped_examples`); its
place is "source:N", N the 1-based line for .jsonl and .csv files and the 1-based row elsewhere.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from directalign.data.hub import DEFAULT_SPLIT, Part, looks_like_hub_id, read_folder, read_hub
from directalign.data.readers import PROGRESS_DELAY_S, BadRow, read_file_rows, shown
from directalign.data.schemas import (
    CONVERSATIONAL,
    HH_RLHF,
    RANKED,
    ROLES,
    SCHEMAS,
    SHAREGPT,
    TEXT,
    UNPAIRED,
    SkipRow,
    detect_schema,
    parse_row,
)
from directalign.data.types import PreferenceRecord
from directalign.errors import DataError

__all__ = [
    "CONVERSATIONAL", "HH_RLHF", "RANKED", "ROLES", "SCHEMAS", "SHAREGPT", "TEXT", "UNPAIRED",
    "MAX_SKIPPED_EXAMPLES", "LoadResult", "detect_schema", "load_records", "read_rows", "records_from_rows",
]  # fmt: skip

MAX_SKIPPED_EXAMPLES = 5


@dataclass
class LoadResult:
    """The records parsed from one file, its detected schema and what was skipped and why."""

    records: list[PreferenceRecord]
    schema: str
    path: str
    num_rows: int
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_examples: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        """What was skipped, for the console: a count by reason, then the first rows skipped, by file:row."""
        skipped = sum(self.skipped.values())
        if not skipped:
            return []
        return [f"{self.path}: skipped {skipped} of {self.num_rows} rows ({dict(self.skipped)})",
                *(f"  {example}" for example in self.skipped_examples)]


def load_records(
    path: str | Path, *, split: str | None = None, config: str | None = None
) -> LoadResult:
    """Read preference data, detect its schema and parse every row.

    path: a data file, a folder (save_to_disk output or data files in Hub layout) or a Hub dataset id
    ("owner/name", read with `datasets.load_dataset(path, name=config, split=split)`).
    split: the split of a DatasetDict (default "train", else an error listing the splits), or the key of a
    JSON object holding the rows (default "train", then "data"). config: the Hub dataset's configuration.
    Raises DataError naming the file (and line) for a missing or unreadable source, a malformed JSON line, a
    Hub id that cannot be loaded, or a source where no row parses.
    """
    parts = _read(path, split, config)
    results = [_parse_rows(rows, source) for rows, source in parts]
    return results[0] if len(results) == 1 else _merged(results, f"{path}[{split or DEFAULT_SPLIT}]")


def read_rows(
    path: str | Path, split: str | None = None, *, config: str | None = None
) -> list[tuple[int, Any]]:
    """Raw rows of any source `load_records` reads, each with its 1-based line (JSONL, CSV) or row number.

    A row its file makes ambiguous (a CSV row with the wrong number of fields, a JSON key given twice) is a
    DataError here, since raw rows have no skipped-row report.
    """
    rows = []
    for part_rows, source in _read(path, split, config):
        for number, row in part_rows:
            if isinstance(row, BadRow):
                raise DataError(SkipRow(row.reason, row.field, row.detail).describe(f"{source}:{number}"))
        rows += part_rows
    return rows


def _read(path: str | Path, split: str | None, config: str | None) -> list[Part]:
    local = Path(path)
    if local.is_dir():
        return read_folder(local, split, config)
    if local.is_file():
        return [(read_file_rows(local, split), str(local))]
    if local.exists():
        raise DataError(f"{local}: not a regular file or folder")
    if looks_like_hub_id(str(path)):
        return [read_hub(str(path), split, config)]
    raise DataError(f"{local}: no such file or folder")


def _merged(results: list[LoadResult], source: str) -> LoadResult:
    """One result for a split held in several files (shards), each parsed with its own places."""
    schemas = {result.schema for result in results}
    if len(schemas) > 1:
        found = ", ".join(f"{result.path} is {result.schema}" for result in results)
        raise DataError(f"{source}: its files are in different schemas ({found})")
    skipped = sum((Counter(result.skipped) for result in results), Counter())
    examples = [example for result in results for example in result.skipped_examples][:MAX_SKIPPED_EXAMPLES]
    records = [record for result in results for record in result.records]
    rows = sum(result.num_rows for result in results)
    return LoadResult(records, results[0].schema, source, rows, dict(skipped.most_common()), examples)


def records_from_rows(rows: Iterable[Any], source_name: str) -> LoadResult:
    """Parse in-memory rows (dicts in any supported schema); places are "source_name:N", N the 1-based row."""
    return _parse_rows(list(enumerate(rows, start=1)), source_name)


# Rows to records.


def _parse_rows(numbered_rows: list[tuple[int, Any]], source: str) -> LoadResult:
    if not numbered_rows:
        raise DataError(f"{source}: no rows")
    schema = next((s for _, row in numbered_rows if (s := detect_schema(row))), None)
    if schema is None:
        raise DataError(_no_schema_message(source, numbered_rows))
    records, skipped, examples = [], Counter(), []
    bar = tqdm(numbered_rows, desc=f"parsing {Path(source).name}", unit=" rows", delay=PROGRESS_DELAY_S, leave=False)
    for number, row in bar:
        place = f"{source}:{number}"
        try:
            prompt, responses, pairs, labels = parse_row(schema, row)
        except SkipRow as skip:
            skipped[skip.reason] += 1
            if len(examples) < MAX_SKIPPED_EXAMPLES:
                examples.append(skip.describe(place))
            continue
        records.append(PreferenceRecord(prompt, responses, pairs=pairs, source=place, labels=labels))
    if not records:
        raise DataError(_none_usable_message(source, len(numbered_rows), schema, skipped, examples))
    return LoadResult(records, schema, source, len(numbered_rows), dict(skipped.most_common()), examples)


def _none_usable_message(source: str, n: int, schema: str | None, skipped: Counter, examples: list[str]) -> str:
    reasons = ", ".join(f"{reason} {count}" for reason, count in skipped.most_common())
    usable = f" as {schema}" if schema else ""
    return f"{source}: none of {n} rows is usable{usable} ({reasons}); first: {examples[0]}"


def _no_schema_message(source: str, numbered_rows: list[tuple[int, Any]]) -> str:
    readable = [(n, row) for n, row in numbered_rows if not isinstance(row, BadRow)]
    if not readable:  # every row is ambiguous in its file (e.g. a CSV whose rows all have the wrong field count)
        skips = [(n, SkipRow(row.reason, row.field, row.detail)) for n, row in numbered_rows]
        skipped = Counter(skip.reason for _, skip in skips)
        examples = [skip.describe(f"{source}:{n}") for n, skip in skips[:1]]
        return _none_usable_message(source, len(numbered_rows), None, skipped, examples)
    number, row = readable[0]
    if isinstance(row, Mapping):
        fields = [f"{shown(key)} ({type(value).__name__})" for key, value in list(row.items())[:12]]
        found = ", ".join(fields + ["..."] * (len(row) > 12)) or "none"
    else:
        found = f"none, it is a {type(row).__name__}"
    expected = "; ".join(f"{name}: {description}" for name, description in SCHEMAS.items())
    return f"{source}: no row matches a preference schema ({expected}); fields of row {number}: {found}"
