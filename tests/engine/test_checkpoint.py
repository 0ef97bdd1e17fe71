"""Checkpoints: a round trip restores optimizer, schedule and random state exactly; nothing is unpickled; a
damaged checkpoint is found and skipped; non-finite weights are never written."""

import json
import random

import numpy as np
import pytest
import torch
from transformers import get_scheduler

from directalign.engine.checkpoint import (
    Checkpoint,
    latest_good,
    list_checkpoints,
    rng_state,
    save_checkpoint,
    trainable_state,
    verify,
)
from directalign.engine.files import sha256_file
from directalign.errors import ConfigError, TrainingError


def _setup(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    model[0].weight.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=0.1, betas=(0.8, 0.95))
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=2, num_training_steps=10)
    return model, optimizer, scheduler


def _step(model, optimizer, scheduler):
    loss = model(torch.randn(5, 4)).pow(2).mean()
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


def _write(folder, step, model, optimizer, scheduler, **kw):
    return save_checkpoint(folder, step, trainable_state(model), optimizer.state_dict(), scheduler.state_dict(),
                           [rng_state()], {"num_processes": 1}, **kw)


def test_round_trip_continues_exactly_as_the_uninterrupted_run(tmp_path):
    model, optimizer, scheduler = _setup()
    for _ in range(3):
        _step(model, optimizer, scheduler)
    path = _write(tmp_path, 3, model, optimizer, scheduler)
    random.random(), np.random.rand()  # state consumed after the save is restored below
    for _ in range(2):
        _step(model, optimizer, scheduler)
    expected = trainable_state(model)

    fresh, fresh_opt, fresh_sched = _setup()  # the same frozen weights (they are not checkpointed)
    with torch.no_grad():
        fresh[1].weight.normal_()  # trained weights that the checkpoint must replace
    checkpoint = Checkpoint(path)
    checkpoint.restore(fresh, fresh_opt, fresh_sched, rank=0)
    assert checkpoint.step == 3 and fresh_sched.get_last_lr() != [0.1]
    for _ in range(2):
        _step(fresh, fresh_opt, fresh_sched)
    got = trainable_state(fresh)
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def test_nothing_in_a_checkpoint_is_a_pickle(tmp_path):
    model, optimizer, scheduler = _setup()
    _step(model, optimizer, scheduler)
    path = _write(tmp_path, 1, model, optimizer, scheduler)
    names = sorted(p.name for p in path.iterdir())
    assert all(n.endswith((".json", ".safetensors")) for n in names), names
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest) == set(names) - {"manifest.json"}


def test_a_damaged_checkpoint_is_reported_and_the_one_before_is_used(tmp_path):
    model, optimizer, scheduler = _setup()
    for step in (1, 2):
        _step(model, optimizer, scheduler)
        _write(tmp_path, step, model, optimizer, scheduler, keep=5)
    damaged = tmp_path / "checkpoint-2" / "trainable.safetensors"
    data = bytearray(damaged.read_bytes())
    data[-3] ^= 0xFF  # one flipped byte in the weights
    damaged.write_bytes(bytes(data))
    messages = []
    assert verify(tmp_path / "checkpoint-2") == "trainable.safetensors does not match its checksum"
    assert latest_good(tmp_path, messages.append).path == tmp_path / "checkpoint-1"
    assert messages == ["checkpoint-2 is damaged (trainable.safetensors does not match its checksum); using the "
                        "checkpoint before it"]
    (tmp_path / "checkpoint-1" / "optimizer.json").unlink()
    assert latest_good(tmp_path, messages.append) is None


def test_a_folder_without_its_manifest_is_an_interrupted_write(tmp_path):
    model, optimizer, scheduler = _setup()
    _write(tmp_path, 1, model, optimizer, scheduler)
    (tmp_path / "checkpoint-7").mkdir()
    (tmp_path / "checkpoint-7" / "trainable.safetensors").write_bytes(b"half")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-1"]


