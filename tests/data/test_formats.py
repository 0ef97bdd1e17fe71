from __future__ import annotations

import csv
import gzip
import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset, DatasetDict

from directalign.data import formats, readers
from directalign.data.formats import (
    CONVERSATIONAL,
    HH_RLHF,
    SCHEMAS,
    SHAREGPT,
    TEXT,
    load_records,
    records_from_rows,
)
from directalign.errors import DataError


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


# Each schema: two rows and the (prompt, chosen, rejected) messages they must parse into.
ROWS = {
    CONVERSATIONAL: [
        {"prompt": [user("Sky colour?")], "chosen": [assistant("Blue.")], "rejected": [assistant("Green.")]},
        {
            "prompt": [user("Hi"), assistant("Hello!"), user("2+2?")],
            "chosen": [assistant("4")],
            "rejected": [assistant("5")],
        },
    ],
    "conversational-implicit": [
        {
            "chosen": [user("Sky colour?"), assistant("Blue.")],
            "rejected": [user("Sky colour?"), assistant("Green.")],
        },
        {
            "chosen": [user("Hi"), assistant("Hello!"), user("2+2?"), assistant("4")],
            "rejected": [user("Hi"), assistant("Hello!"), user("2+2?"), assistant("5")],
        },
    ],
    TEXT: [
        {"prompt": "Sky colour?", "chosen": "Blue.", "rejected": "Green."},
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
    ],
    HH_RLHF: [
        {
            "chosen": "\n\nHuman: Sky colour?\n\nAssistant: Blue.",
            "rejected": "\n\nHuman: Sky colour?\n\nAssistant: Green.",
        },
        {
            "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: 2+2?\n\nAssistant:  4",
            "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: 2+2?\n\nAssistant: 5",
        },
    ],
    SHAREGPT: [
        {
            "conversations": [{"from": "human", "value": "Sky colour?"}],
            "chosen": {"from": "gpt", "value": "Blue."},
            "rejected": {"from": "gpt", "value": "Green."},
        },
        {
            "conversations": [
                {"from": "human", "value": "Hi"},
                {"from": "gpt", "value": "Hello!"},
                {"from": "human", "value": "2+2?"},
            ],
            "chosen": {"from": "gpt", "value": "4"},
            "rejected": {"from": "gpt", "value": "5"},
        },
    ],
}
EXPECTED = [
    ([user("Sky colour?")], [assistant("Blue.")], [assistant("Green.")]),
    ([user("Hi"), assistant("Hello!"), user("2+2?")], [assistant("4")], [assistant("5")]),
]
EXPECTED_HH_SECOND_CHOSEN = [assistant(" 4")]  # "Assistant:  4": only the one separating space goes


def _write_jsonl(path, rows, compress=False):
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")


def _write_csv(path, rows):
    # CSV cells are strings: message lists and {from, value} objects go in as JSON.
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: v if isinstance(v, str) else json.dumps(v) for k, v in row.items()})


def write_file(tmp_path, file_format, rows):
    if file_format == "jsonl":
        path = tmp_path / "data.jsonl"
        _write_jsonl(path, rows)
    elif file_format == "jsonl.gz":
        path = tmp_path / "data.jsonl.gz"
        _write_jsonl(path, rows, compress=True)
    elif file_format == "json":
        path = tmp_path / "data.json"
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif file_format == "json.gz":
        path = tmp_path / "data.json.gz"
        with gzip.open(path, "wt", encoding="utf-8") as f:
            json.dump({"train": rows}, f)
    elif file_format == "csv":
        path = tmp_path / "data.csv"
        _write_csv(path, rows)
    elif file_format == "parquet":
        path = tmp_path / "data.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif file_format == "datasets":
        path = tmp_path / "saved"
        DatasetDict({"train": Dataset.from_list(rows), "test": Dataset.from_list(rows[:1])}).save_to_disk(
            path
        )
    return path


FORMATS = ["jsonl", "jsonl.gz", "json", "json.gz", "csv", "parquet", "datasets"]


