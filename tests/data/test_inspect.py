from __future__ import annotations

import argparse
import json

import pytest

from directalign.cli import data_inspect
from directalign.data.formats import load_records
from directalign.data.inspect import format_inspection, inspect_file, percentiles
from directalign.data.tokenize import tokenize_records
from directalign.errors import DataError

ROWS = [
    {"prompt": "What colour is the sky?", "chosen": "Blue.", "rejected": "Green."},
    {"prompt": "2+2?", "chosen": "4", "rejected": "4"},
    {"prompt": " ".join(f"word{i}" for i in range(100)), "chosen": "ok", "rejected": "no " * 40},
    {"prompt": "Name a fruit.", "chosen": "Apple.", "rejected": ""},
]


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return path


def test_percentiles_are_nearest_rank():
    assert percentiles(list(range(100, 0, -1))) == {"p50": 50, "p90": 90, "p99": 99, "max": 100}
    assert percentiles([7, 3]) == {"p50": 3, "p90": 7, "p99": 7, "max": 7}
    assert percentiles([]) == {"p50": 0, "p90": 0, "p99": 0, "max": 0}


def test_summary_without_tokenizer(pairs_file):
    summary = inspect_file(pairs_file)
    assert summary == {
        "path": str(pairs_file),
        "schema": "text",
        "rows": 4,
        "records": 2,
        "skipped": {"chosen == rejected": 1, "empty response": 1},
        "skipped_examples": [
            f"{pairs_file}:2: chosen == rejected (rejected)",
            f"{pairs_file}:4: empty response (rejected)",
        ],
    }


def test_summary_with_tokenizer_counts_lengths_and_truncation(pairs_file, smollm2_tokenizer):
    summary = inspect_file(pairs_file, smollm2_tokenizer, max_length=80, max_prompt_length=64)
    records = load_records(pairs_file).records
    stats = tokenize_records(records, smollm2_tokenizer, max_length=None, max_prompt_length=None).stats
    short, long = stats.prompt_lengths
    assert long > 64 > short
    assert summary["tokens"]["prompt"] == {"p50": short, "p90": long, "p99": long, "max": long}
    assert summary["tokens"]["rejected"]["max"] == max(stats.rejected_lengths)
    assert summary["chat_template"] is True
    # The long prompt is cut to 64 tokens, leaving 16 for responses: its 40-word rejected response is cut.
    assert summary["truncation"] == {
        "max_length": 80,
        "max_prompt_length": 64,
        "prompts_truncated": 1,
        "responses_truncated": 1,
        "responses": 4,
        "prompt_boundary_mismatches": 0,
    }
    text = format_inspection(summary)
    assert "schema    text" in text
    assert "  chosen == rejected       1" in text
    assert f"  {pairs_file}:2: chosen == rejected (rejected)" in text
    assert f"  prompt    {short:>8}{long:>8}{long:>8}{long:>8}" in text
    assert "  prompts truncated         1 of 2" in text
    assert "  responses truncated       1 of 4" in text


def _parse(argv):
    parser = argparse.ArgumentParser(prog="directalign data")
    data_inspect.register(parser.add_subparsers(dest="data_command"))
    return parser.parse_args(argv)


@pytest.fixture
def patched_tokenizer(monkeypatch, smollm2_tokenizer):
    loaded = []

    def load_tokenizer(name_or_path):
        loaded.append(name_or_path)
        return smollm2_tokenizer

    import directalign.models.loading

    monkeypatch.setattr(directalign.models.loading, "load_tokenizer", load_tokenizer)
    return loaded


def test_cli_json(pairs_file, patched_tokenizer, capsys):
    args = _parse(["inspect", str(pairs_file), "--max-length", "80", "--max-prompt-length", "64", "--json"])
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert patched_tokenizer == ["smollm2-135m-instruct"]
    assert (summary["rows"], summary["records"]) == (4, 2)
    assert summary["truncation"]["prompts_truncated"] == 1


def test_cli_text_and_model_option(pairs_file, patched_tokenizer, capsys):
    args = _parse(["inspect", str(pairs_file), "--model", "some/folder"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert patched_tokenizer == ["some/folder"]
    assert out.startswith(f"file      {pairs_file}\nschema    text\nrows      4\nrecords   2\n")
    assert "truncation (max_length 1024, max_prompt_length 512)" in out


def test_cli_bad_file_fails_before_loading_the_tokenizer(tmp_path, patched_tokenizer):
    args = _parse(["inspect", str(tmp_path / "absent.jsonl")])
    with pytest.raises(DataError, match="no such file"):
        args.func(args)
    assert patched_tokenizer == []


@pytest.mark.shared_data
def test_real_hh_rlhf_summary(hh_rlhf_file, smollm2_tokenizer):
    summary = inspect_file(hh_rlhf_file, smollm2_tokenizer)
    assert (summary["rows"], summary["records"]) == (1500, 1495)
    # SOURCE.md, SmolLM2 chat template: the longest prompt is 880 tokens.
    assert summary["tokens"]["prompt"]["max"] == 880
    assert summary["skipped"] == {
        "empty response": 4,
        "chosen and rejected differ before the last assistant turn": 1,
    }
