"""Property tests of every loader: any bytes as a file and any JSON value as a row give either records that
hold the loader's invariants or a DataError that names the file (and the row), never another exception."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from directalign.data import schemas
from directalign.data.formats import MAX_SKIPPED_EXAMPLES, ROLES, LoadResult, load_records, records_from_rows
from directalign.data.schemas import SkipRow
from directalign.errors import DataError

FIELDS = [
    "prompt", "chosen", "rejected", "role", "content", "from", "value", "conversations", "messages",
    "completion", "label", "responses", "scores", "ranks", "pairs", "train", "data",
]  # fmt: skip
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Many random rows cannot form one typed Arrow table at all; those inputs are filtered out, by design.
ARROW_SETTINGS = dict(SETTINGS, suppress_health_check=[*SETTINGS["suppress_health_check"], HealthCheck.filter_too_much])

keys = st.sampled_from(FIELDS) | st.text(max_size=6)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", " ", "\n\nHuman: hi\n\nAssistant: yo", "up", "unrated", "user", "assistant"])
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5), max_leaves=16
)
roles = st.sampled_from([*ROLES, "wizard", "tool", "", "Human"]) | json_values
messages = st.lists(st.fixed_dictionaries({"role": roles, "content": st.text(max_size=8) | json_values}), max_size=3)
texts = st.text(max_size=10) | st.sampled_from(["\n\nHuman: q\n\nAssistant: a", "\n\nHuman: q\n\nAssistant: b"])
sides = texts | messages | json_values
sharegpt_turns = st.fixed_dictionaries({"from": st.sampled_from(["human", "gpt", "system", "x"]) | json_values,
                                        "value": texts | json_values})
numbers = st.lists(st.none() | st.integers(-5, 5) | st.floats(allow_nan=True) | json_values, max_size=4)
# Rows shaped like each schema, every field either plausible or any JSON value, so parsing goes deep.
schema_rows = st.one_of(
    st.fixed_dictionaries({"prompt": texts | messages, "chosen": sides, "rejected": sides}),
    st.fixed_dictionaries({"chosen": sides, "rejected": sides}),
    st.fixed_dictionaries({"conversations": st.lists(sharegpt_turns, max_size=3) | json_values,
                           "chosen": sharegpt_turns | texts, "rejected": sharegpt_turns | texts}),
    st.fixed_dictionaries({"prompt": texts | messages, "completion": sides, "label": json_values}),
    st.fixed_dictionaries({"messages": messages | json_values, "label": st.booleans() | json_values}),
    st.fixed_dictionaries({"prompt": texts | messages, "responses": st.lists(texts | messages, max_size=4)},
                          optional={"scores": numbers, "ranks": numbers,
                                    "pairs": st.lists(st.lists(json_values | st.integers(-1, 4), max_size=3))}),
)  # fmt: skip
rows = st.lists(schema_rows | json_values, min_size=0, max_size=6)

# Parquet and Arrow need one type per column: rows whose every field keeps one kind of value across rows.
short = st.text(alphabet="ab \n", max_size=3) | st.text(max_size=6)  # few letters: equal values happen


def turn(roles: list[str]):
    return st.fixed_dictionaries({"role": st.sampled_from(roles), "content": short})


COLUMN_KINDS = {
    "text": texts | short,
    "messages": st.lists(turn([*ROLES, "wizard"]), max_size=3),
    "user_turns": st.lists(turn(["user", "user", "system", "wizard"]), min_size=1, max_size=2),
    "assistant_turns": st.lists(turn(["assistant", "assistant", "user"]), min_size=1, max_size=2),
    "dialogue": st.tuples(turn(["user"]), turn(["assistant"])).map(list).map(
        lambda turns: [{"role": "user", "content": "q"}, turns[1]]  # a shared prompt, so pairs can form
    ),
    "turn": st.fixed_dictionaries({"from": st.sampled_from(["human", "gpt", "x"]), "value": short}),
    "int": st.integers(-(2**63), 2**63 - 1),
    "float": st.floats(allow_nan=True, allow_infinity=True),
    "bool": st.booleans(),
    "label": st.sampled_from([True, False, "up", "down", "unrated", 2, None]),
    "numbers": st.lists(st.none() | st.integers(-3, 3) | st.floats(allow_nan=True, allow_infinity=True), max_size=4),
    "texts": st.lists(short, max_size=4),
    "three_texts": st.lists(st.text(alphabet="abc", min_size=1, max_size=2), min_size=3, max_size=3),
    "three_numbers": st.lists(st.none() | st.integers(-3, 3) | st.floats(allow_nan=True, allow_infinity=True),
                              min_size=3, max_size=3),
    "pairs": st.lists(st.lists(st.integers(-1, 4), max_size=3), max_size=3),
}  # fmt: skip
COLUMN_KINDS["turns"] = st.lists(COLUMN_KINDS["turn"], max_size=3)
TEMPLATES = [  # each schema's fields with the kind of value that parses
    {"prompt": "text", "chosen": "text", "rejected": "text"},
    {"prompt": "text", "chosen": "dialogue", "rejected": "dialogue"},
    {"prompt": "user_turns", "chosen": "assistant_turns", "rejected": "assistant_turns"},
    {"chosen": "dialogue", "rejected": "dialogue"},
    {"chosen": "text", "rejected": "text"},
    {"conversations": "turns", "chosen": "turn", "rejected": "turn"},
    {"prompt": "text", "completion": "text", "label": "label"},
    {"messages": "dialogue", "label": "bool"},
    {"prompt": "text", "responses": "three_texts", "scores": "three_numbers"},
    {"prompt": "text", "responses": "three_texts", "ranks": "three_numbers"},
    {"prompt": "text", "responses": "three_texts", "pairs": "pairs"},
]


@st.composite
def typed_rows(draw) -> list[dict]:
    """Rows of one schema's fields, each column of one kind: mostly the kind that parses, sometimes another."""
    template = draw(st.sampled_from(TEMPLATES))
    kinds = {
        name: kind if draw(st.integers(0, 4)) else draw(st.sampled_from(sorted(COLUMN_KINDS)))
        for name, kind in template.items()
    }
    return [
        {name: draw(COLUMN_KINDS[kind]) if draw(st.integers(0, 9)) else None for name, kind in kinds.items()}
        for _ in range(draw(st.integers(0, 5)))
    ]


