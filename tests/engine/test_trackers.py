"""report_to: the events of metrics.jsonl also in TensorBoard, MLflow and Weights & Biases (offline), for real."""

from __future__ import annotations

import importlib.util
import json

import pytest

from directalign.config import load_config
from directalign.engine.metrics import read_metrics
from directalign.engine.trackers import tracker_values, wanted_trackers
from directalign.errors import ConfigError
from directalign.training.dpo import train


def _train(tiny_model_dir, out, **kw):
    cfg = load_config("train", overrides=dict(
        model=str(tiny_model_dir), output_dir=str(out), max_steps=3, logging_steps=1, builtin_train_pairs=8,
        builtin_eval_pairs=4, per_device_train_batch_size=2, learning_rate=1e-2, kl_prompts=0, **kw))
    train(cfg)
    return read_metrics(out / "metrics.jsonl")


def _train_losses(events) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in events if e["split"] == "train"}


def test_event_names_follow_trl_dashboards():
    values, step = tracker_values({"step": 4, "split": "train", "loss": 0.5, "rewards/margins": 0.1, "flag": True,
                                   "note": "text", "nan": None})
    assert (values, step) == ({"train/loss": 0.5, "train/rewards/margins": 0.1}, 4)
    values, _ = tracker_values({"step": 2, "split": "health", "check": "kl", "message": "KL grows", "level": "warn"})
    assert values == {"health/check": "kl", "health/message": "KL grows", "health/level": "warn"}


def test_a_missing_tracker_package_is_one_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trackio" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^report_to trackio needs the trackio package: pip install trackio"):
        wanted_trackers(["trackio"])
    assert "trackio" not in wanted_trackers(["all"])
    with pytest.raises(ConfigError, match="report_to: none cannot be combined"):
        load_config("train", overrides={"report_to": "none,tensorboard"})


def test_tensorboard_event_files_hold_the_metrics(tiny_model_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = _train(tiny_model_dir, tmp_path / "run", report_to="tensorboard")
    logdir = tmp_path / "run" / "runs" / "run"  # logging_dir (default output_dir/runs), then the run's name
    assert list(logdir.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    assert {"train/loss", "train/rewards/accuracies", "eval/implicit_accuracy"} <= set(acc.Tags()["scalars"])
    losses = {s.step: s.value for s in acc.Scalars("train/loss")}
    assert losses == pytest.approx(_train_losses(events), rel=1e-6)  # the same numbers as metrics.jsonl
    assert [s.step for s in acc.Scalars("eval/implicit_accuracy")] == [0, 3]


def test_mlflow_records_the_run(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install mlflow-skinny)")
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    events = _train(tiny_model_dir, tmp_path / "run", report_to="mlflow", run_name="tiny-dpo")
    client = mlflow.tracking.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("tiny-dpo").experiment_id])
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/loss")}
    assert history == pytest.approx(_train_losses(events), rel=1e-6)
    assert run.data.params["loss_type"] == "sigmoid" and run.data.params["max_steps"] == "3"


def test_wandb_offline_writes_its_run(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is not installed (pip install wandb)")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    events = _train(tiny_model_dir, tmp_path / "run", report_to="wandb", logging_dir=str(tmp_path / "wb"))
    (run_file,) = (tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb")
    history, config = {}, {}
    for record in _wandb_records(run_file.read_bytes()):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
            if "train/loss" in items:
                history[items["_step"]] = items["train/loss"]
        elif kind == "config":
            config.update({u.key: json.loads(u.value_json) for u in record.config.update})
    assert history == pytest.approx(_train_losses(events), rel=1e-6)
    assert config["loss_type"] == "sigmoid" and config["max_steps"] == 3


def _wandb_records(raw: bytes):
    """The protobuf records of an offline .wandb file: a 7-byte header, then LevelDB's log format (32 KiB blocks
    of chunks, each with a 7-byte header: crc32c, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    assert raw[:4] == b":W&B"
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        data, pos = raw[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 2):
            pending = data
        elif kind in (3, 4):
            pending += data
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
