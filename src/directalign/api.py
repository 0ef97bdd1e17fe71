"""The Python API: each command as a function, for notebooks and scripts.

    from directalign import TrainConfig, train, evaluate

    result = train(max_steps=20, data=[{"prompt": ..., "chosen": ..., "rejected": ...}, ...])
    result = train(TrainConfig(loss_type="ipo", beta=0.5), max_steps=20)   # a config, then keys over it
    result = train("configs/dpo.yaml", learning_rate=1e-5)                  # a YAML (a TRL config too)
    evaluate(adapter=result.adapter_dir, data="builtin")

A trainer takes a config (a `TrainConfig` etc., a YAML path, or a dict), then any config key as a keyword
argument over it (the same keys as the command's --help), and validates the result as the command line does.
Data (`data`, `eval_data`, `prompts`, `eval_prompts`) may be a path, a Hub dataset id, a `datasets.Dataset`, a
pandas DataFrame or a list of dicts (data.memory). It returns a result object: `metrics` (held-out, after),
`eval_before`, `eval_after`, `steps`, `output_dir`, `outputs` (adapter/, model/, merged/), `adapter_dir`,
`model_card`, `metrics_file` and `events` (every event of metrics.jsonl).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any

from directalign.config import (
    GRPOConfig,
    IterativeDPOConfig,
    OnlineDPOConfig,
    RewardModelConfig,
    TrainConfig,
    load_config,
)
from directalign.config.loading import apply_values
from directalign.data.memory import DATA_KEYS, as_data_name, materialise
from directalign.errors import ConfigError
from directalign.evaluation.heldout import evaluate

__all__ = [
    "GRPOConfig", "IterativeDPOConfig", "OnlineDPOConfig", "RewardModelConfig", "TrainConfig", "diagnose_data",
    "evaluate", "grpo", "inspect_data", "iterative_dpo", "load_data", "online_dpo", "train", "train_reward_model",
]


def make_config(config_class: type, config: Any = None, keys: dict | None = None):
    """A validated config of `config_class` from a config object, a YAML path or a dict, then `keys` over it."""
    keys = materialise(keys or {})
    if config is None or isinstance(config, str | os.PathLike):
        return load_config(config_class, config, keys, origin="keyword arguments")
    if isinstance(config, dict):
        return load_config(config_class, None, {**materialise(config), **keys}, origin="keyword arguments")
    if not isinstance(config, config_class):
        raise ConfigError(f"expected a {config_class.__name__}, a YAML path or a dict; got {type(config).__name__}")
    config = copy.deepcopy(config)
    for name in DATA_KEYS:  # TrainConfig(data=dataset): the dataclass takes any object
        if hasattr(config, name) and getattr(config, name) is not None:
            setattr(config, name, as_data_name(getattr(config, name), name))
    apply_values(config, keys, "keyword arguments")
    return config.validate()


def train(config: TrainConfig | str | dict | None = None, /, *, on_step: Callable | None = None, **keys):
    """`directalign train`: the DPO family (sigmoid, ipo, robust, hinge, simpo, orpo, cpo) and KTO."""
    from directalign.training.dpo import train as run

    return run(make_config(TrainConfig, config, keys), on_step=on_step)


def online_dpo(config: OnlineDPOConfig | str | dict | None = None, /, *, reward_fn: Callable | None = None,
               **keys):
    """`directalign online-dpo`; reward_fn(prompts, completions, **columns) -> list of floats, or the
    reward_funcs key (builtin, MODULE:FUNCTION, FILE.py:FUNCTION)."""
    from directalign.training.online import online_dpo as run

    return run(make_config(OnlineDPOConfig, config, keys), reward_fn)


def iterative_dpo(config: IterativeDPOConfig | str | dict | None = None, /, *, reward_fn: Callable | None = None,
                  **keys):
    """`directalign iterative-dpo`: rounds of sample -> score -> pairs -> offline DPO."""
    from directalign.training.iterative import iterative_dpo as run

    return run(make_config(IterativeDPOConfig, config, keys), reward_fn)


def grpo(config: GRPOConfig | str | dict | None = None, /, *, reward_fn: Callable | None = None, **keys):
    """`directalign grpo`: group-relative policy gradient on scored samples."""
    from directalign.training.grpo import grpo as run

    return run(make_config(GRPOConfig, config, keys), reward_fn)


def train_reward_model(config: RewardModelConfig | str | dict | None = None, /, *,
                       on_step: Callable | None = None, **keys):
    """`directalign reward-model train`: a Bradley-Terry reward model."""
    from directalign.reward_models.trainer import train_reward_model as run

    return run(make_config(RewardModelConfig, config, keys), on_step=on_step)


def load_data(data: Any, *, split: str | None = None, config: str | None = None):
    """Preference records of a file, folder, Hub id or in-memory rows, with the detected schema and the rows
    skipped (a LoadResult: .records, .schema, .num_rows, .skipped)."""
    from directalign.data.formats import load_records

    return load_records(as_data_name(data), split=split, config=config)


def inspect_data(data: Any, *, split: str | None = None, model: str = "smollm2-135m-instruct",
                 max_length: int = 1024, max_prompt_length: int = 512) -> dict:
    """`directalign data inspect`: schema, usable and skipped rows, token lengths and truncation."""
    from directalign.data.inspect import inspect_records
    from directalign.models.loading import load_tokenizer

    loaded = load_data(data, split=split)
    return inspect_records(loaded, load_tokenizer(model), max_length=max_length, max_prompt_length=max_prompt_length)


def diagnose_data(data: Any, *, split: str | None = None, duplicate_threshold: float = 0.8,
                  identical_threshold: float = 0.9) -> dict:
    """`directalign data diagnose`: length bias, duplicates, contradictions, near-identical pairs, diversity."""
    from directalign.quality.diagnostics import diagnose

    records = load_data(data, split=split).records
    return diagnose(records, None, duplicate_threshold, identical_threshold).to_dict()
