"""metrics.jsonl beside the run's outputs, the running means between logs (weighted, reduced over processes),
and the progress bar.

metrics.jsonl is the source of truth: one JSON object per event (train logs, evals, health warnings), written by
the main process only, appended and flushed. A resumed run first drops the events after its checkpoint's step,
which it will log again, so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from pathlib import Path

from tqdm.auto import tqdm

from directalign.engine.files import atomic_write_text, write_error
from directalign.engine.trackers import tracker_values
from directalign.secrets import redact

METRICS_FILE = "metrics.jsonl"


def _clean(event: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in event.items()}


class MetricsWriter:
    """Appends events to metrics.jsonl, and sends a copy to the run's trackers (directalign.engine.trackers); a
    writer on a non-main process writes nothing."""

    def __init__(self, path: Path, enabled: bool = True, trackers: list | None = None):
        self.path = Path(path)
        self.enabled = enabled
        self.trackers = trackers or []

    def start(self, resume_step: int | None) -> None:
        """A fresh run starts an empty file; a resumed one keeps the events up to resume_step."""
        if not self.enabled:
            return
        if resume_step is None or not self.path.exists():
            atomic_write_text(self.path, "")
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill
            if isinstance(event, dict) and int(event.get("step", 0) or 0) <= resume_step:
                kept.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, event: dict) -> None:
        if not self.enabled:
            return
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(redact(_clean(event)), ensure_ascii=False) + "\n")
                f.flush()
        except OSError as err:
            raise write_error(err, self.path) from err
        if self.trackers:
            values, step = tracker_values(redact(_clean(event)))
            for tracker in self.trackers:
                tracker.log(values, step=step)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class RunningMeans:
    """Weighted means of each metric over the micro-batches since the last log, summed over processes at `pop`
    (every process must call it at the same step), so that a mean over 2 processes equals the mean over one
    process that saw both halves. A metric added with weight n counts as n observations (pairs, examples)."""

    def __init__(self):
        self.sums: dict[str, float] = defaultdict(float)
        self.weights: dict[str, float] = defaultdict(float)

    def add(self, metrics: dict[str, float], weight: float = 1.0) -> None:
        for name, value in metrics.items():
            if value is None or weight <= 0:
                continue
            self.sums[name] += float(value) * weight
            self.weights[name] += weight

    def pop(self, dist) -> dict[str, float]:
        names = sorted(set(self.sums) | set(dist.gather(sorted(self.sums)))) if dist.active else sorted(self.sums)
        totals = dist.sum([self.sums.get(n, 0.0) for n in names] + [self.weights.get(n, 0.0) for n in names])
        sums, weights = totals[: len(names)], totals[len(names) :]
        self.sums.clear()
        self.weights.clear()
        return {n: s / w for n, s, w in zip(names, sums, weights, strict=True) if w > 0}

    def state_dict(self) -> dict:
        return {"sums": dict(self.sums), "weights": dict(self.weights)}

    def load_state_dict(self, state: dict) -> None:
        self.sums = defaultdict(float, state.get("sums", {}))
        self.weights = defaultdict(float, state.get("weights", {}))


class Throughput:
    """pairs/s and tokens/s over this process's work since the last `pop`, leaving out paused time (evaluation,
    checkpoints); summed over processes by the caller."""

    def __init__(self):
        self._reset()

    def _reset(self) -> None:
        self.start, self.excluded, self.items, self.tokens = time.perf_counter(), 0.0, 0, 0

    def add(self, items: int, tokens: int) -> None:
        self.items += items
        self.tokens += tokens

    def pause(self) -> _Paused:
        return _Paused(self)

    def pop(self, dist, unit: str = "pairs") -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.start - self.excluded, 1e-9)
        items, tokens = dist.sum([self.items, self.tokens])
        slowest = max(dist.gather([elapsed]))  # the processes wait for each other: the slowest sets the rate
        self._reset()
        return {f"{unit}_per_s": items / slowest, "tokens_per_s": tokens / slowest}


class _Paused:
    def __init__(self, throughput: Throughput):
        self.throughput = throughput

    def __enter__(self):
        self.begin = time.perf_counter()

    def __exit__(self, *exc):
        self.throughput.excluded += time.perf_counter() - self.begin
        return False


def progress(total: int, initial: int, desc: str, enabled: bool, unit: str = "step") -> tqdm:
    """A progress bar with rate and ETA (tqdm's), on the main process only."""
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)
