"""Experiment trackers (`report_to`): the events of metrics.jsonl also sent to TensorBoard, Weights & Biases, MLflow
or Trackio through accelerate's tracker interface (accelerate.tracking), on the main process only.

metrics.jsonl stays the source of truth: a tracker gets a copy of each event, named as TRL's runs name them on
the same dashboards (`train/loss`, `train/rewards/margins`, `eval/rewards/accuracies`), at the event's step.
A tracker whose package is missing is a one-line error before any work starts; each tracker's own settings come
from its environment, as with TRL (WANDB_MODE=offline, WANDB_PROJECT, MLFLOW_TRACKING_URI, ...).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from directalign.errors import ConfigError

# report_to name -> (accelerate tracker name, the package it imports)
TRACKERS = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
    "trackio": ("trackio", "trackio"),
}
NOT_LOGGED = ("step", "split", "tag", "round")


def wanted_trackers(report_to: list[str]) -> list[str]:
    """The trackers of `report_to`; "all" is every one whose package is installed (TrainingArguments' meaning)."""
    if "all" in report_to:
        return [name for name, (_, package) in TRACKERS.items() if importlib.util.find_spec(package) is not None]
    names = [name for name in report_to if name != "none"]
    for name in names:
        package = TRACKERS[name][1]
        if importlib.util.find_spec(package) is None:
            raise ConfigError(f"report_to {name} needs the {package} package: pip install {package} "
                              "(or pip install 'directalign[trackers]')")
    return names


def _hparams(config: dict) -> dict:
    """The config as the scalar values trackers store (lists joined, None as text)."""
    shown = {}
    for key, value in config.items():
        if isinstance(value, list):
            value = ",".join(map(str, value))
        shown[key] = value if isinstance(value, bool | int | float | str) else str(value)
    return shown


def start_trackers(cfg, output_dir: Path) -> list:
    """Started accelerate trackers for cfg.report_to, each with the run's config stored as hyperparameters."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    names = wanted_trackers(cfg.report_to)
    run_name = cfg.run_name or Path(output_dir).name
    logging_dir = Path(cfg.logging_dir) if cfg.logging_dir else Path(output_dir) / "runs"
    trackers = []
    for name in names:
        cls = LOGGER_TYPE_TO_CLASS[TRACKERS[name][0]]
        if name == "tensorboard":
            tracker = cls(run_name, logging_dir)
        elif name == "mlflow":
            tracker = cls(experiment_name=run_name, logging_dir=str(logging_dir), run_name=run_name)
        elif name == "wandb":
            tracker = cls(run_name, dir=str(logging_dir), name=run_name)
        else:
            tracker = cls(run_name)
        logging_dir.mkdir(parents=True, exist_ok=True)
        tracker.start()
        tracker.store_init_configuration(_hparams(cfg.to_dict()))
        trackers.append(tracker)
    return trackers


def tracker_values(event: dict) -> tuple[dict, int | None]:
    """An event of metrics.jsonl as tracker values `split/name` and its step; a health warning as text."""
    split = event.get("split") or "event"
    values = {}
    for name, value in event.items():
        if name in NOT_LOGGED or isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float) or (split == "health" and isinstance(value, str)):
            values[f"{split}/{name}"] = value
    step = event.get("step")
    return values, int(step) if isinstance(step, int | float) else None
