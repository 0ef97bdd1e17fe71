"""The fault suite's trainers on tiny models: each one's keys, its library function, and a killed run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from directalign.config import load_config
from directalign.reward_models.trainer import train_reward_model
from directalign.training.dpo import train
from directalign.training.grpo import grpo
from directalign.training.iterative import iterative_dpo
from directalign.training.online import online_dpo
from tests.conftest import PROJECT_ROOT
from tests.distributed.conftest import launch_env

KILLER = Path(__file__).with_name("killer.py")
COMMON = {"max_steps": 4, "save_steps": 1, "logging_steps": 1, "seed": 3, "learning_rate": 1e-3,
          "per_device_train_batch_size": 2, "eval_before_training": False}
ONPOLICY = {"builtin_train_prompts": 8, "builtin_eval_prompts": 2, "num_generations": 2, "max_new_tokens": 4,
            "kl_prompts": 0}
PAIRS = {"builtin_train_pairs": 12, "builtin_eval_pairs": 4, "max_length": 96, "max_prompt_length": 64}
# trainer -> (command, library function, its keys)
TRAINERS = {
    "dpo": ("train", train, {**PAIRS, "kl_prompts": 0}),
    "kto": ("train", train, {**PAIRS, "kl_prompts": 0, "loss_type": "kto"}),
    "online-dpo": ("online-dpo", online_dpo, ONPOLICY),
    "grpo": ("grpo", grpo, {**ONPOLICY, "beta": 0.1}),
    "iterative-dpo": ("iterative-dpo", iterative_dpo, {**ONPOLICY, "num_rounds": 2, "prompts_per_round": 2,
                                                        "max_steps": 2}),
    "reward-model": ("reward-model train", train_reward_model, PAIRS),
}


@pytest.fixture(scope="session")
def reward_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rewards") / "length_reward.py"
    path.write_text("def length(prompts, completions, **columns):\n    return [float(len(c)) for c in completions]\n")
    return path


def values(trainer: str, model: Path, out: Path, reward_file: Path, **extra) -> dict:
    command, _, keys = TRAINERS[trainer]
    found = {**COMMON, **keys, "model": str(model), "output_dir": str(out), **extra}
    if command in ("online-dpo", "grpo", "iterative-dpo"):
        found["reward_funcs"] = f"{reward_file}:length"
    return found


def run_library(trainer: str, found: dict):
    command, function, _ = TRAINERS[trainer]
    return function(load_config(command, overrides=found))


def as_args(found: dict) -> list[str]:
    return [token for k, v in found.items() for token in (f"--{k.replace('_', '-')}", str(v))]


def run_killed(trainer: str, found: dict, point: str, n: int) -> subprocess.CompletedProcess:
    """The trainer as `directalign ...` in a process that SIGKILLs itself at the nth time it reaches `point`."""
    command = TRAINERS[trainer][0].split()
    # The same intra-op thread count as the in-process runs it is compared with: a CPU matmul's reduction order
    # depends on it, so 1 thread against 2 differs in the last bits, which is not what the test is about.
    env = {**launch_env(), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.run([sys.executable, str(KILLER), point, str(n), *command, *as_args(found)],
                          env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
