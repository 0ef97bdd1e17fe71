"""Sweeps: the search space, a resumable grid on a tiny model that reuses the cached reference, and stale trials."""

import json

import pytest

from directalign.cli.main import main
from directalign.errors import ConfigError
from directalign.training.sweep import (
    Param,
    SweepSettings,
    _requeue_stale,
    collect_results,
    format_results,
    parse_param,
    run_sweep,
)

optuna = pytest.importorskip("optuna")


def test_default_ranges_depend_on_the_fine_tuning_mode():
    assert parse_param("beta") == Param("beta", 0.1, 0.5)
    assert (parse_param("learning_rate").low, parse_param("learning_rate").high) == (1e-5, 5e-4)
    assert (parse_param("learning_rate", use_peft=False).low, parse_param("learning_rate", False).high) == (1e-7, 5e-6)
    assert parse_param("loss-type").choices == ["sigmoid", "ipo"]
    with pytest.raises(ConfigError, match="no default range for 'max_steps'"):
        parse_param("max_steps")


def test_ranges_values_and_grids():
    assert parse_param("beta=0.1,0.3").choices == [0.1, 0.3]
    assert parse_param("loss_type=sigmoid,hinge").choices == ["sigmoid", "hinge"]
    lr = parse_param("learning_rate=1e-6:1e-4")
    assert lr.log and lr.grid(3) == [1e-6, 1e-5, 1e-4]
    assert parse_param("beta=0.1:0.5").grid(3) == [0.1, 0.3, 0.5]
    assert parse_param("num_train_epochs").grid(3) == [1, 2, 3]
    with pytest.raises(ConfigError, match="LOW < HIGH"):
        parse_param("beta=0.5:0.1")


def test_direction_follows_the_metric():
    assert SweepSettings(metric="implicit_accuracy").resolved_direction() == "maximize"
    assert SweepSettings(metric="kl").resolved_direction() == "minimize"
    assert SweepSettings(metric="kl", direction="maximize").resolved_direction() == "maximize"


def test_a_stale_running_trial_is_failed_and_queued_again():
    study = optuna.create_study()
    trial = study.ask()
    trial.suggest_float("beta", 0.1, 0.5)
    _requeue_stale(study)
    states = [t.state.name for t in study.get_trials()]
    assert states == ["FAIL", "WAITING"]
    assert study.get_trials()[1].params == {} and study.get_trials()[1].system_attrs["fixed_params"] == trial.params


def test_equal_metrics_rank_by_the_lower_kl():
    study = optuna.create_study(direction="maximize")
    beta = optuna.distributions.FloatDistribution(0.1, 0.5)
    for b, value, kl in [(0.1, 1.0, 3.0), (0.2, 1.0, 0.5), (0.3, 0.8, 0.1)]:
        study.add_trial(optuna.trial.create_trial(params={"beta": b}, distributions={"beta": beta}, value=value,
                                                  user_attrs={"eval": {"kl": kl}}))
    results = collect_results(study, "implicit_accuracy", "maximize", "grid", "memory")
    assert [t["rank"] for t in results["trials"]] == [2, 1, 3] and results["best_trial"] == 1


def test_grid_sweep_resumes_reuses_the_reference_cache_and_ranks(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIRECTALIGN_HOME", str(tmp_path / "home"))  # an empty reference cache
    base = dict(model=str(tiny_model_dir), max_steps=2, logging_steps=1, builtin_train_pairs=8, builtin_eval_pairs=4,
                per_device_train_batch_size=2, learning_rate=1e-2, save_steps=0, kl_prompts=2, kl_samples=1,
                eval_max_new_tokens=8)
    params = [parse_param("beta=0.1,0.5")]
    first = run_sweep(tmp_path / "sweep", params, SweepSettings(sampler="grid", n_trials=1), overrides=base)
    assert [t["state"] for t in first["trials"]] == ["COMPLETE"]
    printed = capsys.readouterr().out
    assert printed.count("computed and cached") == 2 and "read from the cache" not in printed  # train + eval

    results = run_sweep(tmp_path / "sweep", params, SweepSettings(sampler="grid"), overrides=base)  # resumes
    printed = capsys.readouterr().out
    assert "1 of 2 trials complete; running 1 more" in printed
    assert printed.count("read from the cache") == 2 and "computed and cached" not in printed
    trials = results["trials"]
    assert [t["number"] for t in trials] == [0, 1]
    assert sorted(t["params"]["beta"] for t in trials) == [0.1, 0.5]
    best = min(trials, key=lambda t: t["rank"])
    assert results["best_trial"] == best["number"] and best["value"] == max(t["value"] for t in trials)
    assert all(t["kl"] is not None and t["steps"] == 2 for t in trials)
    assert (tmp_path / "sweep" / "trial-001" / "adapter" / "adapter_config.json").is_file()
    assert json.loads((tmp_path / "sweep" / "results.json").read_text())["best_trial"] == best["number"]
    assert "best: trial" in format_results(results)

    with pytest.raises(ConfigError, match="different params"):
        run_sweep(tmp_path / "sweep", [parse_param("beta=0.2,0.3")], SweepSettings(sampler="grid"), overrides=base)


def test_sweep_command_line_writes_table_and_report(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIRECTALIGN_HOME", str(tmp_path / "home"))
    code = main(["sweep", "--output-dir", str(tmp_path / "sweep"), "--param", "learning_rate=1e-3,1e-2",
                 "--sampler", "grid", "--metric", "kl", "--model", str(tiny_model_dir), "--max-steps", "1",
                 "--builtin-train-pairs", "4", "--builtin-eval-pairs", "2", "--kl-prompts", "1",
                 "--eval-max-new-tokens", "4", "--per-device-train-batch-size", "2"])
    assert code == 0
    out = capsys.readouterr().out
    assert "best: trial" in out and "(kl minimize)" in out
    assert (tmp_path / "sweep" / "report.html").is_file()