@contextmanager
def scratch() -> Iterator[Path]:
    # hypothesis runs many examples per test, so each gets its own folder (tmp_path is one per test).
    folder = Path(tempfile.mkdtemp(prefix="directalign-prop-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_load(path_or_rows, source: str) -> LoadResult | None:
    """Load, then assert the loader's contract either way; the result, or None for a DataError."""
    try:
        if isinstance(path_or_rows, Path):
            result = load_records(path_or_rows)
        else:
            result = records_from_rows(path_or_rows, source)
    except DataError as err:
        message = str(err)
        assert message.startswith(source), message
        assert message.count("\n") == 0, message
        if "is usable" in message:  # names the first bad row's place (a split's file, for folders) and field
            assert re.search(rf"{re.escape(source)}\S*:\d+: .+ \(.+\)$", message), message
        return None
    check_result(result, source)
    return result


def check_result(result: LoadResult, source: str) -> None:
    skipped = sum(result.skipped.values())
    assert result.records and len(result.records) + skipped == result.num_rows
    assert len(result.skipped_examples) == min(skipped, MAX_SKIPPED_EXAMPLES)
    for example in result.skipped_examples:
        assert re.fullmatch(rf"{re.escape(result.path)}:\d+: .+ \(.+\)", example), example
    assert result.path.startswith(source)
    for record in result.records:
        assert record.source.startswith(result.path + ":")
        assert record.prompt and any(m["content"].strip() for m in record.prompt)
        for message in record.prompt + [m for response in record.responses for m in response]:
            assert set(message) == {"role", "content"} and isinstance(message["content"], str)
            assert message["role"] in ROLES
        for response in record.responses:
            assert response and all(m["role"] == "assistant" for m in response)
            assert any(m["content"].strip() for m in response)
        if record.labels is not None:
            assert record.pairs == [] and len(record.labels) == len(record.responses) == 1
            assert isinstance(record.labels[0], bool)
        else:
            assert record.pairs
            for better, worse in record.pairs:
                assert better != worse and {type(better), type(worse)} == {int}
                assert 0 <= better < len(record.responses) and 0 <= worse < len(record.responses)


@settings(max_examples=300, **SETTINGS)
@given(typed_rows() | rows)
def test_any_rows_in_memory(data):
    check_load(data, "rows")


def _jsonl(path: Path, data: list) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in data), encoding="utf-8")


def _csv(path: Path, data: list) -> None:
    # Header: the keys of the object rows; cells: strings as they are, anything else as JSON.
    header = list(dict.fromkeys(k for row in data if isinstance(row, dict) for k in row))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for row in data:
        cells = row if isinstance(row, dict) else {}
        writer.writerow([v if isinstance(v := cells.get(k), str) else json.dumps(v) for k in header])
    path.write_text(out.getvalue(), encoding="utf-8")


WRITERS = {
    "data.jsonl": _jsonl,
    "data.json": lambda path, data: path.write_text(json.dumps(data), encoding="utf-8"),
    "data.csv": _csv,
    "data.jsonl.gz": lambda path, data: path.write_bytes(
        gzip.compress("".join(json.dumps(row) + "\n" for row in data).encode())
    ),
    "data.json.gz": lambda path, data: path.write_bytes(gzip.compress(json.dumps({"train": data}).encode())),
    "data.csv.gz": lambda path, data: (_csv(path, data), path.write_bytes(gzip.compress(path.read_bytes()))),
}


@settings(max_examples=60, **SETTINGS)
@given(typed_rows() | rows, st.sampled_from(sorted(WRITERS)))
def test_any_rows_in_text_files(data, name):
    with scratch() as folder:
        path = folder / name
        WRITERS[name](path, data)
        check_load(path, str(path))


ARROW_CANNOT = (pa.ArrowException, OverflowError, TypeError, ValueError)


