"""DeepSpeed ZeRO-2 and ZeRO-3 on 2 gloo processes (examples/accelerate/zero2.yaml, zero3.yaml): the weights of 1
process with twice the batch, checkpoints in directalign's format (each process's partition as safetensors, in the
manifest), a resume bit-identical to the uninterrupted run, and a resume on another process count refused; KTO,
online DPO and GRPO (sampling from the policy) and the reward model train under ZeRO what they train on 1
process; under ZeRO-3 (parameters partitioned) also full fine-tuning and a KL-budget stop that restores the kept
weights."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
import torch

from directalign.config import load_config
from directalign.engine.checkpoint import verify
from directalign.engine.metrics import read_metrics
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

EXAMPLES = PROJECT_ROOT / "examples" / "accelerate"
STAGES = ["zero2", "zero3"]


def zero(stage: str, values: dict, command: str = "train"):
    return run(accelerate("--config_file", str(EXAMPLES / f"{stage}.yaml")), [*command.split(), *as_args(values)])


def unfinished_copy(folder, target):
    """The run's folder as a kill after checkpoint-2 would have left it (its final outputs not yet written)."""
    shutil.copytree(folder, target)
    (target / "finished.json").unlink()
    shutil.rmtree(target / "adapter")
    return target


@pytest.mark.parametrize("stage", STAGES)
def test_zero_trains_what_one_process_trains_and_resumes_bit_identical(stage, tiny_model_dir, tmp_path):
    one = single_process(tiny_model_dir, tmp_path / "one", "dpo-shared", None)
    two = tmp_path / stage
    values = {**keys(tiny_model_dir, two, "dpo-shared", 2), "save_steps": 2}  # checkpoint-2 of 3 steps
    result = zero(stage, values)
    assert f"2 processes (gloo, ZeRO-{stage[-1]})" in result.stdout
    assert "0.02M trainable of 1.6M parameters" in result.stdout  # counted whole, also from ZeRO-3's partitions
    assert max_difference(one, two) <= TOLERANCE

    checkpoint = two / "checkpoint-2"
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    assert {"optimizer-rank0.safetensors", "optimizer-rank1.safetensors", "optimizer.json"} <= set(manifest)
    assert all(name.endswith((".safetensors", ".json")) for name in manifest)  # nothing to unpickle
    assert verify(checkpoint) is None
    assert json.loads((checkpoint / "optimizer.json").read_text())["zero"]["world"] == 2

    resumed = unfinished_copy(two, tmp_path / "resumed")
    result = zero(stage, {**values, "output_dir": str(resumed)})
    assert "resuming from" in result.stdout
    assert max_difference(two, resumed) == 0.0

    elsewhere = unfinished_copy(two, tmp_path / "one-process")
    overrides = {**values, "output_dir": str(elsewhere)}
    with pytest.raises(ConfigError, match="written by a run of 2 processes; resume it with 2"):
        train(load_config("train", overrides=overrides))


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("case", ["kto", "online-dpo", "grpo", "reward-model"])
def test_every_trainer_under_zero_trains_what_one_process_trains(case, stage, tiny_model_dir, tmp_path, reward_file):
    command, _, _, batch = CASES[case]
    one = single_process(tiny_model_dir, tmp_path / "one", case, reward_file)
    two = tmp_path / stage
    assert f"ZeRO-{stage[-1]}" in zero(stage, keys(tiny_model_dir, two, case, batch, reward_file), command).stdout
    assert max_difference(one, two) <= TOLERANCE


def test_zero3_full_fine_tuning_trains_what_one_process_trains(tiny_model_dir, tmp_path):
    """Every weight partitioned and trained, the frozen reference a whole copy, model/ saved from the gathered
    parameters with the tied head written once (as on one process)."""
    full = {"use_peft": False, "learning_rate": 1e-4}
    one, three = tmp_path / "one", tmp_path / "zero3"
    train(load_config("train", overrides={**keys(tiny_model_dir, one, "dpo-shared", 4), **full}))
    assert "1.59M trainable" in zero("zero3", {**keys(tiny_model_dir, three, "dpo-shared", 2), **full}).stdout
    assert max_difference(one, three) <= TOLERANCE


def test_zero3_kl_budget_stop_restores_the_kept_weights(tiny_model_dir, tmp_path):
    """The held-out KL sampled with the parameters partitioned (every process sampling every prompt), the stop
    and the restored weights of the last eval within budget: those of one process."""
    stop = {"kl_budget": 1e-6, "eval_steps": 1, "kl_prompts": 2, "eval_before_training": True,
            "learning_rate": 5e-2}
    one, three = tmp_path / "one", tmp_path / "zero3"
    train(load_config("train", overrides={**keys(tiny_model_dir, one, "dpo-shared", 4), **stop}))
    zero("zero3", {**keys(tiny_model_dir, three, "dpo-shared", 2), **stop})
    stops = [e for e in read_metrics(three / "metrics.jsonl") if e.get("check") == "kl_budget"]
    assert stops and stops == [e for e in read_metrics(one / "metrics.jsonl") if e.get("check") == "kl_budget"]
    assert max_difference(one, three) <= TOLERANCE


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the nccl path of ZeRO)")
@pytest.mark.parametrize("stage", STAGES)
def test_zero_on_cuda_trains_what_one_plain_process_trains(stage, tiny_model_dir, tmp_path):
    one = single_process(tiny_model_dir, tmp_path / "one", "dpo-shared", None)  # on the GPU, batch 4
    processes = min(torch.cuda.device_count(), 2)
    two = tmp_path / stage
    result = run(accelerate("--config_file", str(EXAMPLES / f"{stage}.yaml"), "--num_processes", str(processes)),
                 ["train", *as_args(keys(tiny_model_dir, two, "dpo-shared", 4 // processes))])
    assert "on cuda" in result.stdout and (f"nccl, ZeRO-{stage[-1]}" in result.stdout or processes == 1)
    assert max_difference(one, two) <= 1e-4
