"""Every trainer on 2 gloo processes means what it means on 1: after 3 steps, 2 processes with per-device batch b
hold the weights of 1 process with batch 2b (fp32, max abs difference <= 1e-5); a 2-process run killed with
kill -9 resumes to the weights of an uninterrupted one, bit for bit; two nodes simulated on one machine match the
single-node run; accelerate launch works, and its CPU launcher's single process is refused; FSDP2 on gloo gives
DDP's weights, and online DPO (judged) and GRPO, which sample before their first training forward, give the
weights of one process.

The 1-process references run in this process through the library; the multi-process runs are real launches.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time

import pytest

from directalign.config import load_config
from directalign.engine.metrics import read_metrics
from directalign.reward_models.trainer import train_reward_model
from directalign.training.dpo import train
from directalign.training.grpo import grpo
from directalign.training.online import online_dpo
from tests.conftest import PROJECT_ROOT
from tests.distributed.conftest import (
    accelerate,
    descendants,
    free_port,
    launch_env,
    max_difference,
    run,
    torchrun,
)

pytestmark = pytest.mark.multiprocess

TOLERANCE = 1e-5
COMMON = {"max_steps": 3, "logging_steps": 1, "seed": 3, "learning_rate": 1e-3, "save_steps": 0,
          "eval_before_training": False, "kl_prompts": 0}
ONPOLICY = {"builtin_train_prompts": 8, "builtin_eval_prompts": 2, "num_generations": 3, "max_new_tokens": 6}

# command, the library function, its keys, the per-device batch of the 2-process run
CASES = {
    "dpo-shared": ("train", train, {"builtin_train_pairs": 16, "builtin_eval_pairs": 6,
                                    "gradient_accumulation_steps": 2}, 2),
    "dpo-packed": ("train", train, {"builtin_train_pairs": 16, "builtin_eval_pairs": 6, "layout": "packed",
                                    "max_tokens_per_row": 256}, 2),
    "kto": ("train", train, {"loss_type": "kto", "builtin_train_pairs": 12, "builtin_eval_pairs": 4}, 4),
    "online-dpo": ("online-dpo", online_dpo, ONPOLICY, 1),
    "online-dpo-judged": ("online-dpo", online_dpo, ONPOLICY, 1),  # pairs from a judge, each process its share
    "grpo": ("grpo", grpo, {**ONPOLICY, "beta": 0.1, "num_iterations": 2}, 1),
    "reward-model": ("reward-model train", train_reward_model, {"builtin_train_pairs": 16, "builtin_eval_pairs": 6,
                                                                 "max_length": 96, "max_prompt_length": 64}, 2),
}


def keys(tiny_model_dir, out, case: str, batch: int, reward_file=None) -> dict:
    command, _, extra, _ = CASES[case]
    values = {**COMMON, **extra, "model": str(tiny_model_dir), "output_dir": str(out),
              "per_device_train_batch_size": batch}
    if command in ("online-dpo", "grpo"):
        values["reward_funcs"] = f"{reward_file}:length"
    if case.endswith("-judged"):
        values["judge"] = f"reward:{reward_file}:length"
    if command == "reward-model train":
        del values["kl_prompts"]  # a reward model samples nothing: not one of its keys
    return values


def as_args(values: dict) -> list[str]:
    return [token for k, v in values.items() for token in (f"--{k.replace('_', '-')}", str(v))]


def single_process(tiny_model_dir, out, case, reward_file):
    command, fn, _, batch = CASES[case]
    fn(load_config(command, overrides=keys(tiny_model_dir, out, case, 2 * batch, reward_file)))
    return out


@pytest.mark.parametrize("case", [c for c in CASES if c != "dpo-shared"])
def test_two_processes_train_what_one_process_with_twice_the_batch_trains(case, tiny_model_dir, tmp_path,
                                                                          reward_file):
    command, _, _, batch = CASES[case]
    one = single_process(tiny_model_dir, tmp_path / "one", case, reward_file)
    two = tmp_path / "two"
    run(torchrun(), [*command.split(), *as_args(keys(tiny_model_dir, two, case, batch, reward_file))])
    assert max_difference(one, two) <= TOLERANCE
    train_one = [e for e in read_metrics(one / "metrics.jsonl") if e["split"] == "train"]
    train_two = [e for e in read_metrics(two / "metrics.jsonl") if e["split"] == "train"]
    assert [e["num_processes"] for e in train_two] == [2, 2, 2] and train_one[0]["num_processes"] == 1
    for a, b in zip(train_one, train_two, strict=True):  # metrics reduced over processes, weighted by counts
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
        if case.endswith("-judged"):  # every pair judged once, by the process that sampled it
            assert a["judge/calls"] > 0 and b["judge/calls"] == a["judge/calls"]
    eval_one = [e for e in read_metrics(one / "metrics.jsonl") if e["split"] == "eval"]
    eval_two = [e for e in read_metrics(two / "metrics.jsonl") if e["split"] == "eval"]
    for key, value in eval_one[-1].items():  # the held-out eval shared out and pooled
        if isinstance(value, float):
            assert eval_two[-1][key] == pytest.approx(value, abs=1e-4), key


@pytest.fixture(scope="module")
def accelerate_run(tiny_model_dir, tmp_path_factory, reward_file):
    """DPO (shared layout, 2 micro-batches a step) on 2 processes through `accelerate launch --multi_gpu`."""
    out = tmp_path_factory.mktemp("accelerate") / "run"
    _, _, _, batch = CASES["dpo-shared"]
    result = run(accelerate("--multi_gpu", "--num_processes", "2"),
                 ["train", *as_args(keys(tiny_model_dir, out, "dpo-shared", batch))])
    return out, result


def test_accelerate_launch_trains_what_one_process_trains(accelerate_run, tiny_model_dir, tmp_path, reward_file):
    two, result = accelerate_run
    one = single_process(tiny_model_dir, tmp_path / "one", "dpo-shared", reward_file)
    assert max_difference(one, two) <= TOLERANCE
    assert "2 processes (gloo)" in result.stdout
    assert result.stdout.count("outputs:") == 1  # only the main process prints the results


def test_two_simulated_nodes_match_the_single_node_run(accelerate_run, tiny_model_dir, tmp_path):
    single, _ = accelerate_run
    out = tmp_path / "nodes"
    _, _, _, batch = CASES["dpo-shared"]
    args = ["-m", "directalign", "train", *as_args(keys(tiny_model_dir, out, "dpo-shared", batch))]
    port = free_port()
    launchers = [torchrun(1, nnodes=2, node_rank=rank, port=port) for rank in (0, 1)]
    nodes = [subprocess.Popen([*launcher, *args], env=launch_env(), cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for launcher in launchers]
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    assert max_difference(single, out) <= 1e-7
    assert {e["num_processes"] for e in read_metrics(out / "metrics.jsonl") if e["split"] == "train"} == {2}


def test_a_launcher_that_starts_fewer_processes_than_asked_fails_loudly(tiny_model_dir, tmp_path):
    result = run(accelerate("--cpu", "--num_processes", "2"),
                 ["train", "--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "run")], check=False)
    assert result.returncode == 1
    assert "error: accelerate launch --num_processes asked for 2 processes but the run has 1" in result.stderr
    assert "torch.distributed.run --nproc_per_node 2" in result.stderr  # what to run instead
    assert "directalign/" not in result.stderr  # no traceback of ours (accelerate prints its own)
    assert not (tmp_path / "run").exists()


def test_a_killed_two_process_run_resumes_bit_identical(tiny_model_dir, tmp_path):
    # Long enough (tiny steps take a fraction of a second) that the kill lands mid-run.
    values = {**keys(tiny_model_dir, tmp_path / "full", "dpo-shared", 2), "max_steps": 30, "save_steps": 1,
              "builtin_train_pairs": 64}
    run(torchrun(), ["train", *as_args(values)])
    killed = tmp_path / "killed"
    values["output_dir"] = str(killed)
    command = [*torchrun(), "-m", "directalign", "train", *as_args(values)]
    process = subprocess.Popen(command, env=launch_env(), cwd=PROJECT_ROOT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (killed / "checkpoint-2" / "manifest.json").is_file():
        assert process.poll() is None and time.time() < deadline, "the run ended before its second checkpoint"
        time.sleep(0.05)
    for pid in [process.pid, *descendants(process.pid)]:  # the launcher and both ranks, mid-run
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "finished.json").exists()
    resumed = run(torchrun(), ["train", *as_args(values)])
    assert "resuming from" in resumed.stdout and "taking over the lock" in resumed.stdout
    assert max_difference(tmp_path / "full", killed) == 0.0
    steps = [e["step"] for e in read_metrics(killed / "metrics.jsonl") if e["split"] == "train"]
    assert steps == list(range(1, 31))


def test_fsdp2_on_gloo_gives_the_weights_of_data_parallel(accelerate_run, tiny_model_dir, tmp_path):
    single, _ = accelerate_run
    out = tmp_path / "fsdp"
    _, _, _, batch = CASES["dpo-shared"]
    config = PROJECT_ROOT / "examples" / "accelerate" / "fsdp2.yaml"
    result = run(accelerate("--config_file", str(config)),
                 ["train", *as_args({**keys(tiny_model_dir, out, "dpo-shared", batch), "save_steps": 2})])
    assert "2 processes (gloo, FSDP2)" in result.stdout
    assert max_difference(single, out) <= TOLERANCE
    manifest = json.loads((out / "finished.json").read_text())
    assert "adapter/adapter_model.safetensors" in manifest["outputs"]


@pytest.mark.parametrize("case", ["online-dpo-judged", "grpo"])
def test_fsdp2_sampling_trainers_give_the_single_process_weights(case, tiny_model_dir, tmp_path, reward_file):
    """Generation under FSDP2 (parameters gathered around sampling, before any training forward) and, for online
    DPO, the judge on each process's share."""
    one = single_process(tiny_model_dir, tmp_path / "one", case, reward_file)
    out = tmp_path / "fsdp"
    command, _, _, batch = CASES[case]
    config = PROJECT_ROOT / "examples" / "accelerate" / "fsdp2.yaml"
    result = run(accelerate("--config_file", str(config)),
                 [command, *as_args(keys(tiny_model_dir, out, case, batch, reward_file))])
    assert "2 processes (gloo, FSDP2)" in result.stdout
    assert max_difference(one, out) <= TOLERANCE
    if case.endswith("-judged"):
        calls_one = [e["judge/calls"] for e in read_metrics(one / "metrics.jsonl") if e["split"] == "train"]
        calls_two = [e["judge/calls"] for e in read_metrics(out / "metrics.jsonl") if e["split"] == "train"]
        assert calls_one and calls_two == calls_one
