"""Each command's config: the key groups it honours, its own defaults, and the checks across groups.

    train           offline DPO family and KTO on preference data
    online-dpo      sample, score, best-vs-worst pairs, one DPO-family step, every step
    iterative-dpo   rounds of sample -> score -> pairs file -> offline DPO
    grpo            group-relative policy gradient on scored samples
    reward-model    a Bradley-Terry reward model on preference pairs

A loss key the chosen loss does not read (simpo_gamma with loss_type sigmoid, label_smoothing with ipo) is an
error when it is set to anything but its default: the loss registry says which keys each loss reads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from directalign.config.groups import (
    EarlyStoppingKeys,
    ForwardKeys,
    GRPOKeys,
    HealthKeys,
    HeldoutKLKeys,
    HubKeys,
    IterativeKeys,
    JudgeKeys,
    KTOKeys,
    LayoutKeys,
    LoraKeys,
    ModelKeys,
    OptimKeys,
    PairLossKeys,
    PreferenceDataKeys,
    PromptKeys,
    ReferenceKeys,
    RewardModelKeys,
    RunKeys,
    SampleGenerationKeys,
    SamplingKeys,
    SaveKeys,
    TrackerKeys,
)
from directalign.config.keys import check_ranges, default_of
from directalign.errors import ConfigError
from directalign.losses.registry import declared, loss_spec
from directalign.models.kernels import check_attention


def _default(group: type, name: str, value: object) -> dataclasses.Field:
    """The key `name` of `group` with another default for one command (same help and range)."""
    original = group.__dataclass_fields__[name]
    if isinstance(value, list):
        return dataclasses.field(default_factory=lambda: list(value), metadata=original.metadata)
    return dataclasses.field(default=value, metadata=original.metadata)


class CommandConfig:
    """What every command's config does: validate itself, say which groups it is made of, serialise."""

    command: ClassVar[str]

    @classmethod
    def groups(cls) -> list[type]:
        """The key groups of this command, in the order --help lists them."""
        return [base for base in cls.__mro__[1:] if dataclasses.is_dataclass(base) and base.__name__.endswith("Keys")]

    def validate(self):
        check_ranges(self, self.command)
        for cls in reversed(type(self).__mro__):
            own = cls.__dict__.get("check")
            if own is not None:
                own(self)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def changed_from_default(self, names) -> list[str]:
        fields = {f.name: f for f in dataclasses.fields(self)}
        return [n for n in names if n in fields and getattr(self, n) != default_of(fields[n])]


def _check_loss(cfg, allowed: tuple[str, ...], loss_groups: tuple[type, ...]) -> None:
    """The loss exists for this command, and no loss key it does not read is set."""
    spec = loss_spec(cfg.loss_type, allowed, where=f"{cfg.command}: loss_type")
    loss_keys = [name for group in loss_groups for name in group.__dataclass_fields__]
    unread = [k for k in cfg.changed_from_default(loss_keys) if k not in spec.keys and k != "loss_type"]
    if unread:
        readers = {k: [s.name for s in declared().values() if k in s.keys] for k in unread}
        detail = "; ".join(f"{k} is read by {', '.join(r) or 'no loss'}" for k, r in readers.items())
        raise ConfigError(f"{cfg.command}: loss_type {cfg.loss_type} does not read {', '.join(unread)} ({detail})")


def _check_judge(cfg) -> None:
    """Confidence-based label smoothing needs a loss that reads label_smoothing, and replaces its fixed value."""
    if not cfg.judge_label_smoothing:
        return
    if "label_smoothing" not in loss_spec(cfg.loss_type, ("paired",)).keys:
        raise ConfigError(f"{cfg.command}: judge_label_smoothing needs a loss that reads label_smoothing (sigmoid, "
                          f"robust); loss_type {cfg.loss_type} does not")
    if cfg.label_smoothing:
        raise ConfigError(f"{cfg.command}: judge_label_smoothing sets each pair's label_smoothing from the judge; "
                          "leave label_smoothing at 0")


def _check_attention(cfg) -> None:
    check_attention(cfg.attn_implementation, cfg.layout)


def _check_health(cfg, evals_each_round: bool = False) -> None:
    """kl_budget and early stopping need the evals they are judged at (an iterative run evaluates every round)."""
    if getattr(cfg, "kl_budget", None) is not None:
        if not cfg.needs_reference and cfg.command == "train":
            raise ConfigError(f"{cfg.command}: kl_budget needs a reference model; loss_type {cfg.loss_type} has none")
        if not (cfg.eval_steps or evals_each_round) or cfg.kl_prompts < 1:
            raise ConfigError(f"{cfg.command}: kl_budget needs eval_steps and kl_prompts >= 1 (KL is measured at eval)")
    if evals_each_round:
        return
    metric = cfg.early_stopping_metric
    if metric and not metric.startswith("train/") and not cfg.eval_steps:
        raise ConfigError(
            f"{cfg.command}: early_stopping_metric {metric!r} is a held-out metric: set eval_steps, or name a "
            "training metric as train/<name> (e.g. train/loss)"
        )


