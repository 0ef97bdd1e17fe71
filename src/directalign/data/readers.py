"""Files to numbered rows: JSON lines, JSON, CSV (each optionally gzip-compressed) and Parquet.

A file that cannot be read at all (not UTF-8, not complete gzip, not JSON, not Parquet) is a DataError naming
the file and, where there is one, the line. A row the file's own format makes ambiguous is not guessed at but
returned as a `BadRow`, which the schema parser skips and counts like any other unusable row: a CSV row whose
field count differs from the header's (an unquoted comma), or a JSON object with a key given twice (JSON
parsers keep the last value without a word).

Folders (save_to_disk output, folders in Hub layout) and Hub dataset ids are read through `datasets`
(directalign.data.hub).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from directalign.errors import DataError

DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")
PROGRESS_DELAY_S = 2.0  # bars appear only for reads that last longer than this
_BOM = "\ufeff"  # Excel and Notepad start UTF-8 files with it


@dataclass(frozen=True)
class BadRow:
    """A row that its file's format makes ambiguous; the parser skips it as `reason (field: detail)`."""

    reason: str
    field: str
    detail: str = ""


def shown(name: object, limit: int = 40) -> str:
    """A field name or value as it may appear in a one-line message: cut to limit, escaped if not printable."""
    text = str(name)[:limit]
    return text if text.isprintable() else repr(text)


def read_file_rows(path: Path, split: str | None = None) -> list[tuple[int, Any]]:
    """Numbered rows of a data file (1-based line for JSON lines and CSV, 1-based row elsewhere).

    split picks the key of a JSON object holding the rows (default "train", then "data").
    """
    name = path.name.lower()
    compressed = name.endswith(".gz")
    suffix = Path(name.removesuffix(".gz")).suffix
    if suffix == ".parquet" and not compressed:
        return _read_parquet(path)
    readers = {".jsonl": _jsonl_rows, ".ndjson": _jsonl_rows, ".json": _json_rows, ".csv": _csv_rows}
    if suffix not in readers:
        raise DataError(
            f"{path}: unsupported file type; expected .jsonl, .json, .csv (each optionally .gz), .parquet, "
            "a folder (save_to_disk output or data files in Hub layout) or a Hub dataset id (owner/name)"
        )
    return readers[suffix](_read_text(path, compressed), path, split)


def _read_text(path: Path, compressed: bool) -> str:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read the file ({err.strerror or err})") from err
    if compressed:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:  # not gzip, truncated, or corrupt deflate data
            raise DataError(f"{path}: not a complete gzip file ({err})") from err
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x} at column {column}); "
            "re-save the file as UTF-8"
        ) from err
    return text.removeprefix(_BOM)


# JSON


class _Duplicated(dict):
    """A decoded object in which some key was given twice; `duplicates` names them."""

    duplicates: tuple[str, ...] = ()


class _Decoder:
    """json.loads that marks objects repeating a key (as `_Duplicated`) and counts them in `marked`.

    Nesting deeper than the interpreter's recursion limit and integers of more than 4,300 digits raise
    ValueError like any other invalid JSON, not a crash.
    """

    def __init__(self) -> None:
        self.marked = 0
        self._decoder = json.JSONDecoder(object_pairs_hook=self._object)

    def _object(self, pairs: list[tuple[str, Any]]) -> dict:
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        self.marked += 1
        dup = _Duplicated(obj)
        seen: set[str] = set()
        dup.duplicates = tuple(k for k, _ in pairs if k in seen or seen.add(k))
        return dup

    def decode(self, text: str) -> Any:
        try:
            return self._decoder.decode(text)
        except RecursionError as err:
            raise ValueError("nested too deeply") from err

    def row(self, text: str) -> Any:
        """The decoded value, or a BadRow when an object in it repeats a key."""
        before = self.marked
        value = self.decode(text)
        return value if self.marked == before else _checked(value)


