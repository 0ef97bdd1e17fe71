"""Unpaired (KTO) rows: schema detection, label spellings, unrated rows, and paired -> unpaired conversion."""

from __future__ import annotations

import json

import pytest

from directalign.data.formats import UNPAIRED, load_records, records_from_rows
from directalign.data.types import PreferenceRecord
from directalign.data.unpaired import UnratedLabel, label_counts, parse_label, records_for_loss, unpair
from directalign.errors import ConfigError
from tests.conftest import shared_data_dir


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


@pytest.mark.parametrize("value", [True, 1, "up", " UP ", "👍", "good", "thumbs_up", "true", "positive"])
def test_desirable_spellings(value):
    assert parse_label(value) is True


@pytest.mark.parametrize("value", [False, 0, "down", "👎", "Bad", "thumbs down", "false", "negative"])
def test_undesirable_spellings(value):
    assert parse_label(value) is False


def test_unrated_and_unknown_labels_are_told_apart():
    for value in (None, "", "unrated", "N/A"):
        with pytest.raises(UnratedLabel):
            parse_label(value)
    with pytest.raises(ValueError, match="unrecognised label 'meh'") as info:
        parse_label("meh")
    assert not isinstance(info.value, UnratedLabel)


def test_trl_text_conversational_and_llamafactory_forms_parse_alike():
    rows = [
        {"prompt": "Sky colour?", "completion": "Blue.", "label": True},
        {"prompt": [user("Sky colour?")], "completion": [assistant("Green.")], "label": "👎"},
        {"messages": [user("Hi"), assistant("Hello!"), user("2+2?"), assistant("4")], "label": "up"},
    ]
    result = records_from_rows(rows, "mem")
    assert result.schema == UNPAIRED
    first, second, third = result.records
    assert (first.prompt, first.responses, first.labels, first.pairs) == (
        [user("Sky colour?")],
        [[assistant("Blue.")]],
        [True],
        [],
    )
    assert second.responses == [[assistant("Green.")]] and second.labels == [False]
    assert third.prompt == [user("Hi"), assistant("Hello!"), user("2+2?")]
    assert third.responses == [[assistant("4")]] and third.labels == [True]
    assert third.source == "mem:3"


def test_unrated_rows_are_dropped_and_counted():
    rows = [
        {"prompt": "a?", "completion": "A.", "label": "good"},
        {"prompt": "b?", "completion": "B.", "label": None},
        {"prompt": "c?", "completion": "C.", "label": "unrated"},
        {"prompt": "d?", "completion": "D.", "label": "maybe"},
        {"prompt": "e?", "completion": " ", "label": "bad"},
        {"messages": [user("f?")], "label": True},
    ]
    result = records_from_rows(rows, "mem")
    assert [r.source for r in result.records] == ["mem:1"]
    assert result.skipped == {
        "unrated": 2,
        "unrecognised label": 1,
        "empty response": 1,
        "messages do not end with an assistant turn after a prompt": 1,
    }
    assert "mem:2: unrated (label)" in result.skipped_examples


def test_llamafactory_kto_demo_file():
    path = shared_data_dir() / "llamafactory-kto-en-demo" / "kto_en_demo.json"
    if not path.is_file():
        pytest.skip(f"shared data not found at {path}")
    result = load_records(path)
    assert result.schema == UNPAIRED and len(result.records) == 300 and result.skipped == {}
    assert label_counts(result.records) == (150, 150)  # SOURCE.md: true 150, false 150
    longest = max(result.records, key=lambda r: len(r.prompt))
    assert len(longest.prompt) == 11 and longest.responses[0][0]["role"] == "assistant"


def test_jsonl_file_with_thumbs(tmp_path):
    path = tmp_path / "kto.jsonl"
    rows = [{"prompt": f"q{i}?", "completion": f"a{i}", "label": "👍" if i % 3 else "👎"} for i in range(6)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    assert label_counts(load_records(path).records) == (4, 2)


def test_unpair_gives_one_desirable_and_one_undesirable_row_per_pair():
    paired = PreferenceRecord([user("q")], [[assistant("good")], [assistant("bad")]], source="f:1")
    ranked = PreferenceRecord(
        [user("r")], [[assistant("1st")], [assistant("2nd")], [assistant("3rd")]], pairs=[(0, 1), (0, 2), (1, 2)]
    )
    rows = unpair([paired, ranked])
    assert [(r.responses[0][0]["content"], r.labels) for r in rows] == [
        ("good", [True]),
        ("bad", [False]),
        ("1st", [True]),
        ("2nd", [False]),
        ("3rd", [False]),
        ("2nd", [True]),
    ]
    assert all(r.pairs == [] and len(r.responses) == 1 for r in rows)
    assert rows[0].source == "f:1" and rows[0].prompt == [user("q")]
    assert unpair(rows) == rows  # already unpaired: unchanged


def test_records_for_loss_converts_for_kto_and_refuses_unpaired_for_dpo():
    paired = [PreferenceRecord([user("q")], [[assistant("a")], [assistant("b")]])]
    converted, notes = records_for_loss(paired, "kto")
    assert len(converted) == 2 and "1 paired records -> 2 unpaired" in notes[0]
    unpaired = records_from_rows([{"prompt": "q", "completion": "a", "label": True}], "f").records
    assert records_for_loss(unpaired, "kto") == (unpaired, [])
    with pytest.raises(ConfigError, match="f:1: unpaired .* --loss-type kto"):
        records_for_loss(unpaired, "sigmoid")
