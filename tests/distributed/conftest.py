"""Launching directalign on several CPU processes (gloo) for the multi-process tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.multiprocess


@pytest.fixture(scope="module")
def reward_file(tmp_path_factory):
    """A reward function file (the completion's length) for the on-policy trainers and the reward judge."""
    path = tmp_path_factory.mktemp("rewards") / "length_reward.py"
    path.write_text("def length(prompts, completions, **columns):\n    return [float(len(c)) for c in completions]\n")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env() -> dict:
    env = dict(os.environ)
    env.update(GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT / "src"), str(PROJECT_ROOT), env.get("PYTHONPATH", "")])
    return env


def torchrun(nproc: int = 2, nnodes: int = 1, node_rank: int = 0, port: int | None = None) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--nnodes={nnodes}",
            f"--node_rank={node_rank}", "--master_addr=127.0.0.1", f"--master_port={port or free_port()}"]


def accelerate(*options: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--main_process_port", str(free_port()), *options]


def run(launcher: list[str], args: list[str], timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*launcher, "-m", "directalign", *args], env=launch_env(), capture_output=True,
                            text=True, timeout=timeout, cwd=PROJECT_ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun starts its ranks in sessions of their own, so a process-group kill
    of the launcher would leave them running)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def weights(folder: Path) -> dict[str, torch.Tensor]:
    for name in ("adapter/adapter_model.safetensors", "reward_model/adapter_model.safetensors",
                 "model/model.safetensors"):
        if (folder / name).is_file():
            return load_file(str(folder / name))
    raise AssertionError(f"no saved weights in {folder}")


def max_difference(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)
