"""Atomic, resumable checkpoints.

A checkpoint is a folder `checkpoint-<step>` holding the trainable weights, the optimizer and scheduler states,
every RNG state and the step. It is written into a temporary folder beside it and renamed into place, so a run
killed at any moment leaves either the whole checkpoint or none, and the previous one untouched.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

STATE_FILE = "trainer_state.json"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output_dir: Path, step: int, model, optimizer, scheduler, extra: dict, keep: int) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    final = output_dir / f"checkpoint-{step}"
    staging = Path(tempfile.mkdtemp(prefix=f".checkpoint-{step}.", dir=output_dir))
    save_file(trainable_state(model), str(staging / "trainable.safetensors"))
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()},
        staging / "optimizer.pt",
    )
    (staging / STATE_FILE).write_text(json.dumps({"step": step, **extra}, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    _prune(output_dir, keep)
    return final


def _prune(output_dir: Path, keep: int) -> None:
    for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a folder without its state file is an interrupted write)."""
    found = [p for p in Path(output_dir).glob("checkpoint-*") if (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    states = torch.load(path / "optimizer.pt", weights_only=False)
    optimizer.load_state_dict(states["optimizer"])
    scheduler.load_state_dict(states["scheduler"])
    set_rng_state(states["rng"])
    return json.loads((path / STATE_FILE).read_text())
