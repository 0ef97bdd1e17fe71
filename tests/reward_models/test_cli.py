"""`directalign reward-model train | score` through the command line, on a tiny random Llama."""

import json

from directalign.cli.main import main
from directalign.engine.metrics import read_metrics


def test_train_then_score_pairs_and_responses(tiny_model_dir, easy_pairs, tmp_path, capsys):
    out = tmp_path / "rm"
    code = main(
        [
            "reward-model",
            "train",
            "--data",
            str(easy_pairs),
            "--model",
            str(tiny_model_dir),
            "--output-dir",
            str(out),
            "--max-steps",
            "6",
            "--per-device-train-batch-size",
            "4",
            "--learning-rate",
            "1e-2",
            "--logging-steps",
            "2",
            "--max-length",
            "64",
            "--max-prompt-length",
            "48",
            "--lora-target-modules",
            "q_proj,v_proj",
            "--eval-before-training",
            "false",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert f"reward model: {out / 'reward_model'} (6 steps" in printed
    assert "accuracy" in printed and "n_pairs" in printed
    assert [e["step"] for e in read_metrics(out / "metrics.jsonl") if e["split"] == "train"] == [2, 4, 6]
    assert json.loads((out / "config.json").read_text())["lora_target_modules"] == ["q_proj", "v_proj"]

    scored = tmp_path / "scored.jsonl"
    assert (
        main(
            [
                "reward-model",
                "score",
                "--model",
                str(out),
                "--data",
                str(easy_pairs),
                "--limit",
                "5",
                "--out",
                str(scored),
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_pairs"] == 5 and summary["accuracy"] == 1.0 and summary["mean_margin"] > 0
    rows = [json.loads(line) for line in scored.read_text().splitlines()]
    assert rows[0]["score_chosen"] > rows[0]["score_rejected"]

    responses = tmp_path / "responses.jsonl"
    responses.write_text(json.dumps({"prompt": "Can you help?", "completion": "Yes, certainly, here is how."}) + "\n")
    assert main(["reward-model", "score", "--model", str(out / "reward_model"), "--data", str(responses)]) == 0
    assert "n_rows" in capsys.readouterr().out


def test_bad_flag_values_are_one_line_errors(capsys):
    assert main(["reward-model", "train", "--data", "x.jsonl", "--use-peft", "maybe"]) == 1
    assert "use_peft: cannot read 'maybe' as true or false" in capsys.readouterr().err
    assert main(["reward-model", "train", "--label-smoothing", "0.1"]) == 1
    assert "reward-model train does not take 'label_smoothing'" in capsys.readouterr().err
