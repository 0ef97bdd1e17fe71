"""Hostile and broken data, case by case: each gives one clear error naming the file (and line, and field), or
skips and names the bad row while the good rows load; never a traceback, never a silently wrong record.

The table is the data part of the reliability report (README): `pytest tests/data/test_hostile.py -v`.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset, DatasetDict

from directalign.cli.main import main
from directalign.data.formats import load_records, read_rows
from directalign.errors import DataError

GOOD = {"prompt": "q", "chosen": "a", "rejected": "b"}


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def jsonl(*rows) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


@dataclass
class Error:
    """load_records raises a DataError matching `pattern` after "<path>" (a regex)."""

    pattern: str


@dataclass
class Skips:
    """The good rows load; the first skipped example is "<path>:<line>: " + `example` (a regex)."""

    example: str
    loaded: int = 1


def _gz(text: str) -> bytes:
    return gzip.compress(text.encode())


def _parquet(table: pa.Table):
    def write(path):
        pq.write_table(table, path)

    return write


def _saved(dataset):
    def write(path):
        dataset.save_to_disk(str(path))

    return write


def _corrupt_saved(path):
    Dataset.from_list([GOOD] * 2).save_to_disk(str(path))
    (path / "data-00000-of-00001.arrow").write_bytes(b"\x00junk" * 10)


def _folder_of(files: dict):
    def write(path):
        path.mkdir()
        for name, text in files.items():
            (path / name).write_text(text)

    return write


TWO_SPLITS = DatasetDict({"train_prefs": Dataset.from_list([GOOD]), "test_prefs": Dataset.from_list([GOOD])})
RANKED = {"prompt": "q", "responses": ["a", "b", "c"]}
CONV = {"prompt": [user("q")], "chosen": [assistant("a")], "rejected": [assistant("b")]}
SHAREGPT = {"conversations": [{"from": "human", "value": "x"}], "chosen": "a", "rejected": "b"}
KTO = {"prompt": "q", "completion": "a", "label": True}
CSV_HEADER = "prompt,chosen,rejected\n"
NESTED_DUPLICATE = '{"prompt": [{"role": "user", "content": "q", "content": "x"}], "chosen": [], "rejected": []}'
WRONG_TYPES = pa.table({"prompt": [1], "chosen": [[2]], "rejected": [3.0]})
INT_RESPONSES = pa.table({"prompt": ["q"], "chosen": [1], "rejected": [2]})

# name: (file name, content (str, bytes or a writer of the path), expected)
CASES = {
    # Files that cannot be read: one error naming the file, and the line where there is one.
    "truncated .jsonl.gz": ("d.jsonl.gz", _gz(jsonl(*[GOOD] * 40))[:60], Error(r": not a complete gzip file")),
    ".gz that is not gzip": ("d.jsonl.gz", b"plain text", Error(r": not a complete gzip file \(Not a gzipped")),
    "gzip of binary junk": ("d.csv.gz", gzip.compress(b"\xff\xfe\x00junk"), Error(r":1: not UTF-8 text")),
    "binary junk .jsonl": ("d.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00", Error(r":1: not UTF-8 text \(byte 0x89")),
    "Latin-1 bytes on line 2": (
        "d.jsonl", jsonl(GOOD).encode() + '{"prompt": "caf\xe9"}\n'.encode("latin-1"),
        Error(r":2: not UTF-8 text \(byte 0xe9 at column 16\)"),
    ),
    "empty .jsonl": ("d.jsonl", "", Error(r": no rows$")),
    "blank lines only": ("d.jsonl", "\n \n\r\n", Error(r": no rows$")),
    "empty .json": ("d.json", "", Error(r":1: not valid JSON")),
    "empty .csv": ("d.csv", "", Error(r": no rows$")),
    "empty .parquet": ("d.parquet", b"", Error(r": cannot read the Parquet file")),
    "junk .parquet": ("d.parquet", os.urandom(64), Error(r": cannot read the Parquet file")),
    "empty folder": ("d", lambda path: path.mkdir(), Error(r": an empty folder")),
    "folder without data files": ("d", _folder_of({"notes.txt": "hello"}), Error(r"/notes.txt: unsupported file type")),
    "unsupported file type": ("d.txt", "hello", Error(r": unsupported file type")),
    "a device, not a file": ("/dev/null", None, Error(r": not a regular file or folder")),
    "malformed JSON line": ("d.jsonl", jsonl(GOOD, "{oops"), Error(r":2: not valid JSON")),
    "JSON top-level scalar": ("d.json", "3", Error(r": expected a list of rows, found a int")),
    "JSON top-level null": ("d.json", "null", Error(r": expected a list of rows, found a NoneType")),
    "JSON object without a row list": ("d.json", '{"rows": 1}', Error(r": expected a list of rows or an object")),
    "JSON nested 100,000 deep": ("d.jsonl", "[" * 100_000 + "]" * 100_000, Error(r":1: not valid JSON \(nested")),
    "a 5,000-digit integer": ("d.jsonl", '{"prompt": ' + "9" * 5000 + "}", Error(r":1: not valid JSON \(Exceeds")),
    "top-level key given twice": ("d.json", '{"train": [], "train": []}', Error(r": the top-level key 'train'")),
    "CSV header repeats a name": ("d.csv", "prompt,chosen,chosen\nq,a,b\n", Error(r":1: column 3 repeats")),
    "CSV unterminated quote": (
        "d.csv", CSV_HEADER + 'q,"a,b\n', Error(r":2: not valid CSV from this line on \(unexpected end of data\)"),
    ),
    "CSV text after a closing quote": (
        "d.csv", CSV_HEADER + 'q,a,b\nq,"a"b,c\n', Error(r":3: not valid CSV from this line on \(',' expected"),
    ),
    "Parquet of wrong column types": ("d.parquet", _parquet(WRONG_TYPES), Error(r": no row matches a preference")),
    "Parquet string prompt, int responses": (
        "d.parquet", _parquet(INT_RESPONSES), Error(r": none of 1 rows is usable as text \(not a string 1\)"),
    ),
    "corrupt save_to_disk folder": ("d", _corrupt_saved, Error(r": not a readable save_to_disk folder")),
    "DatasetDict without train, no split": (
        "d", _saved(TWO_SPLITS), Error(r": no split 'train'; it has train_prefs, test_prefs"),
    ),
    # Rows that cannot be used: skipped, counted and named (file:line, reason, field); the good rows load.
    "CSV row with an unquoted comma": (
        "d.csv", CSV_HEADER + "q,yes, sure,no\nq,a,b\n",
        Skips(r"2: field count differs from the header \(row: 4 fields, the header has 3\)"),
    ),
    "CSV row with a missing cell": ("d.csv", CSV_HEADER + "q,a\nq,a,b\n", Skips(r"2: field count differs")),
    "JSON key given twice": (
        "d.jsonl", '{"prompt": "q", "chosen": "a", "chosen": "b", "rejected": "c"}\n' + jsonl(GOOD),
        Skips(r"1: duplicate key \(chosen: JSON keeps only the last value\)"),
    ),
    "nested key given twice": (
        "d.jsonl", jsonl(GOOD, NESTED_DUPLICATE), Skips(r"2: duplicate key \(prompt\[0\]\.content"),
    ),
    "unknown message role": (
        "d.jsonl", jsonl({**CONV, "prompt": [{"role": "wizard", "content": "q"}]}, CONV),
        Skips(r"1: unknown role \(prompt\[0\]\.role: 'wizard', not one of system, user, assistant\)"),
    ),
    "a user turn as the response": (
        "d.jsonl", jsonl({**CONV, "chosen": [user("a")]}, CONV),
        Skips(r"1: response is not an assistant turn \(chosen: role 'user'\)"),
    ),
    "unknown ShareGPT speaker": (
        "d.jsonl", jsonl({**SHAREGPT, "conversations": [{"from": "observation", "value": "x"}]}, SHAREGPT),
        Skips(r"1: unknown role \(conversations\.from: 'observation'"),
    ),
    "nested nulls": (
        "d.jsonl", jsonl({**CONV, "chosen": [None], "rejected": [{"role": None, "content": None}]}, CONV),
        Skips(r"1: not a list of \{role, content\} messages \(chosen\)"),
    ),
    "null prompt": ("d.jsonl", jsonl({**GOOD, "prompt": None}, GOOD), Skips(r"1: missing field \(prompt\)")),
    "NaN score": (
        "d.jsonl", '{"prompt": "q", "responses": ["a", "b", "c"], "scores": [NaN, 1, 2]}\n'
        + jsonl({**RANKED, "scores": [3, 2, 1]}), Skips(r"1: not a finite number \(scores\[0\]: nan\)"),
    ),
    "infinite score": (
        "d.jsonl", '{"prompt": "q", "responses": ["a", "b"], "scores": [Infinity, 1]}\n'
        + jsonl({**RANKED, "scores": [3, 2, 1]}), Skips(r"1: not a finite number \(scores\[0\]: inf\)"),
    ),
    "negative rank": (
        "d.jsonl", jsonl({**RANKED, "ranks": [0, -1, 2]}, {**RANKED, "ranks": [0, 1, 2]}),
        Skips(r"1: not a rank \(a whole number >= 0, 0 = best\) \(ranks\[1\]: -1\)"),
    ),
    "fractional rank": (
        "d.jsonl", jsonl({**RANKED, "ranks": [0, 1.5, 2]}, {**RANKED, "ranks": [0, 1, 2]}),
        Skips(r"1: not a rank .* \(ranks\[1\]: 1\.5\)"),
    ),
    "booleans as pair indices": (
        "d.jsonl", jsonl({**RANKED, "pairs": [[True, False]]}, {**RANKED, "pairs": [[1, 0]]}),
        Skips(r"1: not a list of \[better, worse\] indices below 3 \(pairs\)"),
    ),
    "label out of range": (
        "d.jsonl", jsonl({**KTO, "label": 2}, KTO),
        Skips(r"1: unrecognised label \(label: 2\)"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input(tmp_path, case):
    name, content, expected = CASES[case]
    path = Path(name) if name.startswith("/") else tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", newline="")
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        content(path)
    if isinstance(expected, Error):
        with pytest.raises(DataError) as err:
            load_records(path)
        message = str(err.value)
        assert "\n" not in message
        assert re.match(re.escape(str(path)) + expected.pattern, message), message
        return
    result = load_records(path)
    assert len(result.records) == expected.loaded
    assert sum(result.skipped.values()) == result.num_rows - expected.loaded
    assert re.match(re.escape(f"{path}:") + expected.example, result.skipped_examples[0]), result.skipped_examples
    if "field count" in expected.example or "duplicate key" in expected.example:
        # Raw rows (read_rows, for the rating tables) have no skip report: the same row is an error there.
        with pytest.raises(DataError, match=re.escape(f"{path}:") + expected.example.split(" (")[0]):
            read_rows(path)


def test_huge_scores_order_exactly(tmp_path):
    path = tmp_path / "ranked.jsonl"
    path.write_text(jsonl({**RANKED, "scores": [10**400, -(10**400), 10**400 - 1]}))
    assert load_records(path).records[0].pairs == [(0, 1), (0, 2), (2, 1)]


def test_line_endings_and_unicode_separators(tmp_path):
    """CRLF, lone CR, a UTF-8 BOM and U+2028 inside a string (valid JSON, a line break to str.splitlines)."""
    path = tmp_path / "mixed.jsonl"
    rows = [{**GOOD, "chosen": "a\u2028b"}, GOOD, {**GOOD, "rejected": "c"}]
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows[:2]).encode()
                     + b"\r" + json.dumps(rows[2]).encode())
    result = load_records(path)
    assert [r.source for r in result.records] == [f"{path}:1", f"{path}:2", f"{path}:3"]
    assert result.records[0].chosen == [assistant("a\u2028b")]
    csv_path = tmp_path / "bom.csv"
    csv_path.write_bytes(b"\xef\xbb\xbfprompt,chosen,rejected\r\nq,a,b\r\n")
    assert load_records(csv_path).records[0].prompt == [user("q")]


def test_every_command_reading_data_fails_in_one_line_on_a_truncated_gz(tmp_path, capsys):
    path = tmp_path / "pairs.jsonl.gz"
    path.write_bytes(_gz(jsonl(*[{**GOOD, "item_id": 1, "annotator_id": 2, "label": 1}] * 40))[:80])
    out = tmp_path / "out.jsonl"
    for command in (["inspect"], ["diagnose"], ["agreement"], ["aggregate", "--out", str(out)],
                    ["filter", "--out", str(out)], ["pairs", "--out", str(out)]):  # fmt: skip
        assert main(["data", command[0], str(path), *command[1:]]) == 1
        err = capsys.readouterr().err
        assert err == f"error: {path}: not a complete gzip file (Compressed file ended before the " \
                      "end-of-stream marker was reached)\n", (command, err)
