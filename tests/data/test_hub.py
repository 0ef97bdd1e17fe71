"""Data in the forms TRL reads: the H4 UltraFeedback layout, DatasetDict splits, folders in Hub layout and Hub
dataset ids (through a local stand-in of the Hub's API), and the one-line error offline."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from datasets import Dataset, DatasetDict
from huggingface_hub import constants
from trl.data_utils import maybe_extract_prompt

from directalign.cli import eval as eval_cli
from directalign.cli.main import main
from directalign.data import hub
from directalign.data.formats import CONVERSATIONAL, load_records, records_from_rows
from directalign.errors import DataError
from directalign.evaluation.heldout import held_out_records
from tests.conftest import PROJECT_ROOT
from tests.data.hub_server import HubServer
from tests.local_server import serving


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def h4_row(prompt: str, chosen: str, rejected: str) -> dict:
    """A row of HuggingFaceH4/ultrafeedback_binarized: the prompt string, repeated as the first turn."""
    return {
        "prompt": prompt,
        "prompt_id": "0" * 64,
        "chosen": [user(prompt), assistant(chosen)],
        "rejected": [user(prompt), assistant(rejected)],
        "messages": [user(prompt), assistant(chosen)],
        "score_chosen": 8.0,
        "score_rejected": 5.0,
    }


H4_ROWS = [h4_row("Sky colour?", "Blue.", "Green."), h4_row("2+2?", "4", "5")]
README = """---
configs:
- config_name: default
  data_files:
  - split: train_prefs
    path: data/train_prefs.jsonl
  - split: test_prefs
    path: data/test_prefs.jsonl
- config_name: small
  data_files:
  - split: train
    path: small/train.jsonl
