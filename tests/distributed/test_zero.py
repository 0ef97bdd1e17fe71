"""DeepSpeed ZeRO-2 on 2 gloo processes (examples/accelerate/zero2.yaml): the weights of 1 process with twice the
batch, checkpoints in directalign's format (each process's partition as safetensors, in the manifest), a resume
bit-identical to the uninterrupted run, and a resume on another process count refused; KTO, online DPO and GRPO
(sampling from the policy) and the reward model train under ZeRO-2 what they train on 1 process."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
import torch

from directalign.config import load_config
from directalign.engine.checkpoint import verify
from directalign.errors import ConfigError
from directalign.training.dpo import train
from tests.conftest import PROJECT_ROOT
from tests.distributed.conftest import accelerate, max_difference, run
from tests.distributed.test_multiprocess import CASES, TOLERANCE, as_args, keys, single_process

pytestmark = [
    pytest.mark.multiprocess,
    pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                       reason="DeepSpeed is not installed (pip install 'directalign[deepspeed]')"),
]

ZERO2 = PROJECT_ROOT / "examples" / "accelerate" / "zero2.yaml"


def zero2(values: dict, command: str = "train"):
    return run(accelerate("--config_file", str(ZERO2)), [*command.split(), *as_args(values)])


def unfinished_copy(folder, target):
    """The run's folder as a kill after checkpoint-2 would have left it (its final outputs not yet written)."""
    shutil.copytree(folder, target)
    (target / "finished.json").unlink()
    shutil.rmtree(target / "adapter")
    return target


def test_zero2_trains_what_one_process_trains_and_resumes_bit_identical(tiny_model_dir, tmp_path):
    one = single_process(tiny_model_dir, tmp_path / "one", "dpo-shared", None)
    two = tmp_path / "zero2"
    values = {**keys(tiny_model_dir, two, "dpo-shared", 2), "save_steps": 2}  # checkpoint-2 of 3 steps
    result = zero2(values)
    assert "2 processes (gloo, ZeRO-2)" in result.stdout
    assert max_difference(one, two) <= TOLERANCE

    checkpoint = two / "checkpoint-2"
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    assert {"optimizer-rank0.safetensors", "optimizer-rank1.safetensors", "optimizer.json"} <= set(manifest)
    assert all(name.endswith((".safetensors", ".json")) for name in manifest)  # nothing to unpickle
    assert verify(checkpoint) is None
    assert json.loads((checkpoint / "optimizer.json").read_text())["zero"]["world"] == 2

    resumed = unfinished_copy(two, tmp_path / "resumed")
    result = zero2({**values, "output_dir": str(resumed)})
    assert "resuming from" in result.stdout
    assert max_difference(two, resumed) == 0.0

    elsewhere = unfinished_copy(two, tmp_path / "one-process")
    overrides = {**values, "output_dir": str(elsewhere)}
    with pytest.raises(ConfigError, match="written by a run of 2 processes; resume it with 2"):
        train(load_config("train", overrides=overrides))


@pytest.mark.parametrize("case", ["kto", "online-dpo", "grpo", "reward-model"])
def test_every_trainer_under_zero2_trains_what_one_process_trains(case, tiny_model_dir, tmp_path, reward_file):
    command, _, _, batch = CASES[case]
    one = single_process(tiny_model_dir, tmp_path / "one", case, reward_file)
    two = tmp_path / "zero2"
    assert "ZeRO-2" in zero2(keys(tiny_model_dir, two, case, batch, reward_file), command).stdout
    assert max_difference(one, two) <= TOLERANCE


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the nccl path of ZeRO-2)")
def test_zero2_on_cuda_trains_what_one_plain_process_trains(tiny_model_dir, tmp_path):
    one = single_process(tiny_model_dir, tmp_path / "one", "dpo-shared", None)  # on the GPU, batch 4
    processes = min(torch.cuda.device_count(), 2)
    two = tmp_path / "zero2"
    result = run(accelerate("--config_file", str(ZERO2), "--num_processes", str(processes)),
                 ["train", *as_args(keys(tiny_model_dir, two, "dpo-shared", 4 // processes))])
    assert "on cuda" in result.stdout and ("nccl, ZeRO-2" in result.stdout or processes == 1)
    assert max_difference(one, two) <= 1e-4
