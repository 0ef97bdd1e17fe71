"""Hyperparameter sweeps with Optuna: grid or TPE over beta, learning rate, epochs, warmup, label smoothing,
loss type and LoRA rank, ranked by a held-out metric (ties by the lower held-out KL), resumable from a SQLite
file in the sweep folder.

Default ranges are the usual good ones for DPO: beta 0.1-0.5; learning rate 1e-7 to 5e-6 for full fine-tuning
and 1e-5 to 5e-4 with LoRA (log scale); 1-3 epochs; warmup ratio 0.05-0.15; label smoothing 0-0.1 (cDPO);
loss type sigmoid or ipo; LoRA rank 8, 16 or 32. A grid takes `grid_points` values of each range (geometric
for a log range).

Every trial is a normal training run in SWEEP/trial-NNN with precompute_ref_log_probs on, so the reference
log-probs are computed by the first trial and read from the on-disk cache (models.reference, keyed by the base
weights, the token ids and the lengths) by every later one: the sweep never varies what the key depends on.
A trial left RUNNING by a killed sweep is marked failed and its parameters queued again when the sweep resumes.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from directalign.config import load_config
from directalign.errors import ConfigError, TrainingError
from directalign.progress import is_main_process
from directalign.training.dpo import train

STUDY_NAME = "directalign-sweep"
METRIC_MIN = ("kl", "loss", "perplexity")  # metrics where lower is better


@dataclass
class Param:
    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: list | None = None

    def grid(self, points: int) -> list:
        if self.choices is not None:
            return list(self.choices)
        if self.integer:
            return list(range(int(self.low), int(self.high) + 1))
        if points == 1:
            return [self.low]
        if self.log:
            ratio = (self.high / self.low) ** (1 / (points - 1))
            return [float(f"{self.low * ratio**i:.3g}") for i in range(points)]
        return [round(self.low + (self.high - self.low) * i / (points - 1), 10) for i in range(points)]

    def suggest(self, trial, grid: bool, points: int):
        if grid or self.choices is not None:
            return trial.suggest_categorical(self.name, self.grid(points))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high))
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


def default_param(name: str, use_peft: bool) -> Param:
    defaults = {
        "beta": Param("beta", 0.1, 0.5),
        "learning_rate": Param("learning_rate", 1e-5, 5e-4, log=True)
        if use_peft
        else Param("learning_rate", 1e-7, 5e-6, log=True),
        "num_train_epochs": Param("num_train_epochs", 1, 3, integer=True),
        "warmup_ratio": Param("warmup_ratio", 0.05, 0.15),
        "label_smoothing": Param("label_smoothing", 0.0, 0.1),
        "loss_type": Param("loss_type", choices=["sigmoid", "ipo"]),
        "lora_r": Param("lora_r", choices=[8, 16, 32]),
    }
    if name not in defaults:
        raise ConfigError(f"no default range for {name!r}: give one as {name}=LOW:HIGH or {name}=A,B,C "
                          f"(defaults exist for {', '.join(defaults)})")
    return defaults[name]


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def parse_param(spec: str, use_peft: bool = True) -> Param:
    """"beta" (default range), "beta=0.1:0.5" (a range), "loss_type=sigmoid,ipo" or "beta=0.1,0.3" (values)."""
    name, _, values = spec.partition("=")
    name = name.strip().replace("-", "_")
    if not values:
        return default_param(name, use_peft)
    if ":" in values:
        low, high = (_number(v) for v in values.split(":", 1))
        if not all(isinstance(v, int | float) for v in (low, high)) or low >= high:
            raise ConfigError(f"sweep parameter {spec!r}: a range is LOW:HIGH with numbers, LOW < HIGH")
        log = name == "learning_rate" or (low > 0 and high / low >= 100)
        return Param(name, low, high, log=log, integer=isinstance(low, int) and isinstance(high, int))
    return Param(name, choices=[_number(v.strip()) for v in values.split(",") if v.strip()])


@dataclass
class SweepSettings:
    metric: str = "implicit_accuracy"
    direction: str | None = None  # maximize | minimize; None: minimize kl/loss/perplexity, else maximize
    sampler: str = "tpe"  # tpe | grid
    n_trials: int | None = None  # None: the grid's size (grid), 8 (tpe)
    grid_points: int = 3
    seed: int = 0

    def resolved_direction(self) -> str:
        if self.direction is not None:
            return self.direction
        return "minimize" if any(m in self.metric for m in METRIC_MIN) else "maximize"


def make_sampler(settings: SweepSettings, params: list[Param]):
    import optuna

    if settings.sampler == "grid":
        return optuna.samplers.GridSampler({p.name: p.grid(settings.grid_points) for p in params}, seed=settings.seed)
    if settings.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=settings.seed)
    raise ConfigError(f"sampler must be tpe or grid; got {settings.sampler!r}")


def _check_settings(sweep_dir: Path, record: dict) -> None:
    """A resumed sweep must be the same sweep: Optuna's stored trials only make sense for the same space."""
    path = sweep_dir / "sweep.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored != record:
            changed = sorted(k for k in record if stored.get(k) != record.get(k))
            raise ConfigError(
                f"{sweep_dir} holds a sweep with different {', '.join(changed)}; resume it with the same "
                "settings, or use another folder"
            )
    else:
        path.write_text(json.dumps(record, indent=2))


def _requeue_stale(study) -> None:
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params)


