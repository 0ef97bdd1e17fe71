"""kill -9 at seeded random points (mid-step, inside a checkpoint write, inside the final save) for every trainer:
the rerun takes over the dead run's lock, resumes from the last checkpoint that verifies, and ends with the
weights of the uninterrupted run, bit for bit.

The uninterrupted runs go through the library in this process; each killed run is a real `directalign` process
(tests/faults/killer.py) that SIGKILLs itself, with nothing flushed or cleaned up; the rerun is in this process.
"""

from __future__ import annotations

import random

import pytest

from directalign.engine.checkpoint import list_checkpoints, verify
from directalign.engine.files import STAGING_PREFIX
from tests.distributed.conftest import max_difference
from tests.faults.conftest import COMMON, TRAINERS, run_killed, run_library, values

CHECKPOINT_FILES = 5  # JSON files a checkpoint writes (optimizer, scheduler, rng, trainer state, manifest)


def steps_of(trainer: str) -> int:
    keys = {**COMMON, **TRAINERS[trainer][2]}
    return keys["max_steps"] * keys.get("num_rounds", 1)


def kill_point(trainer: str, point: str) -> int:
    """The nth time the point is reached, drawn with a fixed seed per (trainer, point): the same in every CI run."""
    rng = random.Random(f"{trainer}/{point}")
    if point == "step":
        return rng.randint(2, steps_of(trainer) - 1)
    if point == "checkpoint":
        checkpoints = steps_of(trainer) - TRAINERS[trainer][2].get("num_rounds", 1)  # none after a round's last step
        return rng.randint(CHECKPOINT_FILES + 1, checkpoints * CHECKPOINT_FILES)
    return 1


CASES = [("dpo", "step"), ("dpo", "checkpoint"), ("dpo", "final"), ("kto", "checkpoint"), ("online-dpo", "step"),
         ("grpo", "final"), ("iterative-dpo", "step"), ("reward-model", "checkpoint")]

_uninterrupted: dict = {}


@pytest.fixture
def uninterrupted(tiny_model_dir, tmp_path_factory, reward_file):
    def get(trainer: str):
        if trainer not in _uninterrupted:
            out = tmp_path_factory.mktemp(f"full-{trainer}")
            run_library(trainer, values(trainer, tiny_model_dir, out, reward_file))
            _uninterrupted[trainer] = out
        return _uninterrupted[trainer]
    return get


@pytest.mark.parametrize(("trainer", "point"), CASES, ids=[f"{t}-{p}" for t, p in CASES])
def test_a_killed_run_resumes_to_the_uninterrupted_weights(trainer, point, tiny_model_dir, tmp_path, reward_file,
                                                           uninterrupted, capsys):
    n = kill_point(trainer, point)
    found = values(trainer, tiny_model_dir, tmp_path / "run", reward_file)
    killed = run_killed(trainer, found, point, n)
    assert killed.returncode == -9, f"the run was not killed at {point} {n}: {killed.stderr[-2000:]}"
    assert not (tmp_path / "run" / "finished.json").exists()
    for checkpoint in list_checkpoints(tmp_path / "run"):  # a kill mid-write leaves staging, never half a checkpoint
        assert verify(checkpoint) is None, checkpoint
    capsys.readouterr()
    run_library(trainer, found)
    said = capsys.readouterr().out
    assert "taking over the lock of a run that is no longer running" in said
    assert max_difference(uninterrupted(trainer), tmp_path / "run") == 0.0, f"killed at {point} {n}"
    assert not list((tmp_path / "run").glob(f"{STAGING_PREFIX}*")), "staging leftovers were not removed"