---
# A preference set in the Hub's layout
"""


def hub_layout(folder: Path) -> Path:
    """A dataset repository as it lies on the Hub: data files and a README whose front matter names configs."""
    for name, rows in (("data/train_prefs.jsonl", H4_ROWS), ("data/test_prefs.jsonl", H4_ROWS[:1]),
                       ("small/train.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])):  # fmt: skip
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "README.md").write_text(README)
    return folder


def test_h4_ultrafeedback_layout_reads_as_trl_reads_it():
    result = records_from_rows(H4_ROWS, "h4")
    assert result.schema == CONVERSATIONAL and result.skipped == {}
    for row, record in zip(H4_ROWS, result.records, strict=True):
        trl = maybe_extract_prompt(row)  # TRL 1.16: a string prompt beside conversational lists is re-extracted
        assert (record.prompt, record.chosen, record.rejected) == (trl["prompt"], trl["chosen"], trl["rejected"])
    assert result.records[0].prompt == [user("Sky colour?")] and result.records[0].chosen == [assistant("Blue.")]


def test_string_prompt_beside_responses_that_do_not_repeat_it():
    row = {"prompt": "Sky colour?", "chosen": [assistant("Blue.")], "rejected": [assistant("Green.")]}
    record = records_from_rows([row], "mixed").records[0]
    assert (record.prompt, record.chosen, record.rejected) == ([user("Sky colour?")], [assistant("Blue.")],
                                                               [assistant("Green.")])  # fmt: skip


def test_saved_dataset_dict_split_default_and_choice(tmp_path):
    folder = tmp_path / "saved"
    DatasetDict({"test": Dataset.from_list(H4_ROWS[:1]), "train": Dataset.from_list(H4_ROWS)}).save_to_disk(folder)
    default = load_records(folder)
    assert (default.num_rows, default.path, default.records[1].source) == (2, f"{folder}[train]", f"{folder}[train]:2")
    assert load_records(folder, split="test").num_rows == 1
    with pytest.raises(DataError, match=r"no split 'dev'; it has test, train \(choose one with --data-split .*\)$"):
        load_records(folder, split="dev")


def test_eval_reads_the_split_and_config_asked_for(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    parser = argparse.ArgumentParser()
    eval_cli.register(parser.add_subparsers())
    folder = hub_layout(tmp_path / "repo")
    args = parser.parse_args(["eval", "--data", str(folder), "--data-split", "test_prefs"])
    assert [r.source for r in _held(args)] == [f"{folder}/data/test_prefs.jsonl:1"]
    args = parser.parse_args(["eval", "--data", str(folder), "--data-config", "small"])
    assert [r.source for r in _held(args)] == [f"{folder}/small/train.jsonl:1"]


def test_folder_in_hub_layout_reads_the_files_datasets_assigns_to_the_split(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = hub_layout(tmp_path / "repo")
    with pytest.raises(DataError, match=rf"^{folder}: no split 'train'; it has train_prefs, test_prefs \(there is"):
        load_records(folder)
    result = load_records(folder, split="test_prefs")  # the README's configs say which file is which split
    assert (result.schema, result.num_rows) == (CONVERSATIONAL, 1)
    assert result.path == f"{folder}/data/test_prefs.jsonl" and result.records[0].source == f"{result.path}:1"
    small = load_records(folder, config="small")
    assert (small.path, small.records[0].prompt) == (f"{folder}/small/train.jsonl", [user("q")])
    no_split = r"no split 'dev'; it has train_prefs, test_prefs \(choose one with --data-split .*\)$"
    with pytest.raises(DataError, match=no_split):
        load_records(folder, split="dev")
    with pytest.raises(DataError, match=r"cannot tell which files are its data \(ValueError: BuilderConfig 'big'"):
        load_records(folder, config="big")


def test_a_split_in_several_files_is_one_result_with_each_rows_own_place(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "shards"
    (folder / "data").mkdir(parents=True)
    good, same = {"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "a", "rejected": "a"}
    for index, rows in enumerate([[good, same], [same, good, good]]):
        (folder / "data" / f"train-0000{index}-of-00002.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = load_records(folder)
    first, second = (f"{folder}/data/train-0000{i}-of-00002.jsonl" for i in range(2))
    assert (result.path, result.num_rows, result.skipped) == (f"{folder}[train]", 5, {"chosen == rejected": 2})
    assert [r.source for r in result.records] == [f"{first}:1", f"{second}:2", f"{second}:3"]
    places = (f"{first}:2", f"{second}:1")
    assert result.skipped_examples == [f"{place}: chosen == rejected (rejected)" for place in places]


def test_a_json_lines_file_starting_with_null_is_a_skipped_row_not_a_crash(tmp_path):
    # pyarrow 26's JSON reader (what datasets.load_dataset("json") uses) dies with SIGSEGV on this file.
    folder = tmp_path / "repo"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train.jsonl").write_text('null\n{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    result = load_records(folder)
    assert result.skipped_examples == [f"{folder}/data/train.jsonl:1: row is not an object (row)"]


@pytest.mark.parametrize("text,hub_like", [
    ("trl-lib/ultrafeedback_binarized", True), ("HuggingFaceH4/ultrafeedback_binarized", True),
    ("owner/data.v2", True), ("data/pairs.jsonl", False), ("data/pairs.csv.gz", False), ("pairs", False),
    ("./owner/name", False), ("../owner/name", False), ("/abs/owner", False), ("a/b/c", False),
])  # fmt: skip
def test_what_looks_like_a_hub_id(text, hub_like):
    assert hub.looks_like_hub_id(text) is hub_like


@pytest.mark.parametrize("path", ["data/absent.jsonl", "absent", "./owner/name", "a/b/c.csv"])
def test_a_missing_local_path_is_still_no_such_file(path):
    with pytest.raises(DataError, match=rf"^{path.removeprefix('./')}: no such file or folder$"):
        load_records(path)


def test_an_unreachable_hub_fails_at_once_naming_the_id(monkeypatch):
    with socket.socket() as closed:  # a port nobody listens on: the connect is refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(DataError) as err:
        load_records("trl-lib/ultrafeedback_binarized")
    assert str(err.value) == (
        f"trl-lib/ultrafeedback_binarized: not a local file or folder, and the Hub cannot be reached (127.0.0.1:"
        f"{port}: Connection refused); set HF_HUB_OFFLINE=1 to use a copy in the datasets cache, or "
        "pass a local copy instead: a folder written by datasets' save_to_disk, or data files (.jsonl, .json, "
        ".csv, .parquet)"
    )


LOADER = """
import json, sys
from directalign.data.formats import load_records
from directalign.errors import DataError
for path, split, config in json.loads(sys.argv[1]):
    try:
        r = load_records(path, split=split, config=config)
        print(json.dumps({"path": r.path, "schema": r.schema, "rows": r.num_rows, "prompt": r.records[0].prompt}))
    except DataError as err:
        print(json.dumps({"error": str(err)}))