def duplicate_key(value: Any) -> str | None:
    """The first key given twice in an object anywhere inside a decoded value, as a dotted path, or None."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, _Duplicated):
            return where + item.duplicates[0]
        if isinstance(item, dict):
            stack.extend((f"{where}{k}.", v) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((f"{where.removesuffix('.')}[{i}].", v) for i, v in reversed(list(enumerate(item))))
    return None


def _checked(value: Any) -> Any:
    if (key := duplicate_key(value)) is not None:
        return BadRow("duplicate key", shown(key, 80), "JSON keeps only the last value")
    return value


def _json_error(path: Path, err: ValueError, line: int | None = None) -> DataError:
    if isinstance(err, json.JSONDecodeError):
        return DataError(f"{path}:{line or err.lineno}: not valid JSON ({err.msg}, column {err.colno})")
    return DataError(f"{path}:{line or 1}: not valid JSON ({err})")


def _lines(text: str) -> list[str]:
    # JSON strings cannot hold a raw CR or LF, so any of \n, \r\n, \r ends a row; never split on U+2028,
    # which JSON allows unescaped (str.splitlines would).
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.split("\n")


def _jsonl_rows(text: str, path: Path, split: str | None = None) -> list[tuple[int, Any]]:
    rows, decoder = [], _Decoder()
    lines = _lines(text)
    bar = tqdm(lines, desc=f"reading {path.name}", unit=" lines", delay=PROGRESS_DELAY_S, leave=False)
    for number, line in enumerate(bar, start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, decoder.row(line)))
        except ValueError as err:
            raise _json_error(path, err, number) from err
    return rows


def _json_rows(text: str, path: Path, split: str | None) -> list[tuple[int, Any]]:
    decoder = _Decoder()
    try:
        data = decoder.decode(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # JSON lines under a .json name, as datasets' to_json writes them
            return _jsonl_rows(text, path)
        raise _json_error(path, err) from err
    except ValueError as err:
        raise _json_error(path, err) from err
    if isinstance(data, _Duplicated):
        raise DataError(f"{path}: the top-level key {shown(data.duplicates[0])!r} is given twice")
    if isinstance(data, dict):
        keys = [split] if split else ["train", "data"]
        key = next((k for k in keys if isinstance(data.get(k), list)), None)
        if key is None:
            found = ", ".join(shown(k) for k in list(data)[:10]) or "none"
            raise DataError(
                f"{path}: expected a list of rows or an object with a list under "
                f"{' or '.join(map(repr, keys))}; found keys: {found}"
            )
        data = data[key]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of rows, found a {type(data).__name__}")
    rows = list(enumerate(data, start=1))
    return [(n, _checked(row)) for n, row in rows] if decoder.marked else rows


# CSV


def _csv_rows(text: str, path: Path, split: str | None = None) -> list[tuple[int, Any]]:
    csv.field_size_limit(2**31 - 1)  # the default, 128 KiB a cell, is shorter than some long responses
    # strict: a quote left open is an error, not a field that silently swallows the rest of the file.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, [])
    except csv.Error as err:
        raise DataError(f"{path}:1: not valid CSV ({err})") from err
    _check_header(header, path)
    return list(_csv_records(reader, header, path))


def _check_header(header: list[str], path: Path) -> None:
    seen: set[str] = set()
    for column, name in enumerate(header, start=1):
        if name in seen:
            raise DataError(f"{path}:1: column {column} repeats the header name {name[:40]!r}")
        seen.add(name)


def _csv_records(reader: Any, header: list[str], path: Path) -> Iterator[tuple[int, Any]]:
    line = reader.line_num
    rows = iter(tqdm(reader, desc=f"reading {path.name}", unit=" rows", delay=PROGRESS_DELAY_S, leave=False))
    while True:
        try:
            cells = next(rows, None)
        except csv.Error as err:
            raise DataError(f"{path}:{line + 1}: not valid CSV from this line on ({err})") from err
        if cells is None:
            return
        start, line = line + 1, reader.line_num
        if not cells:  # a blank line
            continue
        if len(cells) != len(header):
            # An unquoted comma (or a missing cell) shifts every later field; guessing would train on garbage.
            detail = f"{len(cells)} fields, the header has {len(header)}"
            yield start, BadRow("field count differs from the header", "row", detail)
            continue
        row = {}
        for name, cell in zip(header, cells, strict=True):
            row[name] = _csv_cell(cell)
            if isinstance(row[name], BadRow):
                row = BadRow(row[name].reason, f"{name}.{row[name].field}".removesuffix("."), row[name].detail)
                break
        yield start, row


def _csv_cell(value: str) -> Any:
    """CSV has only strings: a cell holding a JSON list or object (message lists) is decoded."""
    if value and value.lstrip()[:1] in ("[", "{"):
        try:
            decoded = _Decoder().row(value)
        except ValueError:
            return value
        if isinstance(decoded, list | dict | BadRow):
            return decoded
    return value


# Parquet


def _read_parquet(path: Path) -> list[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (OSError, ValueError, pa.ArrowException) as err:  # pyarrow's errors are ArrowException subclasses
        raise DataError(f"{path}: cannot read the Parquet file ({_first_line(err)})") from err
    return list(enumerate(rows, start=1))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]
