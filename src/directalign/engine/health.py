"""Run health: checks over the stream of logged metrics that say, while a run goes, whether DPO is working.

A falling loss does not show that alignment works: chosen and rejected log-probs can collapse together, margins
can grow without bound on small data, and the policy can drift far from its reference. `HealthMonitor` reads the
events the loop writes to metrics.jsonl (train and eval) and returns warnings, rate-limited per check, and at most
one stop request. It is pure (no model, no files), so each check is tested on crafted streams.

Checks (names as written in metrics.jsonl, {"step", "split": "health", "check", "message", "level"}):
- margin_stuck: the loss falls while |rewards/margins| stays near zero and both logps/chosen and logps/rejected
  fall: the loss is going down by pushing both responses down together, not by separating them.
- likelihood_displacement: logps/chosen falls steadily (Razin et al. 2024, "Unintentional Unalignment"); an NLL
  term on the chosen responses (RPO, Pang et al. 2024) holds it up.
- overfitting: training reward accuracy near 1 with margins still growing, or the DPO loss below 0.05, or a gap
  between training and held-out accuracy. IPO (Azar et al. 2023) bounds the margin, the usual fix below about
  2,000 pairs; a larger beta keeps the policy nearer the reference.
- kl_budget: the held-out KL to the reference (eval events' "kl", nats per sequence) above `kl_budget` stops the
  run; `kept_step` is then the last eval step within budget, whose weights the loop restores.
- length_drift: the mean generated length ("lengths/generated" in eval events) above `length_drift_factor`
  times its first measured value (verbosity), or below its first value divided by the factor (a policy that
  learned to stop early, often just before it degenerates).
- early_stopping: `early_stopping_metric` ("eval/implicit_accuracy", "train/loss"; a bare name is an eval
  metric) has not improved by more than the threshold for `early_stopping_patience` logged values.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from directalign.errors import ConfigError
from directalign.losses.registry import declared

IPO_PAIRS_RULE = 2000


@dataclass
class HealthConfig:
    """Thresholds of the checks. `window` counts train log events; trends are least-squares fits over it."""

    loss_type: str = "sigmoid"
    beta: float = 0.1
    rpo_alpha: float | None = None
    n_train_pairs: int | None = None
    window: int = 5
    cooldown_steps: int = 50  # a check warns at most once per this many steps
    margin_eps: float = 0.1  # |rewards/margins| below this is "near zero" (reward units, beta * log-ratio)
    min_loss_drop: float = 0.005  # relative fall of the loss over the window that counts as decreasing
    min_logp_drop: float = 1.0  # nats per sequence over the window: both log-probs "falling together"
    displacement_nats: float = 1.0  # nats per sequence over the window: chosen log-prob "falling steadily"
    steady_fraction: float = 0.75  # share of step-to-step changes that must go the trend's way
    overfit_accuracy: float = 0.99
    overfit_loss: float = 0.05
    overfit_margin_growth: float = 1.2  # margins at the window's end over its start, at full accuracy
    generalisation_gap: float = 0.2  # train reward accuracy minus held-out implicit accuracy
    kl_budget: float | None = None
    kl_warn_fraction: float = 0.8
    length_drift_factor: float = 1.5
    early_stopping_metric: str | None = None
    early_stopping_patience: int = 3
    early_stopping_mode: str | None = None  # "min" | "max"; None: min for names with "loss" or "kl", else max
    early_stopping_threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ConfigError(f"health_window must be at least 2; got {self.window}")
        if self.kl_budget is not None and self.kl_budget <= 0:
            raise ConfigError(f"kl_budget must be positive (nats per sequence); got {self.kl_budget}")
        if self.length_drift_factor <= 1:
            raise ConfigError(f"length_drift_factor must be above 1; got {self.length_drift_factor}")
        if self.early_stopping_mode not in (None, "min", "max"):
            raise ConfigError(f"early_stopping_mode must be min or max; got {self.early_stopping_mode!r}")
        if self.early_stopping_patience < 1:
            raise ConfigError(f"early_stopping_patience must be at least 1; got {self.early_stopping_patience}")


@dataclass
class HealthEvent:
    step: int
    check: str
    message: str
    level: str = "warning"  # "warning" | "stop"

    def to_metrics(self) -> dict:
        return {"step": self.step, "split": "health", "check": self.check, "message": self.message, "level": self.level}


def _reads(loss_type: str, key: str) -> bool:
    spec = declared().get(loss_type)
    return spec is not None and key in spec.keys


def _logistic(loss_type: str) -> bool:
    """A loss of -log sigmoid(margin) (it reads label_smoothing: DPO, robust DPO): below 0.05 means margins
    above ~3."""
    return _reads(loss_type, "label_smoothing")


def parse_metric_name(name: str) -> tuple[str, str]:
    """"eval/implicit_accuracy" -> ("eval", "implicit_accuracy"); a bare name is an eval metric."""
    split, _, rest = name.partition("/")
    if split in ("train", "eval") and rest:
        return split, rest
    return "eval", name


def trend(values: list[float]) -> tuple[float, float]:
    """(fitted change from first to last point, share of step-to-step changes with the fit's sign)."""
    y = np.asarray(values, dtype=float)
    slope = np.polyfit(np.arange(len(y)), y, 1)[0]
    diffs = np.diff(y)
    steady = float(np.mean(np.sign(diffs) == np.sign(slope))) if slope != 0 else 0.0
    return float(slope * (len(y) - 1)), steady


class HealthMonitor:
    """Feed it every logged event with `observe`; it returns the warnings to print and log now."""

    def __init__(self, config: HealthConfig):
        self.cfg = config
        self.train = deque(maxlen=config.window)
        self.last_fired: dict[str, int] = {}
        self.stop: HealthEvent | None = None
        self.kept_step: int | None = None  # last eval step within the KL budget
        self.kept_kl: float | None = None
        self.length_baseline: float | None = None
        self.best: float | None = None
        self.bad_evals = 0
        split, metric = parse_metric_name(config.early_stopping_metric or "")
        self.stop_split = split
        self.stop_metric = metric if config.early_stopping_metric else None
        self.stop_mode = config.early_stopping_mode or ("min" if "loss" in metric or metric == "kl" else "max")

    def state_dict(self) -> dict:
        """Everything the monitor has learnt from the events so far (JSON), for a checkpoint."""
        stop = None if self.stop is None else vars(self.stop)
        return {
            "train": list(self.train), "last_fired": self.last_fired, "stop": stop, "kept_step": self.kept_step,
            "kept_kl": self.kept_kl, "length_baseline": self.length_baseline, "best": self.best,
            "bad_evals": self.bad_evals,
        }

    def load_state_dict(self, state: dict) -> None:
        self.train.clear()
        self.train.extend(state["train"])
        self.last_fired = dict(state["last_fired"])
        self.stop = None if state["stop"] is None else HealthEvent(**state["stop"])
        self.kept_step, self.kept_kl = state["kept_step"], state["kept_kl"]
        self.length_baseline, self.best, self.bad_evals = state["length_baseline"], state["best"], state["bad_evals"]

    def observe(self, event: dict) -> list[HealthEvent]:
        fired: list[HealthEvent] = []
        split, step = event.get("split"), int(event.get("step", 0))
        if split == "train":
            self.train.append(event)
            if len(self.train) == self.train.maxlen:
                fired += self._margin_stuck(step) + self._displacement(step)
            fired += self._overfitting(step)
        elif split == "eval":
            fired += self._generalisation_gap(event, step) + self._kl_budget(event, step)
            fired += self._length_drift(event, step)
        if split == self.stop_split and self.stop_metric is not None:
            fired += self._early_stopping(event, step)
        return fired

    def _fire(self, step: int, check: str, message: str) -> list[HealthEvent]:
        last = self.last_fired.get(check)
        if last is not None and step - last < self.cfg.cooldown_steps:
            return []
        self.last_fired[check] = step
        return [HealthEvent(step, check, message)]

    def _request_stop(self, step: int, check: str, message: str) -> list[HealthEvent]:
        if self.stop is not None:
            return []
        self.stop = HealthEvent(step, check, message, level="stop")
        return [self.stop]

    def _series(self, key: str) -> list[float] | None:
        values = [e.get(key) for e in self.train]
        return None if any(v is None for v in values) else values

    def _margin_stuck(self, step: int) -> list[HealthEvent]:
        loss, margins = self._series("loss"), self._series("rewards/margins")
        chosen, rejected = self._series("logps/chosen"), self._series("logps/rejected")
        if None in (loss, margins, chosen, rejected):
            return []
        loss_change, chosen_change, rejected_change = trend(loss)[0], trend(chosen)[0], trend(rejected)[0]
        falling = loss_change < -self.cfg.min_loss_drop * abs(loss[0])
        stuck = max(abs(m) for m in margins) < self.cfg.margin_eps
        both_down = max(chosen_change, rejected_change) < -self.cfg.min_logp_drop
        if not (falling and stuck and both_down):
            return []
        return self._fire(
            step,
            "margin_stuck",
            f"the loss fell {-loss_change:.3g} over the last {len(loss)} logs but the reward margin stays near zero "
            f"(|margin| < {self.cfg.margin_eps}) while logps/chosen fell {-chosen_change:.3g} and logps/rejected "
            f"{-rejected_change:.3g} nats: both responses are losing likelihood together instead of separating. "
            "Check that chosen and rejected are not swapped or near-identical (directalign data quality), and "
            "try a lower learning_rate.",
        )

    def _displacement(self, step: int) -> list[HealthEvent]:
        chosen = self._series("logps/chosen")
        if chosen is None:
            return []
        change, steady = trend(chosen)
        if change > -self.cfg.displacement_nats or steady < self.cfg.steady_fraction:
            return []
        if not _reads(self.cfg.loss_type, "rpo_alpha"):
            advice = f"rpo_alpha does not apply to loss_type {self.cfg.loss_type}; lower the learning_rate."
        elif self.cfg.rpo_alpha:
            advice = f"rpo_alpha is {self.cfg.rpo_alpha}; raise it (e.g. --rpo-alpha {2 * self.cfg.rpo_alpha:g})."
        else:
            advice = (
                "Add an NLL term on the chosen responses (RPO): --rpo-alpha 1.0 on the command line, or "
                "rpo_alpha: 1.0 in the config."
            )
        return self._fire(
            step,
            "likelihood_displacement",
            f"logps/chosen fell steadily by {-change:.3g} nats per sequence over the last {len(chosen)} logs "
            f"(now {chosen[-1]:.4g}): the policy is making the preferred responses less likely too. {advice}",
        )

    def _overfit_advice(self) -> str:
        n, beta = self.cfg.n_train_pairs, self.cfg.beta
        ipo = "IPO (--loss-type ipo), which bounds the margin"
        larger_beta = f"a larger beta (now {beta:g}; e.g. --beta {min(2 * beta, 1.0):g})"
        if n is not None and n < IPO_PAIRS_RULE:
            return f"With {n} training pairs (under ~{IPO_PAIRS_RULE}), try {ipo}, or {larger_beta}."
        return f"Try {larger_beta}, or {ipo}."

    def _overfitting(self, step: int) -> list[HealthEvent]:
        last = self.train[-1]
        loss = last.get("loss")
        if _logistic(self.cfg.loss_type) and self.cfg.rpo_alpha is None and loss is not None:
            if loss < self.cfg.overfit_loss:
                return self._fire(
                    step,
                    "overfitting",
                    f"the DPO loss is {loss:.3g} (< {self.cfg.overfit_loss}): the training pairs are separated "
                    f"by margins of {last.get('rewards/margins', float('nan')):.3g} and keep being pushed apart. "
                    + self._overfit_advice(),
                )
        accuracy, margins = self._series("rewards/accuracies"), self._series("rewards/margins")
        if len(self.train) < self.train.maxlen or accuracy is None or margins is None:
            return []
        change, steady = trend(margins)
        growing = margins[0] > 0 and margins[-1] >= self.cfg.overfit_margin_growth * margins[0]
        if min(accuracy) >= self.cfg.overfit_accuracy and growing and steady >= self.cfg.steady_fraction:
            return self._fire(
                step,
                "overfitting",
                f"training reward accuracy is {min(accuracy):.2f} or more over the last {len(margins)} logs and the "
                f"margin keeps growing ({margins[0]:.3g} -> {margins[-1]:.3g}): nothing bounds it on this data. "
                + self._overfit_advice(),
            )
        return []

    def _generalisation_gap(self, event: dict, step: int) -> list[HealthEvent]:
        held = event.get("implicit_accuracy")
        train = self._series("rewards/accuracies")
        if event.get("tag") == "before" or held is None or not train:
            return []
        train_accuracy = float(np.mean(train))
        gap = train_accuracy - held
        if gap <= self.cfg.generalisation_gap:
            return []
        return self._fire(
            step,
            "overfitting",
            f"training reward accuracy {train_accuracy:.2f} vs held-out {held:.2f} (gap {gap:.2f} > "
            f"{self.cfg.generalisation_gap}): the policy is fitting the training pairs, not the preference. "
            + self._overfit_advice(),
        )

    def _kl_budget(self, event: dict, step: int) -> list[HealthEvent]:
        kl, budget = event.get("kl"), self.cfg.kl_budget
        if kl is None or budget is None:
            return []
        if kl <= budget:
            self.kept_step, self.kept_kl = step, kl
            if kl > self.cfg.kl_warn_fraction * budget:
                return self._fire(
                    step, "kl_budget", f"held-out KL to the reference is {kl:.3g} nats, near kl_budget {budget:g}"
                )
            return []
        kept = (
            f"the final outputs are the weights of step {self.kept_step} (KL {self.kept_kl:.3g}), the last eval "
            "within budget"
            if self.kept_step is not None
            else "no eval within budget was seen since the run (re)started, so the current weights are kept"
        )
        return self._request_stop(
            step,
            "kl_budget",
            f"held-out KL to the reference is {kl:.3g} nats > kl_budget {budget:g}: stopping; {kept}. A larger "
            "beta or a lower learning_rate moves the policy less per step.",
        )

    def _length_drift(self, event: dict, step: int) -> list[HealthEvent]:
        length = event.get("lengths/generated")
        if length is None:
            return []
        if self.length_baseline is None:
            self.length_baseline = length
            return []
        factor, ratio = self.cfg.length_drift_factor, length / max(self.length_baseline, 1e-9)
        if ratio > factor:
            advice = (
                f"(> length_drift_factor {factor:g}): the policy may be buying reward with length. Compare "
                "lengths/chosen and lengths/rejected in the data; SimPO's or IPO's length normalisation, or a larger "
                "beta, counter it."
            )
        elif ratio < 1 / factor:
            advice = (
                f"(< 1/length_drift_factor {factor:g}): the policy has learned to stop early; read the samples "
                "(sample_generations) for truncated or empty answers. A larger beta or a lower learning_rate "
                "keeps it nearer the reference."
            )
        else:
            return []
        return self._fire(
            step,
            "length_drift",
            f"generated responses average {length:.1f} tokens, {ratio:.2f}x the {self.length_baseline:.1f} at the "
            f"start {advice}",
        )

    def _early_stopping(self, event: dict, step: int) -> list[HealthEvent]:
        value = event.get(self.stop_metric)
        if value is None:
            return []
        sign = 1.0 if self.stop_mode == "max" else -1.0
        if self.best is None or sign * (value - self.best) > self.cfg.early_stopping_threshold:
            self.best, self.bad_evals = value, 0
            return []
        self.bad_evals += 1
        patience = self.cfg.early_stopping_patience
        if self.bad_evals < patience:
            return []
        return self._request_stop(
            step,
            "early_stopping",
            f"{self.stop_split}/{self.stop_metric} has not improved on its best {self.best:.4g} ({self.stop_mode}) "
            f"for {patience} logged values (now {value:.4g}): stopping.",
        )


def health_config(cfg, n_train_pairs: int | None = None) -> HealthConfig:
    """The monitor's settings from a command config (keys a command lacks keep the monitor's defaults)."""
    values = {
        "loss_type": getattr(cfg, "loss_type", "grpo" if getattr(cfg, "command", "") == "grpo" else "sigmoid"),
        "beta": getattr(cfg, "beta", 0.1),
        "rpo_alpha": getattr(cfg, "rpo_alpha", None),
        "n_train_pairs": n_train_pairs,
        "window": getattr(cfg, "health_window", 5),
        "cooldown_steps": getattr(cfg, "health_cooldown_steps", 50),
        "kl_budget": getattr(cfg, "kl_budget", None),
        "length_drift_factor": getattr(cfg, "length_drift_factor", 1.5),
        "early_stopping_metric": cfg.early_stopping_metric,
        "early_stopping_patience": cfg.early_stopping_patience,
        "early_stopping_mode": cfg.early_stopping_mode,
        "early_stopping_threshold": cfg.early_stopping_threshold,
    }
    return HealthConfig(**values)