def run_sweep(
    sweep_dir: str | Path,
    params: list[Param],
    settings: SweepSettings,
    config_path: str | None = None,
    overrides: dict | None = None,
    log=print,
) -> dict:
    """Run (or resume) the sweep until n_trials trials are complete; return the results (also results.json)."""
    try:
        import optuna
    except ImportError as err:
        raise ConfigError("sweeps need Optuna: pip install 'directalign[sweep]' (or pip install optuna)") from err

    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    overrides = {"eval_before_training": False, **(overrides or {})}
    load_config("train", config_path, overrides)  # fail on a bad base config before any trial
    if not params:
        raise ConfigError("a sweep needs at least one parameter (--param beta, --param learning_rate=1e-5:1e-4, ...)")
    direction = settings.resolved_direction()
    _check_settings(sweep_dir, {"params": [asdict(p) for p in params], "metric": settings.metric,
                                "direction": direction, "sampler": settings.sampler, "config": config_path,
                                "overrides": {k: str(v) for k, v in overrides.items()}})
    storage = f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, direction=direction,
                                sampler=make_sampler(settings, params), load_if_exists=True)
    _requeue_stale(study)
    grid = settings.sampler == "grid"
    grid_size = math.prod(len(p.grid(settings.grid_points)) for p in params)
    target = settings.n_trials or (grid_size if grid else 8)

    def objective(trial) -> float:
        values = {p.name: p.suggest(trial, grid, settings.grid_points) for p in params}
        out = sweep_dir / f"trial-{trial.number:03d}"
        trial.set_user_attr("output_dir", str(out))
        # A trial re-queued after a kill resumes its run; one that had finished (killed before Optuna heard)
        # starts over.
        redo = (out / "finished.json").is_file()
        cfg = load_config("train", config_path, {**overrides, **values, "output_dir": str(out),
                                                 "overwrite_output_dir": redo})
        cfg.precompute_ref_log_probs = cfg.needs_reference and cfg.loss.data != "unpaired"
        log(f"trial {trial.number}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
        result = train(cfg)
        after = result.eval_after or {}
        if settings.metric not in after:
            raise ConfigError(f"the held-out eval has no {settings.metric!r}; it has {', '.join(sorted(after))}")
        trial.set_user_attr("steps", result.steps)
        trial.set_user_attr("stop_reason", result.stop_reason)
        trial.set_user_attr("eval", {k: v for k, v in after.items() if isinstance(v, int | float)})
        trial.set_user_attr("beta", cfg.beta)
        trial.set_user_attr("loss_type", cfg.loss_type)
        kl = after.get("kl", float("nan"))
        log(f"trial {trial.number}: {settings.metric} {after[settings.metric]:.4g}, kl {kl:.3g}")
        return after[settings.metric]

    from optuna.trial import TrialState

    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    remaining = max(target - complete, 0)
    if remaining:
        log(f"sweep {sweep_dir}: {complete} of {target} trials complete; running {remaining} more")
        # A run that fails on its own (a non-finite loss) fails its trial; a wrong config stops the sweep.
        study.optimize(objective, n_trials=remaining, catch=(TrainingError,), show_progress_bar=is_main_process())
    results = collect_results(study, settings.metric, direction, settings.sampler, storage)
    (sweep_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results


def collect_results(study, metric: str, direction: str, sampler: str, storage: str) -> dict:
    trials = []
    for t in study.get_trials(deepcopy=False):
        evals = t.user_attrs.get("eval", {})
        trials.append({
            "number": t.number,
            "state": t.state.name,
            "params": t.params,
            "value": t.value,
            "kl": evals.get("kl"),
            "reward": evals.get("reward"),
            "beta": t.user_attrs.get("beta", t.params.get("beta")),
            "loss_type": t.user_attrs.get("loss_type", t.params.get("loss_type")),
            "steps": t.user_attrs.get("steps"),
            "stop_reason": t.user_attrs.get("stop_reason"),
            "output_dir": t.user_attrs.get("output_dir"),
            "eval": evals,
            "rank": None,
        })
    done = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
    # Equal metrics rank by the KL to the reference: the same result for less drift is the better trial.
    sign = -1.0 if direction == "maximize" else 1.0
    done.sort(key=lambda t: (sign * t["value"], t["kl"] if t["kl"] is not None else math.inf))
    for rank, t in enumerate(done, 1):
        t["rank"] = rank
    return {
        "metric": metric,
        "direction": direction,
        "sampler": sampler,
        "storage": storage,
        "best_trial": done[0]["number"] if done else None,
        "trials": trials,
    }


def format_results(results: dict) -> str:
    """The results as an aligned text table, best first."""
    metric, trials = results["metric"], results["trials"]
    names = sorted({k for t in trials for k in t["params"]})
    header = ["rank", "trial", "state", metric, "kl", *names]
    rows = [header]
    for t in sorted(trials, key=lambda t: (t["rank"] is None, t["rank"] or 0, t["number"])):
        cells = [t["rank"], t["number"], t["state"], t["value"], t["kl"], *[t["params"].get(k) for k in names]]
        rows.append(["-" if c is None else f"{c:.4g}" if isinstance(c, float) else str(c) for c in cells])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    best = results["best_trial"]
    lines.append(f"best: trial {best} ({metric} {results['direction']})" if best is not None else "no trial completed")
    return "\n".join(lines)
