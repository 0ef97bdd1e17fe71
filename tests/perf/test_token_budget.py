"""Micro-batches formed by a token budget: deterministic, resumable, every record once per epoch, within budget."""

from __future__ import annotations

import numpy as np
import pytest

from directalign.data.batching import token_budget_batches
from directalign.data.sampler import MicroBatches
from directalign.engine.metrics import read_metrics
from directalign.training.dpo import train
from tests.training.test_dpo import _cfg


def test_token_budget_batches_cut_in_order_within_budget():
    counts = [5, 3, 9, 2, 12, 4]
    assert token_budget_batches([0, 1, 2, 3, 4, 5], counts, 10) == [[0, 1], [2], [3], [4], [5]]
    assert token_budget_batches([3, 1, 0, 5], counts, 10) == [[3, 1, 0], [5]]


def test_pair_count_schedule_is_unchanged():
    schedule = MicroBatches(10, batch_size=3, accumulation=2, seed=7)
    order = np.random.default_rng(7 + 1).permutation(10).tolist()
    assert schedule.per_epoch == 4 and schedule.steps_for(1.0) == 2
    assert schedule.indices(2, 1) == order[3:6]  # micro-batch 5 of the run = the second of epoch 1
    assert schedule.epoch_at(1) == 0.5


def test_token_budget_schedule_is_deterministic_and_covers_each_epoch():
    counts = np.random.default_rng(0).integers(20, 200, size=40).tolist()
    make = lambda: MicroBatches(40, 4, 2, seed=1, token_counts=counts, max_tokens=400)  # noqa: E731
    schedule, resumed = make(), make()
    steps = schedule.steps_for(3.0)
    seen = [schedule.indices(s, m) for s in range(steps) for m in range(2)]
    assert [resumed.indices(s, m) for s in reversed(range(steps)) for m in reversed(range(2))] == seen[::-1]
    for epoch in range(3):
        batches = schedule.epoch(epoch)
        assert sorted(i for b in batches for i in b) == list(range(40))
        assert all(sum(counts[i] for i in b) <= 400 for b in batches)
        assert len(batches) < 40 / 2  # far fewer micro-batches than records
    assert schedule.epoch(0) != schedule.epoch(1)  # a new order each epoch


def test_sequential_sampling_keeps_file_order():
    schedule = MicroBatches(5, 2, 1, seed=3, shuffle=False)
    assert [schedule.indices(s, 0) for s in range(4)] == [[0, 1], [2, 3], [4], [0, 1]]


@pytest.mark.parametrize("layout", ["packed", "shared"])
def test_training_with_a_token_budget(tiny_model_dir, tmp_path, layout):
    out = tmp_path / "run"
    result = train(_cfg(tiny_model_dir, out, layout=layout, max_tokens_per_batch=400, max_steps=3, kl_prompts=0,
                        gradient_accumulation_steps=2))
    events = [e for e in read_metrics(out / "metrics.jsonl") if e["split"] == "train"]
    assert [e["step"] for e in events] == [1, 2, 3]
    assert events[-1]["loss"] < events[0]["loss"]
    assert result.eval_after["mean_margin"] != 0.0