@pytest.mark.parametrize("file_format", FORMATS)
@pytest.mark.parametrize("row_kind", list(ROWS))
def test_every_schema_parses_from_every_format(tmp_path, file_format, row_kind):
    path = write_file(tmp_path, file_format, ROWS[row_kind])
    result = load_records(path)
    assert result.schema == row_kind.removesuffix("-implicit")
    assert result.num_rows == 2
    assert result.skipped == {}
    got = [(r.prompt, r.chosen, r.rejected) for r in result.records]
    expected = list(EXPECTED)
    if row_kind == HH_RLHF:
        expected[1] = (EXPECTED[1][0], EXPECTED_HH_SECOND_CHOSEN, EXPECTED[1][2])
    if row_kind == TEXT:  # one user turn only
        expected[1] = ([user("2+2?")], EXPECTED[1][1], EXPECTED[1][2])
    assert got == expected
    assert [r.pairs for r in result.records] == [[(0, 1)], [(0, 1)]]


def test_sharegpt_system_turn_and_bare_string_responses():
    row = {
        "conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"}],
        "chosen": "Hello.",
        "rejected": {"from": "gpt", "value": "Hello there, how may I help you today?"},
    }
    record = records_from_rows([row], "mem").records[0]
    assert record.prompt == [{"role": "system", "content": "Be brief."}, user("Hi")]
    assert record.chosen == [assistant("Hello.")]