"""


def load_in_fresh_process(tmp_path: Path, calls: list, **env: str) -> list[dict]:
    """load_records in a new interpreter, since huggingface_hub reads HF_ENDPOINT and offline mode at import."""
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src"), "HF_HOME": str(tmp_path / "hf-home"),
                   "HF_HUB_DISABLE_TELEMETRY": "1", **env}  # fmt: skip
    environment.pop("HF_DATASETS_OFFLINE", None)
    done = subprocess.run([sys.executable, "-c", LOADER, json.dumps(calls)], env=environment, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_hub_id_through_a_local_hub_then_offline_from_the_cache(tmp_path):
    repo = hub_layout(tmp_path / "repo")
    with serving(HubServer({"owner/prefs": repo})) as server:
        online = load_in_fresh_process(
            tmp_path,
            [["owner/prefs", "test_prefs", None], ["owner/prefs", None, "small"], ["owner/absent", None, None]],
            HF_ENDPOINT=server.endpoint, HF_HUB_OFFLINE="0",
        )
    assert online[0] == {"path": "owner/prefs[test_prefs]", "schema": CONVERSATIONAL, "rows": 1,
                         "prompt": [user("Sky colour?")]}  # fmt: skip
    assert online[1]["path"] == "owner/prefs[train]" and online[1]["prompt"] == [user("q")]
    assert online[2]["error"].startswith("owner/absent: no such file or folder, nor a dataset on the Hub (")
    # The server is gone; offline, the copy in the datasets cache serves and an id never loaded is one line.
    offline = load_in_fresh_process(
        tmp_path, [["owner/prefs", "test_prefs", "default"], ["owner/never-loaded", None, None]], HF_HUB_OFFLINE="1"
    )  # two configs are cached, so offline datasets needs the name
    assert offline[0] == online[0]
    assert offline[1] == {"error": (
        "owner/never-loaded: not a local file or folder, and the Hub is offline (HF_HUB_OFFLINE) with no cached "
        "copy of it; pass a local copy instead: a folder written by datasets' save_to_disk, or data files "
        "(.jsonl, .json, .csv, .parquet)"
    )}  # fmt: skip


def test_offline_cli_error_is_one_line(tmp_path, monkeypatch, capsys):
    # What HF_HUB_OFFLINE=1 sets at import (the fresh-process test above covers the variable itself).
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert main(["data", "inspect", "trl-lib/ultrafeedback_binarized"]) == 1
    assert capsys.readouterr().err == (
        "error: trl-lib/ultrafeedback_binarized: not a local file or folder, and the Hub is offline "
        "(HF_HUB_OFFLINE) with no cached copy of it; pass a local copy instead: a folder written by datasets' "
        "save_to_disk, or data files (.jsonl, .json, .csv, .parquet)\n"
    )


def _held(args):
    """The records `eval` scores for these parsed arguments."""
    return held_out_records(args.data, args.data_split, args.data_config, args.limit)