def test_non_finite_weights_are_never_written(tmp_path):
    model, optimizer, scheduler = _setup()
    with torch.no_grad():
        model[1].weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match="refusing to write checkpoint-4: the weights are not finite"):
        _write(tmp_path, 4, model, optimizer, scheduler)
    assert not list(tmp_path.iterdir())  # no staging folder left either


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    model, optimizer, scheduler = _setup()
    for step in range(1, 5):
        _write(tmp_path, step, model, optimizer, scheduler, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-3", "checkpoint-4"]


def test_a_checkpoint_of_more_processes_names_them_on_restore(tmp_path):
    model, optimizer, scheduler = _setup()
    path = save_checkpoint(tmp_path, 1, trainable_state(model), optimizer.state_dict(), scheduler.state_dict(),
                           [rng_state()], {})
    with pytest.raises(TrainingError, match="written by 1 processes"):
        Checkpoint(path).restore(model, optimizer, scheduler, rank=1)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("optimizer.json", b"{ not json", "JSONDecodeError"),
        ("trainer_state.json", b'{"step": "three"}', "ValueError"),
        ("rng.json", b'{"python": 1}', "TypeError: rng.json holds a dict, not a list"),
        ("trainable.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}", "SafetensorError"),
    ],
)
def test_a_checkpoint_that_verifies_but_does_not_read_back_is_damaged(tmp_path, name, content, problem):
    """Files that match a manifest written with them (a bug, or a hand) but are not a checkpoint: reported and
    skipped like a bit flip, before anything of them is applied."""
    model, optimizer, scheduler = _setup()
    for step in (1, 2):
        _step(model, optimizer, scheduler)
        _write(tmp_path, step, model, optimizer, scheduler, keep=5)
    latest = tmp_path / "checkpoint-2"
    (latest / name).write_bytes(content)
    manifest = json.loads((latest / "manifest.json").read_text())
    manifest[name] = sha256_file(latest / name)
    (latest / "manifest.json").write_text(json.dumps(manifest))
    messages = []
    assert verify(latest) is None
    assert latest_good(tmp_path, messages.append).path == tmp_path / "checkpoint-1"
    assert messages[0].startswith(f"checkpoint-2 is damaged ({problem}")


def _zero_state(world=2):
    """What full_optimizer_state gathers under ZeRO: each process's flat partition and AdamW state, and JSON."""
    partitions = [{"0.fp32": torch.full((6,), float(r)), "0.exp_avg": torch.rand(6), "0.step": torch.tensor(2.0)}
                  for r in range(world)]
    meta = {"param_groups": [{"lr": 0.1, "betas": [0.8, 0.95]}], "scalars": {}, "sizes": [6]}
    return {"zero": {"stage": 2, "world": world, "ranks": [meta] * world}, "partitions": partitions}


def test_zero_partitions_are_written_one_file_a_process_and_read_back(tmp_path):
    model, _, scheduler = _setup()
    state = _zero_state()
    path = save_checkpoint(tmp_path, 2, trainable_state(model), state, scheduler.state_dict(),
                           [rng_state(), rng_state()], {"num_processes": 2})
    manifest = json.loads((path / "manifest.json").read_text())
    assert {"optimizer-rank0.safetensors", "optimizer-rank1.safetensors"} <= set(manifest)
    assert "optimizer.safetensors" not in manifest
    read = Checkpoint(path)
    assert read.optimizer_state["zero"] == state["zero"] and read.extra == {}
    for got, wrote in zip(read.optimizer_state["partitions"], state["partitions"], strict=True):
        assert got.keys() == wrote.keys() and all(torch.equal(got[k], wrote[k]) for k in got)
    (path / "optimizer-rank1.safetensors").unlink()
    assert verify(path) == "optimizer-rank1.safetensors is missing"


def test_a_zero_checkpoint_is_not_restored_into_a_plain_optimizer(tmp_path):
    model, optimizer, scheduler = _setup()
    path = save_checkpoint(tmp_path, 2, trainable_state(model), _zero_state(world=1), scheduler.state_dict(),
                           [rng_state()], {"num_processes": 1})
    with pytest.raises(ConfigError, match="holds DeepSpeed ZeRO partitions of the optimizer: resume it with the same"):
        Checkpoint(path).restore(model, optimizer, scheduler, rank=0)
