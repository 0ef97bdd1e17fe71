"""metrics.jsonl beside the run's outputs: one JSON object per logging event, appended and flushed."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path


class MetricsWriter:
    def __init__(self, path: Path, resume_from_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_from_step is not None and self.path.exists():
            self._truncate_after(resume_from_step)
        elif resume_from_step is None and self.path.exists():
            self.path.unlink()

    def _truncate_after(self, step: int) -> None:
        """Drop events logged after the checkpoint we resume from: they will be logged again."""
        kept = [
            line
            for line in self.path.read_text().splitlines()
            if line and json.loads(line).get("step", 0) <= step
        ]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, event: dict) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in event.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(clean) + "\n")


class RunningMean:
    """Averages of each metric over the micro-batches since the last log."""

    def __init__(self):
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.sums[k] += v
            self.counts[k] += 1

    def pop(self) -> dict[str, float]:
        means = {k: self.sums[k] / self.counts[k] for k in self.sums}
        self.sums.clear()
        self.counts.clear()
        return means


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
