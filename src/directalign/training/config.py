"""Training configuration: one dataclass, loaded from YAML and `--key value` overrides.

Keys follow Hugging Face TrainingArguments / TRL DPOConfig names wherever one exists, so that a TRL user's
config reads the same here. Unknown keys are an error that suggests the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from directalign.errors import ConfigError
from directalign.models.loading import DEFAULT_MODEL
from directalign.models.logprobs import check_attention
from directalign.training.health import health_config

LOSS_TYPES = ("sigmoid", "robust", "ipo", "hinge", "simpo", "orpo", "cpo", "kto")
REFERENCE_FREE = ("simpo", "orpo", "cpo")


@dataclass
class TrainConfig:
    # what to train, on what
    model: str = DEFAULT_MODEL
    data: str | None = None  # None: the built-in verifiable preference set
    eval_data: str | None = None
    eval_split: float = 0.1  # held-out fraction of `data` when eval_data is not given
    builtin_train_pairs: int = 192
    builtin_eval_pairs: int = 64
    output_dir: str = "runs/dpo"
    # loss
    loss_type: str = "sigmoid"
    beta: float = 0.1
    label_smoothing: float = 0.0
    rpo_alpha: float | None = None  # RPO: add rpo_alpha * chosen per-token NLL to the DPO loss
    simpo_gamma: float = 0.5
    orpo_lambda: float = 0.1
    desirable_weight: float = 1.0  # KTO lambda_D
    undesirable_weight: float | str = 1.0  # KTO lambda_U, or "auto": balance the class counts (kto_auto_weights)
    # tokenisation
    max_length: int = 1024
    max_prompt_length: int = 512
    use_chat_template: bool = True
    # optimisation
    learning_rate: float = 5e-5
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 4
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_tokens_per_batch: int | None = None  # micro-batches of up to this many tokens instead of batch_size records
    train_sampling_strategy: str = "random"  # random (a seeded permutation per epoch) | sequential (file order)
    warmup_ratio: float = 0.1
    warmup_steps: int = 0
    lr_scheduler_type: str = "linear"
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0
    seed: int = 42
    # fine-tuning mode
    use_peft: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    # compute
    layout: str = "shared"  # padded | shared | packed (see directalign.data.batching)
    max_tokens_per_row: int | None = None  # packed layout: token budget of one row
    logits_chunk_size: int = 1024
    bf16: bool = False  # bf16 autocast (fp32 weights); the LM head's log-softmax stays fp32
    attn_implementation: str = "sdpa"  # sdpa | eager | flash_attention_2 (padded layout only) | ...
    precompute_ref_log_probs: bool = False  # reference log-probs once before training, cached on disk
    # logging, evaluation, checkpoints
    logging_steps: int = 5
    eval_steps: int | None = None
    eval_before_training: bool = True
    save_steps: int = 50
    save_total_limit: int = 2
    merge: bool = False  # also write a merged model that plain from_pretrained loads
    resume: bool = True  # continue from the last checkpoint in output_dir when there is one
    # run health (directalign.training.health, training.guard): checks, held-out KL, stops, sample generations
    health_checks: bool = True  # false: no warnings, and no kl_budget or early stopping
    health_window: int = 5  # train log events a trend is judged over
    health_cooldown_steps: int = 50  # each check warns at most once per this many steps
    kl_prompts: int = 8  # held-out prompts sampled at each eval for the KL to the reference (0: off)
    kl_samples: int = 2  # samples per prompt
    eval_max_new_tokens: int = 48  # for the KL samples and sample_generations
    kl_budget: float | None = None  # nats per sequence; exceeding it stops the run, keeping the last eval within it
    length_drift_factor: float = 1.5  # warn when generated length exceeds this times its first value
    early_stopping_metric: str | None = None  # "eval/implicit_accuracy", "train/loss"; bare names are eval metrics
    early_stopping_patience: int = 3
    early_stopping_mode: str | None = None  # min | max; default min for losses and kl, else max
    early_stopping_threshold: float = 0.0
    sample_generations: int = 0  # held-out prompts answered before and after training, in generations.jsonl

    @property
    def needs_reference(self) -> bool:
        return self.loss_type not in REFERENCE_FREE

    @property
    def allows_zero_beta(self) -> bool:
        """Whether beta = 0 means something (GRPO without a KL penalty); for every DPO-family loss it does not."""
        return False

    def validate(self) -> TrainConfig:
        if self.loss_type not in LOSS_TYPES:
            raise ConfigError(f"loss_type must be one of {', '.join(LOSS_TYPES)}; got {self.loss_type!r}")
        if self.layout not in ("padded", "shared", "packed"):
            raise ConfigError(f"layout must be padded, shared or packed; got {self.layout!r}")
        if self.beta < 0 or (self.beta == 0 and not self.allows_zero_beta):
            raise ConfigError(f"beta must be positive; got {self.beta}")
        if self.loss_type == "kto":
            _validate_kto(self)
        if not 0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"label_smoothing must be in [0, 0.5); got {self.label_smoothing}")
        if self.max_prompt_length >= self.max_length:
            raise ConfigError("max_prompt_length must be smaller than max_length")
        if self.per_device_train_batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ConfigError(
                "per_device_train_batch_size and gradient_accumulation_steps must be at least 1"
            )
        if self.max_tokens_per_batch is not None and self.max_tokens_per_batch < 1:
            raise ConfigError(f"max_tokens_per_batch must be at least 1; got {self.max_tokens_per_batch}")
        if self.train_sampling_strategy not in ("random", "sequential"):
            raise ConfigError(
                f"train_sampling_strategy must be random or sequential; got {self.train_sampling_strategy!r}"
            )
        check_attention(self.attn_implementation, self.layout)
        if not 0 <= self.eval_split < 1:
            raise ConfigError(f"eval_split must be in [0, 1); got {self.eval_split}")
        health_config(self)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _validate_kto(cfg: TrainConfig) -> None:
    if cfg.desirable_weight <= 0:
        raise ConfigError(f"desirable_weight must be positive; got {cfg.desirable_weight}")
    weight = cfg.undesirable_weight
    if weight != "auto" and (isinstance(weight, str) or weight <= 0):
        raise ConfigError(f"undesirable_weight must be a positive number or auto; got {weight!r}")
    if cfg.precompute_ref_log_probs:
        raise ConfigError(
            "loss_type kto scores new mismatched pairs for its KL estimate every step, which precomputed "
            "reference log-probs cannot cover; set precompute_ref_log_probs false"
        )


def _suggest(key: str, fields) -> str:
    close = difflib.get_close_matches(key, fields, n=2, cutoff=0.5)
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ""


def _convert(name: str, value: object, config_class: type = TrainConfig) -> object:
    """Turn a YAML or command-line value into the field's type; for a union, the first type that reads it."""
    hint = typing.get_type_hints(config_class)[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    bases = [a for a in args if a is not type(None)] if isinstance(hint, types.UnionType) else [hint]
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{name} cannot be empty")
    for base in bases[:-1]:
        try:
            return _as_type(name, value, base)
        except ConfigError:
            continue
    return _as_type(name, value, bases[-1])


def _as_type(name: str, value: object, base: type) -> object:
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError(value)
        if typing.get_origin(base) is list:
            return [s.strip() for s in value.split(",")] if isinstance(value, str) else list(value)
        if base is int and isinstance(value, str | float):
            number = float(value)  # accepts 1e3 and 100.0, refuses 2.5 below
            if not number.is_integer():
                raise ValueError(value)
            return int(number)
        return base(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name}: cannot read {value!r} as {getattr(base, '__name__', base)}") from err


def apply_overrides(config: TrainConfig, values: dict, origin: str) -> TrainConfig:
    fields = [f.name for f in dataclasses.fields(config)]
    for raw_key, value in values.items():
        key = raw_key.replace("-", "_")
        if key not in fields:
            raise ConfigError(f"{origin}: unknown key {raw_key!r}{_suggest(key, fields)}")
        setattr(config, key, _convert(key, value, type(config)))
    return config


def load_config(
    path: str | Path | None = None, overrides: dict | None = None, config_class: type = TrainConfig
) -> TrainConfig:
    """A validated config of config_class (TrainConfig or a subclass): defaults, then the YAML file, then
    the overrides."""
    config = config_class()
    if path is not None:
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{path}: cannot read the config: {err}") from err
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: a config is a mapping of key: value, got {type(values).__name__}")
        apply_overrides(config, values, str(path))
    apply_overrides(config, overrides or {}, "command line")
    return config.validate()


def parse_cli_overrides(tokens: list[str]) -> dict:
    """`--key value`, `--key=value` and bare `--flag` (true) into a dict; dash and underscore spellings alike."""
    values: dict = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--"):
            raise ConfigError(f"command line: expected --key value, got {token!r}")
        key = token[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            value = tokens[i + 1]
            i += 2
        else:
            value, i = "true", i + 1
        values[key.replace("-", "_")] = value
    return values
