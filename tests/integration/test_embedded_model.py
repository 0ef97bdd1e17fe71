"""The real embedded SmolLM2-135M-Instruct for a handful of steps, through the command line."""

import json

import pytest

from directalign.cli.main import main
from directalign.engine.metrics import read_metrics

pytestmark = pytest.mark.integration


def test_train_then_eval_adapter_on_builtin_pairs(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--output-dir", str(out), "--max-steps", "3", "--logging-steps", "1",
                 "--builtin-train-pairs", "12", "--builtin-eval-pairs", "8", "--learning-rate", "1e-3"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "implicit_accuracy" in printed and "before" in printed
    steps = [e for e in read_metrics(out / "metrics.jsonl") if e["split"] == "train"]
    assert len(steps) == 3 and all(e["pairs_per_s"] > 0 for e in steps)

    held_out = tmp_path / "held.jsonl"
    held_out.write_text("".join(json.dumps(row) + "\n" for row in [
        {"prompt": "What is 12 + 30? Reply with just the number.", "chosen": "42", "rejected": "43"},
        {"prompt": "Write the word cat in capital letters.", "chosen": "CAT", "rejected": "cat"},
    ]))
    code = main(["eval", "--adapter", str(out / "adapter"), "--data", str(held_out), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n_pairs"] == 2
    assert {"implicit_accuracy", "mean_margin", "logp_accuracy"} <= result.keys()
    assert result["mean_margin"] != 0.0


def test_hh_rlhf_run_logs_every_metric(tmp_path, hh_rlhf_file):
    out = tmp_path / "hh"
    code = main(["train", "--data", str(hh_rlhf_file), "--output-dir", str(out), "--max-steps", "2",
                 "--logging-steps", "1", "--per-device-train-batch-size", "2", "--max-length", "384",
                 "--max-prompt-length", "256", "--eval-split", "0.004", "--eval-before-training", "false"])
    assert code == 0
    events = read_metrics(out / "metrics.jsonl")
    train_events = [e for e in events if e["split"] == "train"]
    assert len(train_events) == 2
    for key in ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "kl", "grad_norm", "tokens_per_s"):
        assert train_events[-1][key] is not None, key
    assert [e["n_pairs"] for e in events if e["split"] == "eval"] == [6]
