"""Damaged and hostile files in a run folder or the cache, two runs at once, and the health monitor across a
resume. The probe (benchmarks/probe.py) tries the same on every trainer; these are the CI checks on one or two."""

from __future__ import annotations

import json
import pickle
import shutil
import signal
import subprocess
import sys
import time

import pytest

from directalign.cli.main import main
from directalign.config import load_config
from directalign.engine.metrics import read_metrics
from directalign.errors import ConfigError
from directalign.training.dpo import train
from tests.conftest import PROJECT_ROOT
from tests.distributed.conftest import launch_env, max_difference
from tests.faults.conftest import as_args, run_library, values


class _Payload:
    """Unpickling this creates a marker file: what a crafted optimizer.pt in a downloaded run folder would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _flip(path, from_end: int = 40) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) - from_end] ^= 0xFF
    path.write_bytes(bytes(data))


def _stop_after(step: int):
    def on_step(done, metrics):
        if done == step:
            raise KeyboardInterrupt  # the in-process stand-in for a kill: nothing after this step is written
    return on_step


@pytest.fixture(scope="module")
def full_dpo(tiny_model_dir, tmp_path_factory, reward_file):
    out = tmp_path_factory.mktemp("full")
    run_library("dpo", values("dpo", tiny_model_dir, out, reward_file))
    return out


def _interrupted_dpo(tiny_model_dir, out, reward_file, after: int = 3) -> dict:
    found = values("dpo", tiny_model_dir, out, reward_file)
    with pytest.raises(KeyboardInterrupt):
        train(load_config("train", overrides=found), on_step=_stop_after(after))
    return found


def test_a_damaged_checkpoint_is_skipped_and_the_one_before_resumes_identically(tiny_model_dir, tmp_path,
                                                                                 reward_file, full_dpo, capsys):
    found = _interrupted_dpo(tiny_model_dir, tmp_path / "run", reward_file)
    _flip(tmp_path / "run" / "checkpoint-3" / "trainable.safetensors")
    run_library("dpo", found)
    said = capsys.readouterr().out
    assert "checkpoint-3 is damaged (trainable.safetensors does not match its checksum)" in said
    assert "resuming from" in said and "checkpoint-2 (step 2 of 4)" in said
    assert max_difference(full_dpo, tmp_path / "run") == 0.0


def test_hostile_pickles_in_the_run_folder_are_never_loaded(tiny_model_dir, tmp_path, reward_file, full_dpo):
    found = _interrupted_dpo(tiny_model_dir, tmp_path / "run", reward_file)
    marker = tmp_path / "EXECUTED"
    payload = pickle.dumps({"state": _Payload(marker)})
    for place in [tmp_path / "run", *(tmp_path / "run").glob("checkpoint-*")]:
        for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "pytorch_model.bin"):
            (place / name).write_bytes(payload)
    run_library("dpo", found)
    assert not marker.exists()
    assert max_difference(full_dpo, tmp_path / "run") == 0.0


def test_a_pickled_adapter_or_model_is_not_executed_by_eval(tiny_model_dir, tmp_path, full_dpo, capsys):
    marker = tmp_path / "EXECUTED"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text((full_dpo / "adapter" / "adapter_config.json").read_text())
    (adapter / "adapter_model.bin").write_bytes(pickle.dumps({"w": _Payload(marker)}))
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "What is 1 + 1?", "chosen": "2", "rejected": "3"}) + "\n")
    code = main(["eval", "--model", str(tiny_model_dir), "--adapter", str(adapter), "--data", str(data)])
    assert not marker.exists()
    assert code == 1 and "holds its weights as a pickle" in capsys.readouterr().err
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (model / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Payload(marker)}))
    code = main(["eval", "--model", str(model), "--data", str(data)])
    assert not marker.exists()  # transformers reads .bin weights with torch.load(weights_only=True)
    assert code == 1 and capsys.readouterr().err.startswith("error: model")


def test_a_damaged_reference_cache_entry_is_recomputed(tiny_model_dir, tmp_path, reward_file, monkeypatch, capsys):
    monkeypatch.setenv("DIRECTALIGN_HOME", str(tmp_path / "home"))
    first = values("dpo", tiny_model_dir, tmp_path / "first", reward_file, precompute_ref_log_probs=True)
    run_library("dpo", first)
    entries = sorted((tmp_path / "home" / "ref-cache").glob("*.safetensors"))
    assert entries
    _flip(entries[0], from_end=8)  # a flipped byte in the log-probs themselves
    capsys.readouterr()
    run_library("dpo", {**first, "output_dir": str(tmp_path / "second")})
    said = capsys.readouterr().out
    assert "is damaged (its checksum does not match); recomputing it" in said
    assert max_difference(tmp_path / "first", tmp_path / "second") == 0.0


def test_a_second_run_into_a_folder_in_use_is_refused(tiny_model_dir, tmp_path, reward_file):
    found = values("dpo", tiny_model_dir, tmp_path / "run", reward_file, max_steps=100000, save_steps=50)
    first = subprocess.Popen([sys.executable, "-m", "directalign", "train", *as_args(found)], env=launch_env(),
                             cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        metrics = tmp_path / "run" / "metrics.jsonl"
        while not metrics.is_file() or not metrics.stat().st_size:
            assert first.poll() is None and time.time() < deadline, "the first run did not start"
            time.sleep(0.1)
        config = (tmp_path / "run" / "config.json").read_bytes()
        with pytest.raises(ConfigError, match=f"is in use by another run \\(pid {first.pid}"):
            run_library("dpo", found)
        assert (tmp_path / "run" / "config.json").read_bytes() == config
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=300)
    assert first.returncode == 143 and "rerun the same command to resume" in err


def test_health_warnings_continue_across_a_resume(tiny_model_dir, tmp_path, reward_file):
    """The monitor's windows and cool-downs are in the checkpoint: an interrupted and resumed run warns exactly
    where the uninterrupted one does, no warning missing and none repeated."""
    keys = dict(max_steps=12, learning_rate=5e-2, health_window=3, health_cooldown_steps=3)
    full = values("dpo", tiny_model_dir, tmp_path / "full", reward_file, **keys)
    run_library("dpo", full)
    warned = [(e["step"], e["check"]) for e in read_metrics(tmp_path / "full" / "metrics.jsonl")
              if e["split"] == "health"]
    assert any(step <= 6 for step, _ in warned) and any(step > 6 for step, _ in warned), warned
    found = {**full, "output_dir": str(tmp_path / "resumed")}
    with pytest.raises(KeyboardInterrupt):
        train(load_config("train", overrides=found), on_step=_stop_after(7))
    run_library("dpo", found)
    resumed = [(e["step"], e["check"]) for e in read_metrics(tmp_path / "resumed" / "metrics.jsonl")
               if e["split"] == "health"]
    assert resumed == warned


def test_a_damaged_iterative_round_runs_again_from_its_rollout(tiny_model_dir, tmp_path, reward_file, capsys):
    found = values("iterative-dpo", tiny_model_dir, tmp_path / "full", reward_file)
    run_library("iterative-dpo", found)
    again = tmp_path / "again"
    shutil.copytree(tmp_path / "full", again)
    (again / "finished.json").unlink()  # as a kill just before the final save leaves it
    shutil.rmtree(again / "model")
    _flip(again / "round_1" / "trainable.safetensors")
    capsys.readouterr()
    run_library("iterative-dpo", {**found, "output_dir": str(again)})
    said = capsys.readouterr().out
    assert "round_1 is damaged (trainable.safetensors does not match its checksum); running it again" in said
    assert max_difference(tmp_path / "full", again) == 0.0
