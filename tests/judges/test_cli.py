"""`directalign judge validate | pairs` and `directalign synth`, through the command line."""

import json

import pytest

from directalign.cli.main import main
from directalign.data.formats import CONVERSATIONAL, load_records

LONGER = "def longer(prompts, completions, **columns):\n    return [float(len(c)) for c in completions]\n"


@pytest.fixture
def files(tmp_path):
    rows = [
        {"prompt": "What is 2 + 2?", "chosen": "4, because 2 + 2 = 4 (correct)", "rejected": "5"},
        {
            "prompt": "[hard] Capital of Australia?",
            "chosen": "Canberra (correct)",
            "rejected": "Sydney, the largest city",
        },
        {"prompt": "[hard] Is 91 prime?", "chosen": "No: 91 = 7 x 13 (correct)", "rejected": "Yes"},
        {"prompt": "Say hi", "chosen": "Hi! (correct)", "rejected": "Hello there, how are you doing today?"},
    ]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    longer = tmp_path / "longer.py"
    longer.write_text(LONGER)
    return data, longer


def test_validate_a_reward_function_judge(files, capsys):
    data, longer = files
    assert main(["judge", "validate", "--human", str(data), "--judge", f"reward:{longer}:longer", "--json"]) == 0
    (validation,) = json.loads(capsys.readouterr().out)["validations"]
    # longer wins on pairs 1 and 3 (where the chosen is longer), loses on 2 and 4
    assert (validation["n"], validation["agreement"], validation["position_flips"]) == (4, 0.5, 0)
    assert main(["judge", "validate", "--human", str(data), "--judge", f"reward:{longer}:longer"]) == 0
    printed = capsys.readouterr().out
    assert "4 labelled pairs from" in printed and f"reward:{longer}:longer" in printed and "0.500 [" in printed


def test_validate_and_relabel_with_voting_server_judges(files, judge_server, tmp_path, capsys):
    data, _ = files
    judges = ["--judge", "openai:fair-judge", "--judge", "openai:biased-judge", "--base-url", judge_server.base_url]
    assert main(["judge", "validate", "--human", str(data), *judges]) == 0
    printed = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in printed.splitlines()[2:5]}
    assert lines["openai:fair-judge"][1:5] == ["4", "0", "0", "1.000"]
    assert lines["openai:biased-judge"][1:4] == ["4", "2", "2"]  # both [hard] pairs flip with the order: ties
    assert "Cohen's kappa openai:fair-judge vs openai:biased-judge" in printed

    out = tmp_path / "judged.jsonl"
    assert main(["judge", "pairs", "--data", str(data), "--out", str(out), *judges]) == 0
    printed = capsys.readouterr().out
    assert "4 pairs judged: 2 written" in printed and "2 ties (2 from order flips), 0 unparseable" in printed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(row["agrees_with_data"] and "(correct)" in row["chosen"][0]["content"] for row in rows)
    assert load_records(out).schema == CONVERSATIONAL


def test_synth_writes_a_dataset_the_trainer_reads(files, tiny_model_dir, tmp_path, capsys):
    _, longer = files
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["Tell me a joke.", "Name a fruit."]))
    out = tmp_path / "synthetic.jsonl"
    code = main(
        [
            "synth",
            "--prompts",
            str(prompts),
            "--out",
            str(out),
            "--model",
            str(tiny_model_dir),
            "--judge",
            f"reward:{longer}:longer",
            "--temperatures",
            "0.7,1.0",
            "--samples-per-temperature",
            "2",
            "--max-new-tokens",
            "8",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "2 prompts -> 8 distinct responses" in printed and "12 pairs judged" in printed
    loaded = load_records(out)
    assert loaded.schema == CONVERSATIONAL and len(loaded.records) == 2  # best-vs-worst: one pair per prompt
    row = json.loads(out.read_text().splitlines()[0])
    assert row["judge"] == f"reward:{longer}:longer" and row["chosen_temperature"] in (0.7, 1.0)


def test_bad_prompts_file_is_one_line_error(tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"question": "no prompt field"}) + "\n")
    assert main(["synth", "--prompts", str(prompts), "--out", str(tmp_path / "o.jsonl"), "--judge", "reward:x:y"]) == 1
    assert f"{prompts}:1: field 'prompt'" in capsys.readouterr().err


def test_openai_judge_keys_and_url_credentials_never_reach_output(files, judge_server, tmp_path, capsys,
                                                                   monkeypatch):
    data, _ = files
    key = "sk-judge-environment-key-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    # A plain URL from OPENAI_BASE_URL: the environment's key is the bearer token.
    monkeypatch.setenv("OPENAI_BASE_URL", judge_server.base_url)
    assert main(["judge", "validate", "--human", str(data), "--judge", "openai:fair-judge", "--json"]) == 0
    assert set(judge_server.authorizations) == {f"Bearer {key}"}
    # A URL with credentials in the spec (it beats OPENAI_BASE_URL, which now points nowhere).
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    spec = f"openai:fair-judge@{judge_server.url_with_credentials('bob:hunter2-pw')}"
    out = tmp_path / "judged.jsonl"
    assert main(["judge", "pairs", "--data", str(data), "--out", str(out), "--judge", spec]) == 0
    assert main(["judge", "validate", "--human", str(data), "--judge", spec]) == 0
    assert main(["judge", "validate", "--human", str(data), "--judge", spec.replace("fair-judge", "nope")]) == 1
    assert main(["judge", "validate", "--human", str(data), "--judge", "oops:" + spec]) == 1
    captured = capsys.readouterr()
    assert judge_server.authorizations[-1].startswith("Basic ")
    assert "openai:fair-judge@http://***@127.0.0.1:" in captured.out  # the judge's name in the table
    assert captured.err.count("error: ") == 2 and "http://***@127.0.0.1:" in captured.err
    written = "".join(path.read_text() for path in tmp_path.rglob("*") if path.is_file())
    assert "openai:fair-judge@http://***@127.0.0.1:" in written
    for shown in (captured.out, captured.err, written):
        assert "hunter2" not in shown and "bob:" not in shown and key not in shown
