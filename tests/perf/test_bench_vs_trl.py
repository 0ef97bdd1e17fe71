"""benchmarks/bench_vs_trl.py: its arguments, the FLOPs it counts, the data it writes for each method, and one
JSON layout for every method. No timings are asserted; one child pair runs on a tiny random model."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks import bench_vs_trl as bench
from benchmarks.vs_trl_runs import METHODS

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {"method", "speedup", "rss_ratio", "first_loss_abs_diff", "first_loss_equal", "trl_pairs_per_s",
            "directalign_pairs_per_s", "trl_peak_rss_mb", "directalign_peak_rss_mb", "mfu", "hfu",
            "hfu_model_shapes", "native_bf16"}


@pytest.mark.parametrize("argv", [["--method", "ppo", "--data", "x"], ["--data", "x", "--pairs", "0"],
                                  ["--data", "x", "--reps", "0"], ["--method", "kto"]])
def test_bad_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as err:
        bench.main(argv)
    assert err.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_every_method_has_its_passes_and_a_trl_trainer():
    assert set(bench.PASSES) == set(METHODS) == {"dpo", "kto", "rm", "orpo", "simpo"}
    assert {m.trl_trainer.split(":")[1] for m in METHODS.values()} == {
        "DPOTrainer", "KTOTrainer", "RewardTrainer", "ORPOTrainer", "CPOTrainer"}


def test_flops_follow_the_docstring():
    b, h, t, r = 1000, 300, 50, 20
    assert bench.model_flops("dpo", b, h, t, r) == 4 * b * t + 2 * b * t + 6 * h * r
    assert bench.model_flops("simpo", b, h, t, r) == bench.model_flops("orpo", b, h, t, r) == 4 * b * t + 4 * h * r
    assert bench.model_flops("kto", b, h, t, r) == 10 * b * t + 10 * h * r
    assert bench.model_flops("rm", b, h, t, r) == 4 * b * t  # no LM head


def _run(losses, term=None, total=10.0):
    return {"total_s": total, "train_s": total / 2, "setup_s": 1.0, "cpu_s": total, "peak_rss_mb": 1000.0,
            "step_losses": losses, "first_logps_chosen": -50.0, "first_preference_term": term,
            "parameters": [1000, 300]}


INFO = {"pairs": 4, "dataset_tokens": 400, "response_tokens": 100, "micro_batches": 2,
        "positions": {"trl": 500, "directalign": 400}}


@pytest.mark.parametrize("method", list(METHODS))
def test_summary_has_the_same_keys_for_every_method(method):
    term = 0.7 if method == "orpo" else None
    runs = {"trl": [_run([0.69, 0.68], term, 20.0)], "directalign": [_run([0.69, 0.6805], term)]}
    summary = bench.summarise(runs, INFO, 1e9, None, method, {"trl": 1e9, "directalign": 2e9})
    reference = bench.summarise({"trl": [_run([0.69, 0.68], 0.7, 20.0)], "directalign": [_run([0.69, 0.6805], 0.7)]},
                                INFO, 1e9, None, "orpo", {"trl": 1e9, "directalign": 2e9})
    assert set(summary) == set(reference) and REQUIRED <= set(summary)
    assert summary["method"] == method
    assert summary["speedup"] == pytest.approx(2.0)
    assert summary["first_loss_equal"] is True
    assert summary["max_step_loss_abs_diff"] == pytest.approx(5e-4)
    json.dumps(summary)


def test_orpo_is_judged_on_its_odds_ratio_term():
    # The totals differ (TRL's NLL pools the prompt's tokens); the odds-ratio terms decide.
    runs = {"trl": [_run([2.5], 0.70001)], "directalign": [_run([2.1], 0.70003)]}
    summary = bench.summarise(runs, INFO, 1e9, None, "orpo")
    assert summary["first_loss_abs_diff"] == pytest.approx(0.4)
    assert summary["first_preference_term_abs_diff"] == pytest.approx(2e-5)
    assert summary["first_loss_equal"] is True
    runs["directalign"][0]["first_preference_term"] = 0.71
    assert bench.summarise(runs, INFO, 1e9, None, "orpo")["first_loss_equal"] is False


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    rows = [{"prompt": f"Question {i}?", "chosen": f"A good answer {i}.", "rejected": f"No {i}."} for i in range(3)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_kto_data_is_directalign_unpairing_in_order(pairs_file, tmp_path, tiny_model_dir):
    paired = bench.write_pairs(str(pairs_file), 2, tmp_path / "dpo.jsonl", "dpo", str(tiny_model_dir))
    unpaired = bench.write_pairs(str(pairs_file), 2, tmp_path / "kto.jsonl", "kto", str(tiny_model_dir))
    rows = [json.loads(line) for line in (tmp_path / "kto.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == [True, False, True, False]
    assert "good answer 0" in json.dumps(rows[0]["completion"]) and "No 0" in json.dumps(rows[1]["completion"])
    assert paired["pairs"] == unpaired["pairs"] == 2
    assert paired["dataset_tokens"] == unpaired["dataset_tokens"]
    assert paired["positions"]["directalign"] <= paired["positions"]["trl"]
    assert paired["micro_batches"] == 1 and unpaired["micro_batches"] == 2


@pytest.mark.parametrize("method", ["simpo"])
def test_children_agree_on_the_first_loss_on_a_tiny_model(method, pairs_file, tmp_path, tiny_model_dir):
    data = tmp_path / "data.jsonl"
    bench.write_pairs(str(pairs_file), 2, data, method, str(tiny_model_dir))
    results = {}
    for system in ("trl", "directalign"):
        out = tmp_path / f"{system}.json"
        proc = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "bench_vs_trl.py"), "--child", system, "--method", method,
             "--model", str(tiny_model_dir), "--data", str(data), "--result", str(out), "--threads", "1"],
            capture_output=True, text=True, cwd=tmp_path, timeout=600,
            env={**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1", "TQDM_DISABLE": "1",
                 "DIRECTALIGN_HOME": str(tmp_path / "home")})
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[system] = json.loads(out.read_text())
    assert abs(results["trl"]["step_losses"][0] - results["directalign"]["step_losses"][0]) < 1e-4
    assert results["directalign"]["parameters"] == results["trl"]["parameters"]


@pytest.mark.parametrize("bf16", [False, True])
def test_the_bf16_rate_is_measured_only_when_bf16_runs(monkeypatch, bf16):
    measured = []
    monkeypatch.setattr(bench, "matmul_flops", lambda dtype: measured.append(dtype) or 1e9)
    monkeypatch.setattr(bench, "shape_flops", lambda info, method, model: {"trl": 1e9, "directalign": 1e9})
    args = argparse.Namespace(bf16=bf16, method="dpo", model="m")
    flops32, flops16, shapes = bench.measure_rates(INFO, args)
    assert measured == (["bfloat16", "float32"] if bf16 else ["float32"])
    assert (flops16 is None) is not bf16 and set(shapes) == {"trl", "directalign"}


def test_scaling_runs_the_scaling_table_at_its_defaults(monkeypatch):
    from benchmarks import scaling

    seen = []
    monkeypatch.setattr(scaling, "main", lambda argv=None: seen.append(argv) or 0)
    assert bench.main(["--scaling"]) == 0 and seen == [[]]