@dataclass
class TrainConfig(
    CommandConfig,
    ModelKeys,
    LoraKeys,
    LayoutKeys,
    ForwardKeys,
    PreferenceDataKeys,
    PairLossKeys,
    KTOKeys,
    ReferenceKeys,
    OptimKeys,
    HealthKeys,
    EarlyStoppingKeys,
    HeldoutKLKeys,
    SampleGenerationKeys,
    SaveKeys,
    TrackerKeys,
    HubKeys,
    RunKeys,
):
    """`directalign train`: the DPO family and KTO on preference data."""

    command: ClassVar[str] = "train"

    @property
    def loss(self):
        return loss_spec(self.loss_type, ("paired", "unpaired"))

    @property
    def needs_reference(self) -> bool:
        return self.loss.reference

    def check(self) -> None:
        _check_loss(self, ("paired", "unpaired"), (PairLossKeys, KTOKeys))
        if self.precompute_ref_log_probs and not self.needs_reference:
            raise ConfigError(f"train: precompute_ref_log_probs needs a reference; loss_type {self.loss_type} has none")
        if self.precompute_ref_log_probs and self.loss.data == "unpaired":
            raise ConfigError(
                "train: loss_type kto scores new mismatched pairs for its KL estimate every step, which precomputed "
                "reference log-probs cannot cover; set precompute_ref_log_probs false"
            )
        _check_attention(self)
        _check_health(self)


class OnPolicyConfig(CommandConfig):
    """What the on-policy commands share: prompts, sampling, and a held-out reward eval."""

    @property
    def needs_reference(self) -> bool:
        return True

    def check(self) -> None:
        _check_attention(self)
        _check_health(self, evals_each_round=self.command == "iterative-dpo")


@dataclass
class OnlineDPOConfig(
    OnPolicyConfig,
    ModelKeys,
    LoraKeys,
    LayoutKeys,
    ForwardKeys,
    PromptKeys,
    SamplingKeys,
    JudgeKeys,
    PairLossKeys,
    OptimKeys,
    HealthKeys,
    EarlyStoppingKeys,
    HeldoutKLKeys,
    SaveKeys,
    TrackerKeys,
    HubKeys,
    RunKeys,
):
    """`directalign online-dpo`: per_device_train_batch_size is prompts per step."""

    command: ClassVar[str] = "online-dpo"
    output_dir: str = _default(RunKeys, "output_dir", "runs/online-dpo")

    @property
    def needs_reference(self) -> bool:
        return loss_spec(self.loss_type, ("paired",)).reference

    def check(self) -> None:
        _check_loss(self, ("paired",), (PairLossKeys,))
        _check_judge(self)


@dataclass
class IterativeDPOConfig(
    OnPolicyConfig,
    ModelKeys,
    LoraKeys,
    LayoutKeys,
    ForwardKeys,
    PromptKeys,
    SamplingKeys,
    IterativeKeys,
    JudgeKeys,
    PairLossKeys,
    OptimKeys,
    HealthKeys,
    EarlyStoppingKeys,
    HeldoutKLKeys,
    TrackerKeys,
    HubKeys,
    RunKeys,
):
    """`directalign iterative-dpo`: per_device_train_batch_size is pairs per step; each round trains
    num_train_epochs (or max_steps) over its pairs."""

    command: ClassVar[str] = "iterative-dpo"
    output_dir: str = _default(RunKeys, "output_dir", "runs/iterative-dpo")

    @property
    def needs_reference(self) -> bool:
        return loss_spec(self.loss_type, ("paired",)).reference

    def check(self) -> None:
        _check_loss(self, ("paired",), (PairLossKeys,))
        _check_judge(self)


@dataclass
class GRPOConfig(
    OnPolicyConfig,
    ModelKeys,
    LoraKeys,
    LayoutKeys,
    ForwardKeys,
    PromptKeys,
    SamplingKeys,
    GRPOKeys,
    OptimKeys,
    HealthKeys,
    EarlyStoppingKeys,
    HeldoutKLKeys,
    SaveKeys,
    TrackerKeys,
    HubKeys,
    RunKeys,
):
    """`directalign grpo`: per_device_train_batch_size is prompts per step, each with num_generations samples."""

    command: ClassVar[str] = "grpo"
    output_dir: str = _default(RunKeys, "output_dir", "runs/grpo")

    @property
    def needs_reference(self) -> bool:
        return self.beta > 0


@dataclass
class RewardModelConfig(
    CommandConfig,
    ModelKeys,
    LoraKeys,
    RewardModelKeys,
    PreferenceDataKeys,
    LayoutKeys,
    OptimKeys,
    EarlyStoppingKeys,
    TrackerKeys,
    HubKeys,
    RunKeys,
):
    """`directalign reward-model train`: a Bradley-Terry reward model (a one-output score head)."""

    command: ClassVar[str] = "reward-model train"
    output_dir: str = _default(RunKeys, "output_dir", "runs/reward-model")
    learning_rate: float = _default(OptimKeys, "learning_rate", 1e-4)
    per_device_train_batch_size: int = _default(OptimKeys, "per_device_train_batch_size", 8)
    per_device_eval_batch_size: int = _default(PreferenceDataKeys, "per_device_eval_batch_size", 16)
    max_length: int = _default(PreferenceDataKeys, "max_length", 512)
    max_prompt_length: int = _default(PreferenceDataKeys, "max_prompt_length", 384)

    @property
    def needs_reference(self) -> bool:
        return False

    def check(self) -> None:
        _check_health(self)


COMMANDS: dict[str, type] = {
    cls.command: cls for cls in (TrainConfig, OnlineDPOConfig, IterativeDPOConfig, GRPOConfig, RewardModelConfig)
}
