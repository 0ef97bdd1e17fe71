"""Checkpoints that load without executing anything, that prove they are whole, and that are never bad.

`checkpoint-<step>/` holds
- trainable.safetensors: the trainable weights;
- optimizer.safetensors + optimizer.json: the optimizer's tensors, and its param groups and scalars; under
  DeepSpeed ZeRO, optimizer-rank<r>.safetensors instead: each process's flat fp32 partition and its AdamW moments
  (engine/zero.py), with optimizer.json holding every process's param groups and scalars;
- scheduler.json, rng.json + rng.safetensors (every process's Python, NumPy and torch generators);
- trainer_state.json: the step, the process count and what the trainer adds (health monitor, running means);
- extra tensors a trainer asks for (the weights a KL stop keeps), as safetensors;
- manifest.json, written last: the sha256 of every file. A checkpoint without it, or whose files do not match
  it, is not used: `latest_good` reports it and falls back to the one before.
Nothing is unpickled: tensors are safetensors, everything else JSON. The folder is staged and renamed, so a kill
during a write leaves the previous checkpoint as the latest.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from directalign.engine.files import sha256_file, staged_dir
from directalign.engine.sharding import load_full, whole
from directalign.errors import TrainingError

MANIFEST = "manifest.json"
STATE_FILE = "trainer_state.json"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable weights, whole (gathered under ZeRO-3: every process must call it)."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    with whole([p for _, p in trainable]):
        return {n: p.detach().cpu().clone() for n, p in trainable}


def load_trainable(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = sorted(set(weights) - set(params))
    if missing:
        raise TrainingError(f"checkpoint weights {missing[:3]} are not parameters of this model")
    with whole([params[name] for name in weights], write=True), torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device))


def all_finite(tensors: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())


# Optimizer and RNG state as tensors + JSON.


def _split_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):  # index: a parameter's position, or its name (sharded state)
                tensors[f"{index}::{name}"] = value.detach().cpu().clone().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict = {}
    for flat, value in tensors.items():
        index, name = flat.rsplit("::", 1)
        state.setdefault(_index(index), {})[name] = value
    for index, values in meta["scalars"].items():
        state.setdefault(_index(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def _index(key: str) -> int | str:
    return int(key) if key.isdigit() else key


def rng_state() -> tuple[dict, dict[str, torch.Tensor]]:
    python = random.getstate()
    numpy = np.random.get_state()
    meta = {
        "python": [python[0], list(python[1]), python[2]],
        "numpy": [numpy[0], [int(x) for x in numpy[1]], int(numpy[2]), int(numpy[3]), float(numpy[4])],
    }
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = state
    return meta, tensors


def set_rng_state(meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


# Writing and reading.


def save_checkpoint(
    folder: Path,
    step: int,
    weights: dict[str, torch.Tensor],
    optimizer_state: dict,
    scheduler_state: dict,
    rng: list[tuple[dict, dict[str, torch.Tensor]]],
    state: dict,
    extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
    keep: int = 2,
) -> Path:
    """Write checkpoint-<step> (see the module docstring); rng is every process's rng_state(), rank order.
    Refuses weights that are not finite: a checkpoint is only ever a good one."""
    if not all_finite(weights):
        raise TrainingError(f"refusing to write checkpoint-{step}: the weights are not finite")
    target = Path(folder) / f"checkpoint-{step}"
    with staged_dir(target) as staging:
        save_file(weights, str(staging / "trainable.safetensors"))
        if "zero" in optimizer_state:
            for rank, tensors in enumerate(optimizer_state["partitions"]):
                save_file(tensors, str(staging / f"optimizer-rank{rank}.safetensors"))
            _write_json(staging / "optimizer.json", {"zero": optimizer_state["zero"]})
        else:
            tensors, meta = _split_optimizer(optimizer_state)
            save_file(tensors, str(staging / "optimizer.safetensors"))
            _write_json(staging / "optimizer.json", meta)
        _write_json(staging / "scheduler.json", scheduler_state)
        _write_json(staging / "rng.json", [m for m, _ in rng])
        save_file({f"{rank}.{k}": v for rank, (_, t) in enumerate(rng) for k, v in t.items()},
                  str(staging / "rng.safetensors"))
        for name, group in (extra_tensors or {}).items():
            save_file(group, str(staging / f"{name}.safetensors"))
        _write_json(staging / STATE_FILE, {"step": step, **state})
        files = sorted(p.name for p in staging.iterdir())
        _write_json(staging / MANIFEST, {name: sha256_file(staging / name) for name in files})
    for old in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=1))


def list_checkpoints(folder: Path) -> list[Path]:
    """checkpoint-<step> folders with a manifest, oldest first (whether their files verify is `verify`'s job)."""
    found = []
    for p in Path(folder).glob("checkpoint-*"):
        suffix = p.name.split("-", 1)[1]
        if suffix.isdigit() and (p / MANIFEST).is_file():
            found.append((int(suffix), p))
    return [p for _, p in sorted(found)]


def verify(path: Path) -> str | None:
    """None when every file of the checkpoint matches its manifest, else what is wrong."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        return f"unreadable manifest ({err})"
    if not isinstance(manifest, dict) or not all(isinstance(d, str) for d in manifest.values()):
        return "unreadable manifest (not a mapping of file to checksum)"
    for name, digest in manifest.items():
        if not (path / name).is_file():
            return f"{name} is missing"
        if sha256_file(path / name) != digest:
            return f"{name} does not match its checksum"
    return None


class DamagedCheckpoint(Exception):
    """A checkpoint whose files verify but do not read back as a checkpoint (written by a bug or a hand)."""


def latest_good(folder: Path, log) -> Checkpoint | None:
    """The newest checkpoint whose files verify and read back whole; a damaged one is reported and skipped."""
    for path in reversed(list_checkpoints(folder)):
        problem = verify(path)
        if problem is None:
            try:
                return Checkpoint(path)
            except DamagedCheckpoint as err:
                problem = str(err)
        log(f"{path.name} is damaged ({problem}); using the checkpoint before it")
    return None


class Checkpoint:
    """A checkpoint folder read whole into memory, every part checked for its type, before any of it is applied:
    a checkpoint either restores completely or raises DamagedCheckpoint having changed nothing."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.state = _read_json(self.path / STATE_FILE, dict)
            self.step = int(self.state["step"])
            self.weights = load_file(str(self.path / "trainable.safetensors"))
            self.optimizer_state = _read_optimizer(self.path)
            self.scheduler_state = _read_json(self.path / "scheduler.json", dict)
            self.rng_meta = _read_json(self.path / "rng.json", list)
            self.rng_tensors = load_file(str(self.path / "rng.safetensors"))
            self.extra = {p.stem: load_file(str(p)) for p in self.path.glob("*.safetensors")
                          if p.stem not in ("trainable", "optimizer", "rng") and not p.stem.startswith("optimizer-")}
        except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError) as err:
            raise DamagedCheckpoint(f"{type(err).__name__}: {str(err)[:120]}") from err

    def tensors(self, name: str) -> dict[str, torch.Tensor] | None:
        return self.extra.get(name)

    def restore(self, model, optimizer, scheduler, rank: int) -> None:
        """Weights, optimizer, schedule and this process's random generators (each process its shard of the
        weights and optimizer state under FSDP)."""
        if rank >= len(self.rng_meta):
            raise TrainingError(
                f"{self.path.name} was written by {len(self.rng_meta)} processes; resume it with as many "
                "(the data each process sees depends on it)"
            )
        load_full(model, self.weights, optimizer, self.optimizer_state)
        scheduler.load_state_dict(self.scheduler_state)
        mine = {k.split(".", 1)[1]: v for k, v in self.rng_tensors.items() if k.split(".", 1)[0] == str(rank)}
        set_rng_state(self.rng_meta[rank], mine)


def _read_optimizer(path: Path) -> dict:
    meta = _read_json(path / "optimizer.json", dict)
    if "zero" not in meta:
        return _join_optimizer(load_file(str(path / "optimizer.safetensors")), meta)
    world = int(meta["zero"]["world"])
    partitions = [load_file(str(path / f"optimizer-rank{rank}.safetensors")) for rank in range(world)]
    return {"zero": meta["zero"], "partitions": partitions}


def _read_json(path: Path, kind: type) -> dict | list:
    value = json.loads(path.read_text())
    if not isinstance(value, kind):
        raise TypeError(f"{path.name} holds a {type(value).__name__}, not a {kind.__name__}")
    return value
