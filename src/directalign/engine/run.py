"""Opening a run: the accelerator and seeds, the process count checked, the output folder owned, the metrics
file and its trackers started, a warning for bf16 on a CPU that emulates it, the start-up summary, and the
finish: finished.json, then the push to the Hub when asked. Every trainer begins with `with open_run(cfg) as run:`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from directalign import __version__
from directalign.engine import zero
from directalign.engine.distributed import Dist, check_process_count, make_accelerator, match_threads_to_cores
from directalign.engine.folder import RunFolder
from directalign.engine.hub import check_push, push_outputs
from directalign.engine.memory import return_freed_buffers
from directalign.engine.metrics import METRICS_FILE, MetricsWriter
from directalign.engine.sharding import is_sharded, numel
from directalign.engine.trackers import start_trackers
from directalign.errors import ConfigError
from directalign.models.cpu import bf16_warning


@dataclass
class Run:
    cfg: object
    accelerator: object
    dist: Dist
    folder: RunFolder
    metrics: MetricsWriter

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def out(self) -> Path:
        return self.folder.path

    @property
    def resuming(self) -> bool:
        return self.folder.state == "resume"

    def log(self, text: str) -> None:
        """A line on the main process's console that does not break its progress bars."""
        if self.dist.is_main:
            tqdm.write(text)

    def summary(self, model: torch.nn.Module, data: str, plan: str) -> None:
        """The start-up summary: what runs where, in what precision, on what, for how long."""
        trainable = sum(numel(p) for p in model.parameters() if p.requires_grad)
        total = sum(numel(p) for p in model.parameters())
        device = self.device.type
        if device == "cuda":
            device = f"cuda ({torch.cuda.get_device_name()})"
        sharding = ", FSDP2" if is_sharded(model) else f", {self.dist.sharding}" if self.dist.sharding else ""
        backend = f" ({torch.distributed.get_backend()}{sharding})" if self.dist.active else ""
        self.log(
            f"{self.cfg.command}: directalign {__version__} on {device}, {self.dist.world} process"
            f"{'es' if self.dist.world > 1 else ''}{backend}, {precision(self.cfg)}; "
            f"{trainable / 1e6:.2f}M trainable of {total / 1e6:.1f}M parameters; {data}; {plan}"
        )


    def finish(self, steps: int, outputs: dict[str, str]) -> None:
        """On the main process, after the final save: finished.json, then the push to the Hub (push_to_hub)."""
        self.folder.finish(steps, outputs)
        if getattr(self.cfg, "push_to_hub", False):
            for line in push_outputs(self.cfg, self.out, outputs):
                self.log(line)


class RunOutputs:
    """What every trainer's result offers beside its fields (output_dir, steps, eval_before, eval_after): the
    paths of its outputs and its metrics."""

    output_dir: Path
    eval_after: dict | None

    @property
    def metrics(self) -> dict:
        """The final held-out metrics (empty without held-out data)."""
        return dict(self.eval_after or {})

    @property
    def metrics_file(self) -> Path:
        return Path(self.output_dir) / METRICS_FILE

    @property
    def events(self) -> list[dict]:
        """Every event of metrics.jsonl (train logs, evals, health warnings), in order."""
        from directalign.engine.metrics import read_metrics

        return read_metrics(self.metrics_file)

    @property
    def outputs(self) -> dict[str, Path]:
        """The saved folders that exist: adapter, model, merged, reward_model (each with its README.md card)."""
        names = ("adapter", "model", "merged", "reward_model")
        return {n: Path(self.output_dir) / n for n in names if (Path(self.output_dir) / n).is_dir()}

    @property
    def adapter_dir(self) -> Path | None:
        return self.outputs.get("adapter")

    @property
    def model_card(self) -> Path | None:
        folders = list(self.outputs.values())
        return folders[0] / "README.md" if folders else None


def precision(cfg) -> str:
    """'fp32', 'bf16 autocast', '4-bit base weights, bf16 autocast': the weights' and the compute's precision."""
    if getattr(cfg, "load_in_4bit", False) or getattr(cfg, "load_in_8bit", False):
        weights = f"{4 if cfg.load_in_4bit else 8}-bit base weights"
    else:
        dtype = getattr(cfg, "torch_dtype", "float32")
        weights = {"float32": "", "bfloat16": "bf16 base weights", "float16": "fp16 base weights",
                   "auto": "checkpoint-dtype base weights"}[dtype]
    compute = "bf16 autocast" if cfg.bf16 else ("fp32" if not weights else "")
    return ", ".join(part for part in (weights, compute) if part)


@contextlib.contextmanager
def open_run(cfg) -> Iterator[Run]:
    """Set up a run of `cfg` (a validated command config) and release its folder afterwards, however it ends."""
    cfg.validate()
    check_push(cfg)
    if cfg.release_freed_memory:
        return_freed_buffers()
    accelerator = make_accelerator(cfg.bf16)
    if zero.requested():
        zero.check_keys(cfg)
    dist = Dist.from_accelerator(accelerator)
    check_process_count(dist.world, cfg.num_processes)
    match_threads_to_cores(dist.local_world)
    set_seed(cfg.seed)
    folder = RunFolder(cfg.output_dir, log=tqdm.write if dist.is_main else (lambda _: None))
    outcome: tuple[str, str] = ("fresh", "")
    if dist.is_main:
        try:
            outcome = (folder.open(cfg), "")
        except ConfigError as err:
            folder.release()  # a refused run leaves the folder to the next one, unlocked
            outcome = ("error", str(err))
    outcome = dist.broadcast(outcome)  # every process fails alike, instead of waiting for the main one
    if outcome[0] == "error":
        raise ConfigError(outcome[1])
    folder.state = outcome[0]
    if dist.is_main and cfg.bf16:
        warning = bf16_warning(accelerator.device)
        if warning:
            tqdm.write(warning)
    metrics = MetricsWriter(folder.path / METRICS_FILE, enabled=dist.is_main)
    run = Run(cfg, accelerator, dist, folder, metrics)
    try:
        if dist.is_main:
            metrics.trackers = start_trackers(cfg, folder.path)
        yield run
    finally:
        metrics.close()
        folder.release()


def steps_plan(total_steps: int, cfg, world: int, unit: str) -> str:
    """'25 steps of 8 records x 1 process x 1 micro-batch', for the start-up summary."""
    def n(count: int, word: str) -> str:
        return f"{count} {word}{'' if count == 1 else 'es' if word.endswith('s') else 's'}"

    return (f"{n(total_steps, 'step')} of {cfg.per_device_train_batch_size} {unit} x {n(world, 'process')} x "
            f"{n(cfg.gradient_accumulation_steps, 'micro-batch')}")
