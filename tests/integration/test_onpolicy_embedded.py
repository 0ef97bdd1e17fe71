"""KTO, online DPO, iterative DPO (the demo) and GRPO on the real embedded SmolLM2-135M-Instruct, a few steps each."""

import math
import re

import pytest

from directalign.cli.main import main
from directalign.engine.metrics import read_metrics
from tests.conftest import shared_data_dir

pytestmark = pytest.mark.integration

SMALL = ["--builtin-train-prompts", "4", "--builtin-eval-prompts", "3", "--per-device-train-batch-size", "2",
         "--num-generations", "3", "--max-new-tokens", "8", "--kl-prompts", "2", "--kl-samples", "1",
         "--eval-max-new-tokens", "8", "--logging-steps", "1"]


def train_events(folder):
    return [e for e in read_metrics(folder / "metrics.jsonl") if e["split"] == "train"]


def test_kto_on_the_llamafactory_kto_file(tmp_path, capsys):
    data = shared_data_dir() / "llamafactory-kto-en-demo" / "kto_en_demo.json"
    if not data.is_file():
        pytest.skip(f"shared data not found at {data}")
    out = tmp_path / "kto"
    code = main(["train", "--loss-type", "kto", "--data", str(data), "--output-dir", str(out), "--max-steps", "2",
                 "--logging-steps", "1", "--per-device-train-batch-size", "2", "--max-length", "192",
                 "--max-prompt-length", "128", "--eval-split", "0.02", "--undesirable-weight", "auto",
                 "--kl-prompts", "0", "--save-steps", "0", "--learning-rate", "1e-4"])
    assert code == 0
    # 300 rows, 6 held out by the seeded split: 145 desirable and 149 undesirable left, so lambda_D = 149 / 145.
    assert "KTO: 145 desirable / 149 undesirable examples; desirable_weight 1.028" in capsys.readouterr().out
    events = train_events(out)
    assert len(events) == 2 and all(math.isfinite(e["loss"]) and e["kl"] >= 0 for e in events)
    first = events[0]
    assert first["weights/desirable"] == pytest.approx(149 / 145) and first["weights/undesirable"] == 1.0
    # Step 1: policy == reference, so each example's loss is its weight times sigmoid(0) = 1/2.
    n_d, n_u = first["count/desirable"], first["count/undesirable"]
    assert first["loss"] == pytest.approx(0.5 * (n_d * 149 / 145 + n_u) / (n_d + n_u), abs=1e-5)


def test_online_dpo_two_steps(tmp_path, capsys):
    out = tmp_path / "online"
    assert main(["online-dpo", "--output-dir", str(out), "--max-steps", "2", *SMALL]) == 0
    assert "held-out" in capsys.readouterr().out
    events = train_events(out)
    assert len(events) == 2 and all(0 <= e["reward"] <= 1 for e in events)


def test_grpo_two_steps(tmp_path):
    out = tmp_path / "grpo"
    assert main(["grpo", "--output-dir", str(out), "--max-steps", "2", "--beta", "0.04", *SMALL]) == 0
    events = train_events(out)
    assert len(events) == 2 and events[-1]["kl"] >= 0 and "frac_reward_zero_std" in events[-1]


def test_demo_runs_one_round_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out), "--num-rounds", "1", "--prompts-per-round", "4", *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "round  reward" in printed and "held-out reward" in printed
    assert re.search(r"held-out content accuracy \d\.\d{3} -> \d\.\d{3} \([-+]\d\.\d{3}, 95% CI \[", printed)
    assert (out / "round_1" / "pairs.jsonl").is_file() and (out / "model" / "config.json").is_file()


def test_demo_with_a_reward_function_judge(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out), "--num-rounds", "1", "--prompts-per-round", "4",
                 "--judge", "reward:builtin_content", *SMALL]) == 0
    assert "pairs judged by reward:builtin_content" in capsys.readouterr().out
    sample = next(e for e in read_metrics(out / "metrics.jsonl") if e["split"] == "sample")
    assert sample["judge/calls"] == 4 * 3 and sample["judge/consistency"] == 1.0  # C(3,2) pairs, one order each
