"""A four-trial sweep on the embedded SmolLM2-135M-Instruct: the reference is computed once and read from the cache
by every later trial, and the best trial is the one with the best held-out metric."""

import json

import pytest

from directalign.cli.main import main

pytestmark = pytest.mark.integration
pytest.importorskip("optuna")


def test_four_trial_grid_sweep_reuses_the_reference_and_picks_the_best(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    code = main(["sweep", "--output-dir", str(sweep), "--sampler", "grid", "--param", "beta=0.1,0.5",
                 "--param", "learning_rate=1e-4,1e-3", "--metric", "implicit_accuracy",
                 "--max-steps", "1", "--logging-steps", "1", "--builtin-train-pairs", "4", "--builtin-eval-pairs", "6",
                 "--per-device-train-batch-size", "2", "--save-steps", "0", "--kl-prompts", "1", "--kl-samples", "2",
                 "--eval-max-new-tokens", "8"])
    assert code == 0
    printed = capsys.readouterr().out
    results = json.loads((sweep / "results.json").read_text())
    trials = results["trials"]
    assert [t["state"] for t in trials] == ["COMPLETE"] * 4
    assert sorted((t["params"]["beta"], t["params"]["learning_rate"]) for t in trials) == [
        (0.1, 1e-4), (0.1, 1e-3), (0.5, 1e-4), (0.5, 1e-3)]
    # Trial 0 computes the reference log-probs (or finds them from an earlier session); trials 1-3 only read them.
    after_first = printed.split("trial 1: ", 1)[1]
    assert "computed and cached" not in after_first and after_first.count("read from the cache") == 6
    best = next(t for t in trials if t["number"] == results["best_trial"])
    assert best["value"] == max(t["value"] for t in trials) and best["rank"] == 1
    assert all(t["kl"] is not None and t["kl"] == t["eval"]["kl"] for t in trials)
    assert f"best: trial {best['number']}" in printed
    page = (sweep / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2 and "Best trial" in page