def _write_or_reject(write) -> None:
    try:
        write()
    except ARROW_CANNOT:
        assume(False)  # pyarrow cannot hold these rows in one typed table, so no such file can exist


@settings(max_examples=40, **ARROW_SETTINGS)
@given(typed_rows() | rows)
def test_any_rows_in_parquet(data):
    with scratch() as folder:
        path = folder / "data.parquet"
        _write_or_reject(lambda: pq.write_table(pa.Table.from_pylist([r for r in data if isinstance(r, dict)]), path))
        check_load(path, str(path))


@settings(max_examples=15, **ARROW_SETTINGS)
@given(typed_rows() | rows, st.booleans())
def test_any_rows_in_saved_datasets(data, as_dict):
    with scratch() as folder:
        path = folder / "saved"

        def write():
            dataset = Dataset(pa.Table.from_pylist([r for r in data if isinstance(r, dict)]))
            (DatasetDict({"train": dataset}) if as_dict else dataset).save_to_disk(str(path))

        _write_or_reject(write)
        result = check_load(path, str(path))
        assert result is None or result.path == (f"{path}[train]" if as_dict else str(path))


@settings(max_examples=25, **SETTINGS)
@given(typed_rows() | rows)
def test_any_rows_in_a_folder_in_hub_layout(data):
    """A folder of data files: datasets resolves the split's files, whose errors must become DataErrors too."""
    with scratch() as folder:
        path = folder / "repo"
        (path / "data").mkdir(parents=True)
        _jsonl(path / "data" / "train.jsonl", data)
        previous, datasets.config.HF_DATASETS_CACHE = datasets.config.HF_DATASETS_CACHE, str(folder / "cache")
        try:
            check_load(path, str(path))
        finally:
            datasets.config.HF_DATASETS_CACHE = previous


SUFFIXES = [".jsonl", ".json", ".csv", ".parquet", ".jsonl.gz", ".json.gz", ".csv.gz", ".ndjson"]
VALID = b'{"prompt": "q", "chosen": "a", "rejected": "b"}\n' * 3


@settings(max_examples=300, **SETTINGS)
@given(st.binary(max_size=300) | st.sampled_from([b"", b"\xef\xbb\xbf", b"\x00" * 9, VALID]), st.sampled_from(SUFFIXES))
def test_any_bytes_as_a_file(content, suffix):
    with scratch() as folder:
        path = folder / f"data{suffix}"
        path.write_bytes(content)
        check_load(path, str(path))


def _valid_file(path: Path) -> bytes:
    rows = [{"prompt": "q", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"}] * 3
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
        return path.read_bytes()
    text = json.dumps(rows) if ".json." in path.name or path.name.endswith(".json") else ""
    text = text or "".join(json.dumps(row) + "\n" for row in rows)
    return gzip.compress(text.encode()) if path.suffix == ".gz" else text.encode()


@settings(max_examples=200, **SETTINGS)
@given(st.sampled_from(SUFFIXES), st.data())
def test_truncated_or_corrupted_files(suffix, draw):
    """A valid file cut short (a partial download) or with bytes overwritten (a bad disk)."""
    with scratch() as folder:
        path = folder / f"data{suffix}"
        content = bytearray(_valid_file(path))
        if draw.draw(st.booleans(), label="truncate"):
            content = content[: draw.draw(st.integers(0, len(content)), label="length")]
        else:
            for _ in range(draw.draw(st.integers(1, 4), label="flips")):
                content[draw.draw(st.integers(0, len(content) - 1))] = draw.draw(st.integers(0, 255))
        path.write_bytes(bytes(content))
        check_load(path, str(path))


@settings(max_examples=25, **SETTINGS)
@given(st.data())
def test_corrupted_saved_datasets(draw):
    """A save_to_disk folder with one of its files cut short, overwritten with junk or emptied."""
    with scratch() as folder:
        path = folder / "saved"
        rows = [{"prompt": "q", "chosen": "a", "rejected": "b"}] * 3
        DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(path))
        target = draw.draw(st.sampled_from(sorted(p for p in path.rglob("*") if p.is_file())), label="file")
        content = target.read_bytes()
        target.write_bytes(
            draw.draw(st.binary(max_size=64) | st.just(content[: draw.draw(st.integers(0, len(content)))]))
        )
        check_load(path, str(path))


def _transcript_by_the_definition(text: str) -> list[dict] | None:
    """The turns of an hh-rlhf transcript split with the detection pattern itself, or None when it is none."""
    parts = schemas._HH_TURN.split(text)
    if parts[0] or len(parts) < 3:
        return None
    turns = zip(parts[1::2], parts[2::2], strict=True)
    return [{"role": schemas._HH_ROLES[role], "content": content.removeprefix(" ")} for role, content in turns]


@settings(max_examples=500, **SETTINGS)
@given(st.lists(st.sampled_from(["\n", "\n\n", " ", "\t", "Human:", "Assistant:", "Human", "a", ":"]), max_size=12))
def test_fast_transcript_split_matches_the_definition(pieces):
    text = "".join(pieces)
    try:
        turns = schemas._parse_transcript(text, "chosen")
    except SkipRow:
        turns = None
    assert turns == _transcript_by_the_definition(text)