def test_skipped_rows_are_counted_with_file_and_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    lines = [
        json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}),
        "",  # blank lines are allowed and still count for line numbers
        json.dumps({"prompt": "a", "chosen": "same", "rejected": "same"}),
        json.dumps({"prompt": "a", "chosen": "  ", "rejected": "c"}),
        json.dumps({"prompt": "a", "chosen": "b"}),
        json.dumps({"prompt": "a", "chosen": "b", "rejected": 3}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"prompt": "d", "chosen": "e", "rejected": "f"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    result = load_records(path)
    assert result.schema == TEXT
    assert result.num_rows == 7
    assert [r.source for r in result.records] == [f"{path}:1", f"{path}:8"]
    assert result.skipped == {
        "chosen == rejected": 1,
        "empty response": 1,
        "missing field": 1,
        "not a string": 1,
        "row is not an object": 1,
    }
    assert result.skipped_examples == [
        f"{path}:3: chosen == rejected (rejected)",
        f"{path}:4: empty response (chosen)",
        f"{path}:5: missing field (rejected)",
        f"{path}:6: not a string (rejected)",
        f"{path}:7: row is not an object (row)",
    ]


def test_csv_places_are_the_line_where_the_row_starts(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text('prompt,chosen,rejected\n"two\nlines",b,c\nx,same,same\n', encoding="utf-8")
    result = load_records(path)
    assert result.records[0].prompt == [user("two\nlines")]
    assert result.skipped_examples == [f"{path}:4: chosen == rejected (rejected)"]


def test_implicit_prompt_rows_must_differ_only_in_the_last_assistant_turn():
    rows = [
        ROWS["conversational-implicit"][0],
        {  # differ in the user turn: not a preference over one response
            "chosen": [user("a"), assistant("b")],
            "rejected": [user("x"), assistant("b")],
        },
        {"chosen": [user("a"), assistant("b")], "rejected": [user("a")]},
    ]
    result = records_from_rows(rows, "mem")
    assert len(result.records) == 1
    assert result.skipped_examples == [
        "mem:2: chosen and rejected differ before the last assistant turn (chosen)",
        "mem:3: empty response (rejected)",
    ]


def test_hh_rlhf_with_a_missing_final_turn_is_skipped():
    rows = ROWS[HH_RLHF] + [{"chosen": "\n\nHuman: Hi\n\nAssistant: Hey", "rejected": "\n\nHuman: Hi"}]
    result = records_from_rows(rows, "hh")
    assert result.schema == HH_RLHF
    assert result.skipped == {"empty response": 1}


def test_unknown_schema_error_names_file_schemas_and_fields(tmp_path):
    path = tmp_path / "judged.json"
    path.write_text(json.dumps([{"instruction": "q", "output_1": "a", "output_2": "b", "label": 1}]))
    with pytest.raises(DataError) as err:
        load_records(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    for schema in SCHEMAS:
        assert schema in message
    assert "instruction (str), output_1 (str), output_2 (str), label (int)" in message


def test_file_where_every_row_is_skipped_names_the_reasons(tmp_path):
    path = tmp_path / "same.jsonl"
    _write_jsonl(path, [{"prompt": "a", "chosen": "b", "rejected": "b"}] * 2)
    with pytest.raises(DataError, match=r"none of 2 rows is usable as text \(chosen == rejected 2\)"):
        load_records(path)


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(ROWS[TEXT][0]) + "\n{not json\n")
    with pytest.raises(DataError, match=rf"^{path}:2: not valid JSON"):
        load_records(path)


def test_malformed_json_file_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n{"prompt": "a",\n oops}\n]')
    with pytest.raises(DataError, match=rf"^{path}:3: not valid JSON"):
        load_records(path)


def test_missing_file_and_unsupported_extension(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_records(tmp_path / "absent.jsonl")
    path = tmp_path / "data.txt"
    path.write_text("hello")
    with pytest.raises(DataError, match=rf"^{path}: unsupported file type"):
        load_records(path)


def test_json_lines_under_a_json_name_are_read(tmp_path):
    # datasets' Dataset.to_json writes JSON lines even to a .json file.
    path = tmp_path / "exported.json"
    Dataset.from_list(ROWS[TEXT]).to_json(path)
    result = load_records(path)
    assert [r.chosen for r in result.records] == [EXPECTED[0][1], EXPECTED[1][1]]
    assert result.records[1].source == f"{path}:2"


def test_json_object_without_a_row_list_is_an_error(tmp_path):
    path = tmp_path / "obj.json"
    path.write_text(json.dumps({"rows": []}))
    with pytest.raises(DataError, match="found keys: rows"):
        load_records(path)


def test_split_selects_dataset_dict_split_and_json_key(tmp_path):
    folder = write_file(tmp_path, "datasets", ROWS[TEXT])
    assert load_records(folder, split="test").num_rows == 1
    with pytest.raises(DataError, match="no split 'validation'; it has train, test"):
        load_records(folder, split="validation")
    path = tmp_path / "splits.json"
    path.write_text(json.dumps({"train": ROWS[TEXT], "eval": ROWS[TEXT][:1]}))
    assert load_records(path, split="eval").num_rows == 1


def test_records_from_rows_places():
    result = records_from_rows(ROWS[CONVERSATIONAL], "memory")
    assert result.path == "memory"
    assert [r.source for r in result.records] == ["memory:1", "memory:2"]


@pytest.mark.shared_data
def test_real_hh_rlhf_file(hh_rlhf_file):
    result = load_records(hh_rlhf_file)
    assert (result.schema, result.num_rows, len(result.records)) == (HH_RLHF, 1500, 1495)
    assert result.skipped == {
        "empty response": 4,
        "chosen and rejected differ before the last assistant turn": 1,
    }
    # Line 87: the chosen transcript ends in "Assistant: " with nothing after it.
    assert result.skipped_examples[0] == f"{hh_rlhf_file}:87: empty response (chosen)"
    first = result.records[0]
    assert first.source == f"{hh_rlhf_file}:1"
    assert [m["role"] for m in first.prompt] == ["user", "assistant", "user", "assistant", "user"]
    assert first.prompt[0]["content"] == "what are some pranks with a pen i can do?"
    assert first.prompt[1]["content"] == "Are you looking for practical joke ideas?"
    assert first.prompt[-1]["content"] == "okay some of these do not have anything to do with pens"
    assert first.chosen == [
        assistant(
            "No, sorry!  All of these involve a pen, the point is that you can get funny results by doing "
            "pranks with pens."
        )
    ]
    assert first.rejected[0]["content"].startswith("There are lots of funny things you can do with pens")


@pytest.mark.shared_data
def test_real_llamafactory_sharegpt_file(dpo_en_demo_file):
    result = load_records(dpo_en_demo_file)
    assert (result.schema, result.num_rows, len(result.records)) == (SHAREGPT, 300, 300)
    # SOURCE.md: 80 conversations start with a system turn; the last context turn is always human.
    assert sum(r.prompt[0]["role"] == "system" for r in result.records) == 80
    assert {r.prompt[-1]["role"] for r in result.records} == {"user"}
    assert result.records[0].chosen[0]["content"].startswith("That sounds like a fun and engaging idea!")


def test_ranked_rows_define_every_ordered_pair_best_vs_worst_first():
    rows = [
        {"prompt": "q", "responses": ["a", "b", "c"], "scores": [1, 3, 2]},
        {"prompt": [{"role": "user", "content": "q2"}], "responses": ["a", "b", "c"], "ranks": [2, 0, None]},
        {"prompt": "q3", "responses": ["a", "b", "c"], "pairs": [[2, 0]]},
    ]
    result = records_from_rows(rows, "ranked.jsonl")
    assert result.schema == "ranked"
    scored, ranked, explicit = result.records
    assert scored.pairs == [(1, 0), (1, 2), (2, 0)]  # 3 > 2 > 1; the first pair is best vs worst
    assert scored.chosen == [{"role": "assistant", "content": "b"}] and len(scored.responses) == 3
    assert ranked.pairs == [(1, 0)]  # rank 0 beats rank 2; the unranked response is in no pair
    assert explicit.pairs == [(2, 0)]


@pytest.mark.parametrize(
    ("row", "reason", "field"),
    [
        ({"prompt": "q", "responses": ["a", "b"], "scores": [1, 1]}, "no two responses are ordered", "scores"),
        ({"prompt": "q", "responses": ["a", "b"], "scores": [1]}, "not a list of 2 numbers", "scores"),
        ({"prompt": "q", "responses": ["a", "b"], "pairs": [[0, 2]]}, "not a list of [better, worse] indices", "pairs"),
        ({"prompt": "q", "responses": ["a", " "], "ranks": [0, 1]}, "empty response", "responses[1]"),
        ({"prompt": "q", "responses": ["a"], "scores": [1]}, "fewer than 2 responses", "responses"),
    ],
)
def test_bad_ranked_rows_are_skipped_and_named(row, reason, field):
    good = {"prompt": "ok", "responses": ["x", "y"], "scores": [2, 1]}
    result = records_from_rows([good, row], "ranked.jsonl")
    assert len(result.records) == 1
    assert result.skipped_examples[0].startswith("ranked.jsonl:2: " + reason)
    assert result.skipped_examples[0].endswith(f"({field})")


def test_long_loads_show_progress_bars(tmp_path, monkeypatch, capsys):
    # The bars wait PROGRESS_DELAY_S before they appear, so small files print nothing; here they appear at once.
    monkeypatch.setattr(readers, "PROGRESS_DELAY_S", 0)
    monkeypatch.setattr(formats, "PROGRESS_DELAY_S", 0)
    path = tmp_path / "big.jsonl"
    _write_jsonl(path, ROWS[TEXT] * 150)
    assert load_records(path).num_rows == 300
    err = capsys.readouterr().err
    assert "reading big.jsonl" in err and "lines/s" in err
    assert "parsing big.jsonl" in err and "/300 " in err and "rows/s" in err
    small = tmp_path / "small.jsonl"
    _write_jsonl(small, ROWS[TEXT])
    monkeypatch.setattr(formats, "PROGRESS_DELAY_S", 2.0)
    monkeypatch.setattr(readers, "PROGRESS_DELAY_S", 2.0)
    load_records(small)
    assert capsys.readouterr().err == ""


# Where rows 1-3 of a file are, by format: the source name's suffix, then the line (CSV: after the header) or row.
PLACES = {
    "jsonl": ("", [1, 2, 3]), "jsonl.gz": ("", [1, 2, 3]), "json": ("", [1, 2, 3]), "json.gz": ("", [1, 2, 3]),
    "csv": ("", [2, 3, 4]), "parquet": ("", [1, 2, 3]), "datasets": ("[train]", [1, 2, 3]),
    "hub-folder": ("/data/train.jsonl", [1, 2, 3]),
}  # fmt: skip


def _write_any(folder, file_format, rows):
    folder.mkdir(exist_ok=True)
    if file_format != "hub-folder":
        return write_file(folder, file_format, rows)
    (folder / "repo" / "data").mkdir(parents=True)  # data files in Hub layout: datasets names the split's files
    _write_jsonl(folder / "repo" / "data" / "train.jsonl", rows)
    return folder / "repo"


@pytest.mark.parametrize("file_format", list(PLACES))
def test_every_loader_names_the_file_the_row_and_the_field(tmp_path, monkeypatch, file_format):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    suffix, numbers = PLACES[file_format]
    bad = {"prompt": "c", "chosen": "same", "rejected": "same"}
    path = _write_any(tmp_path / "some-bad", file_format, ROWS[TEXT] + [bad])
    result = load_records(path)
    assert [r.source for r in result.records] == [f"{path}{suffix}:{n}" for n in numbers[:2]]
    assert result.skipped_examples == [f"{path}{suffix}:{numbers[2]}: chosen == rejected (rejected)"]
    path = _write_any(tmp_path / "all-bad", file_format, [bad] * 3)
    with pytest.raises(DataError) as err:
        load_records(path)
    assert str(err.value) == (
        f"{path}{suffix}: none of 3 rows is usable as text (chosen == rejected 3); "
        f"first: {path}{suffix}:{numbers[0]}: chosen == rejected (rejected)"
    )
