"""The steps of a run and everything between them, the same for every trainer: resuming from the last good
checkpoint, the progress bar, the train log every logging_steps (means weighted by counts and reduced over
processes), evaluation every eval_steps, checkpoints every save_steps, the health guard's stops, the
non-finite guard, and SIGINT / SIGTERM, which finish the step, write a checkpoint and stop with a message.

A trainer's loop reads:

    loop = StepLoop(run, optim, model, guard, total_steps, evaluate=evaluate, desc="train")
    eval_before = loop.evaluate("before", 0) if ... else None
    for step in loop:
        ... loop.backward(loss_sum, total_count); loop.add(metrics, weight); loop.count(items, tokens) ...
        if not loop.end_step(step):
            break
    final_step = loop.finish()
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator

import torch

from directalign.engine.checkpoint import Checkpoint, latest_good, list_checkpoints, rng_state, save_checkpoint
from directalign.engine.metrics import RunningMeans, Throughput, progress
from directalign.engine.optim import NonFiniteStep
from directalign.engine.sharding import full_optimizer_state, full_weights
from directalign.errors import ConfigError, RunInterrupted, TrainingError

SIGNAL_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StepLoop:
    def __init__(
        self,
        run,
        optim,
        model: torch.nn.Module,
        guard,
        total_steps: int,
        *,
        evaluate: Callable[[str, int], dict | None] | None = None,
        desc: str = "train",
        unit: str = "pairs",
        shown: dict[str, str] | None = None,
        epoch_at: Callable[[int], float] | None = None,
        extra_state: Callable[[], dict] | None = None,
        on_step: Callable[[int, dict], None] | None = None,
        checkpoint_dir=None,
        step_offset: int = 0,
        event_extra: dict | None = None,
    ):
        self.run, self.optim, self.model, self.guard = run, optim, model, guard
        self.cfg = run.cfg
        self.total_steps = total_steps
        self._evaluate, self.desc, self.unit = evaluate, desc, unit
        self.shown = shown or {"loss": "loss"}
        self.epoch_at, self.extra_state, self.on_step = epoch_at, extra_state, on_step
        self.checkpoint_dir = checkpoint_dir or run.out
        # A loop inside a longer run (an iterative round) numbers its logged steps from step_offset and tags
        # its events; its checkpoints count its own steps.
        self.step_offset, self.event_extra = step_offset, event_extra or {}
        self.means, self.throughput = RunningMeans(), Throughput()
        self.start_step = 0
        self.restored: dict = {}  # the trainer_state.json of the checkpoint resumed from
        self.last: dict = {}
        self.history: list[dict] = []  # every eval event of this loop
        self.current = 0  # the step in progress, counted from 1
        self._signal: int | None = None
        self._bar = None

    # Resuming.

    def resume(self, restart_metrics: bool = True) -> int:
        """Restore the last good checkpoint of a resumed run (weights, optimizer, schedule, generators, health,
        running means); start metrics.jsonl fresh or cut after that step. Returns the first step to run."""
        found = latest_good(self.checkpoint_dir, self.run.log) if self.run.resuming and self.run.dist.is_main else None
        path = self.run.dist.broadcast(found.path if found is not None else None)
        if path is not None:
            checkpoint = found if found is not None else Checkpoint(path)
            written_by = checkpoint.state.get("num_processes", 1)
            if written_by != self.run.dist.world:
                raise ConfigError(
                    f"{path} was written by a run of {written_by} processes; resume it with {written_by} (the data "
                    f"each process sees, and ZeRO's partitions, depend on it), or start over with "
                    f"--overwrite-output-dir true"
                )
            checkpoint.restore(self.model, self.optim.optimizer, self.optim.scheduler, self.run.dist.rank)
            self.guard.load_state_dict(checkpoint.state.get("guard", {}), checkpoint.tensors("kept"))
            self.means.load_state_dict(checkpoint.state.get("means", {}))
            self.start_step, self.restored = checkpoint.step, checkpoint.state
            self.current = checkpoint.step
            self.run.log(f"resuming from {path} (step {checkpoint.step} of {self.total_steps})")
        if restart_metrics:
            self.run.metrics.start(self.start_step if path is not None else None)
        return self.start_step

    # The steps.

    def __iter__(self) -> Iterator[int]:
        previous = self._install_signals()
        self._bar = progress(self.total_steps, self.start_step, self.desc, self.run.dist.is_main)
        try:
            for step in range(self.start_step, self.total_steps):
                self.current = step + 1
                yield step
        finally:
            self._bar.close()
            self._restore_signals(previous)

    def backward(self, local_loss_sum: torch.Tensor, total_count: float, sources: list[str] | None = None) -> None:
        """The non-finite guard, checked on every process at once, then the normalised backward pass."""
        finite = bool(torch.isfinite(local_loss_sum.detach()).all())
        if self.run.dist.any(not finite):
            where = f" on records {sources[:4]}" if sources and not finite else ""
            raise TrainingError(self._non_finite(f"non-finite loss{where}"))
        self.optim.backward(local_loss_sum, total_count)

    def add(self, metrics: dict[str, float], weight: float = 1.0) -> None:
        self.means.add(metrics, weight)

    def count(self, items: int, tokens: int) -> None:
        self.throughput.add(items, tokens)

    def inner_step(self) -> None:
        """An optimizer step inside a loop step (GRPO's num_iterations updates on one batch of samples)."""
        try:
            self.means.add({"grad_norm": self.optim.step()})
        except NonFiniteStep as err:
            raise TrainingError(self._non_finite(str(err))) from err

    def end_step(self, step: int, skip: bool = False) -> bool:
        """The optimizer step (or, with skip, only the schedule's), then logging, evaluation, checkpoints and
        stops. Returns False when the run must stop (a health stop)."""
        done = step + 1
        if skip:
            self.optim.skip()
        else:
            self.inner_step()
        self._bar.update(1)
        if done % self.cfg.logging_steps == 0 or done == self.total_steps:
            self._log_train(done)
        interrupted = self.run.dist.any(self._signal is not None)
        with self.throughput.pause():  # evaluation and checkpoints do not count against the training rate
            if self.cfg.eval_steps and done % self.cfg.eval_steps == 0 and done < self.total_steps:
                self.evaluate("periodic", self.step_offset + done)
            due = self.cfg.save_steps and done % self.cfg.save_steps == 0 and done < self.total_steps
            if due or interrupted:
                self.save(done)
        self._bar.unpause()  # nor against the bar's rate and ETA: its clock skips the time since its last update
        if self.on_step is not None:
            self.on_step(self.step_offset + done, self.last)
        if interrupted:
            code = self._signal if self._signal is not None else signal.SIGTERM
            raise RunInterrupted(
                f"interrupted: checkpoint-{done} written in {self.checkpoint_dir}; rerun the same command to resume "
                f"from step {done}",
                SIGNAL_CODES.get(code, 130),
            )
        return not self.guard.should_stop

    def _log_train(self, done: int) -> None:
        event = {"step": self.step_offset + done, "split": "train", **self.event_extra}
        if self.epoch_at is not None:
            event["epoch"] = round(self.epoch_at(done), 4)
        event.update(self.means.pop(self.run.dist))
        event["learning_rate"] = self.optim.learning_rate
        event.update(self.throughput.pop(self.run.dist, self.unit))
        event["num_processes"] = self.run.dist.world
        self.last = event
        self.run.metrics.write(event)
        self.guard.observe(event)
        shown = {k: f"{event[m]:.4g}" for k, m in self.shown.items() if isinstance(event.get(m), int | float)}
        self._bar.set_postfix(shown)

    def evaluate(self, tag: str, step: int, **extra) -> dict | None:
        """Run the trainer's evaluation, log it (console and metrics.jsonl) and show it to the health guard."""
        if self._evaluate is None:
            return None
        result = self._evaluate(tag, step)
        if result is None:
            return None
        event = {"step": step, "split": "eval", "tag": tag, **self.event_extra, **extra, **result}
        self.run.metrics.write(event)
        self.history.append(event)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, int | float))
        self.run.log(f"eval ({tag}, step {step}): {shown}")
        self.guard.observe(event)
        return result

    # Checkpoints.

    def save(self, done: int) -> None:
        """A checkpoint of step `done`, written by the main process once every process has finished the step."""
        dist = self.run.dist
        rng = dist.gather([rng_state()])
        guard_state, kept = self.guard.state_dict()
        state = {
            "num_processes": dist.world,
            "total_steps": self.total_steps,
            "guard": guard_state,
            "means": self.means.state_dict(),
            **(self.extra_state() if self.extra_state else {}),
        }
        weights = full_weights(self.model)  # every process takes part under FSDP
        optimizer_state = full_optimizer_state(self.model, self.optim.optimizer)
        if dist.is_main:
            save_checkpoint(
                self.checkpoint_dir,
                done,
                weights,
                optimizer_state,
                self.optim.scheduler.state_dict(),
                rng,
                state,
                {"kept": kept} if kept else None,
                keep=self.cfg.save_total_limit,
            )
        dist.barrier()

    def finish(self) -> int:
        """The step the final outputs belong to (a KL stop restores an earlier eval's weights)."""
        return self.guard.finish(self.total_steps)

    def _non_finite(self, what: str) -> str:
        kept = list_checkpoints(self.checkpoint_dir)
        where = f"the last good checkpoint is {kept[-1]}" if kept else "no checkpoint had been written yet"
        return (
            f"{what} at step {self.current}: the step was not applied; {where}. Lower learning_rate (or beta) "
            "and rerun with --resume-allow-changes learning_rate to continue from it"
        )

    # Signals.

    def _install_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}

        def handler(signum, frame):
            if self._signal is not None:  # a second Ctrl-C stops at once
                signal.signal(signum, previous.get(signum, signal.SIG_DFL))
                raise KeyboardInterrupt
            self._signal = signum
            self.run.log(
                f"{signal.Signals(signum).name}: finishing this step, then writing a checkpoint "
                "(press Ctrl-C again to stop at once)"
            )

        for signum in SIGNAL_CODES:
            previous[signum] = signal.signal(signum, handler)
        return previous

    def _restore_signals(self, previous: dict) -> None:
        for signum, old in previous.items():
            signal.signal(signum, old)
