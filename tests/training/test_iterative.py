"""Iterative DPO on a tiny model: rounds, pairs files, the moving reference, resuming a round, the saved model."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from directalign.config import load_config
from directalign.data.batching import build_batch
from directalign.data.formats import CONVERSATIONAL, load_records
from directalign.data.types import TokenizedRecord
from directalign.engine.metrics import read_metrics
from directalign.models.logprobs import ResponseLogProbs, sequence_logps
from directalign.models.policy import build_policy
from directalign.training.dpo import train
from directalign.training.iterative import iterative_dpo, move_reference, rounds_table
from tests.training.test_online import length_reward, onpolicy_config


def test_rounds_write_pairs_metrics_and_a_loadable_model(tiny_model_dir, tmp_path):
    cfg = onpolicy_config(tiny_model_dir, tmp_path / "run", command="iterative-dpo", num_rounds=2,
                          prompts_per_round=4, max_steps=-1, builtin_train_prompts=8)
    result = iterative_dpo(cfg, length_reward)
    out = tmp_path / "run"
    assert [e["round"] for e in result.history] == [0, 1, 2]
    assert all("reward" in e and "kl" in e for e in result.history)
    events = read_metrics(out / "metrics.jsonl")
    for n in (1, 2):
        loaded = load_records(out / f"round_{n}" / "pairs.jsonl")
        assert loaded.schema == CONVERSATIONAL
        sampled = next(e for e in events if e["split"] == "sample" and e["round"] == n)
        assert sampled["pairs"] == len(loaded.records) > 0
        train_events = [e for e in events if e["split"] == "train" and e["round"] == n]
        assert len(train_events) == 2  # 4 pairs, batch 2, one epoch
        assert (out / f"round_{n}" / "round.json").is_file() and not list((out / f"round_{n}").glob("checkpoint-*"))
    assert [e["step"] for e in events if e["split"] == "train"] == [1, 2, 3, 4]
    assert AutoModelForCausalLM.from_pretrained(out / "model") is not None  # merged: opens without peft
    assert (out / "model" / "README.md").is_file() and (out / "finished.json").is_file()
    table = rounds_table(result.history)
    assert table.splitlines()[0].split()[:3] == ["round", "reward", "KL"] and len(table.splitlines()) == 4


def test_move_reference_makes_the_policy_the_new_reference(tiny_model_dir):
    cfg = load_config("iterative-dpo", overrides={"model": str(tiny_model_dir)})
    policy = ResponseLogProbs(build_policy(cfg))
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # a trained adapter
    batch = build_batch([TokenizedRecord([1, 5, 9], [[20, 21, 2]], pairs=[])], 0)
    with torch.no_grad():
        trained = sequence_logps(policy(batch), batch)
        moved, reference = move_reference(cfg, policy, round_number=1)
        torch.testing.assert_close(reference.sequence_logps(batch), trained)
        torch.testing.assert_close(sequence_logps(moved(batch), batch), trained)  # fresh LoRA: no change
        again, _ = move_reference(cfg, ResponseLogProbs(build_policy(cfg)), round_number=1)
    first = {n: p for n, p in moved.named_parameters() if "lora_A" in n}
    second = {n: p for n, p in again.named_parameters() if "lora_A" in n}
    assert all(torch.equal(first[n], second[n]) for n in first)  # each round's fresh adapter is seeded


def test_fixed_reference_keeps_one_adapter(tiny_model_dir, tmp_path):
    cfg = onpolicy_config(tiny_model_dir, tmp_path / "run", command="iterative-dpo", num_rounds=2,
                          prompts_per_round=2, update_reference=False, max_steps=1, kl_prompts=0)
    result = iterative_dpo(cfg, length_reward)
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    assert not (tmp_path / "run" / "model").exists()
    assert result.eval_after["round"] == 2


def test_a_killed_round_resumes_to_the_same_model(tiny_model_dir, tmp_path):
    settings = dict(command="iterative-dpo", num_rounds=2, prompts_per_round=4, max_steps=3,
                    per_device_train_batch_size=1, save_steps=1, builtin_train_prompts=8, kl_prompts=0)
    iterative_dpo(onpolicy_config(tiny_model_dir, tmp_path / "full", **settings), length_reward)

    def kill_in_round_two(step, metrics):
        if step == 5:  # round 2's second step, just after its checkpoint-2
            raise KeyboardInterrupt

    killed = onpolicy_config(tiny_model_dir, tmp_path / "killed", **settings)
    with pytest.raises(KeyboardInterrupt):
        iterative_dpo(killed, length_reward, on_step=kill_in_round_two)
    assert (tmp_path / "killed" / "round_1" / "round.json").is_file()
    assert (tmp_path / "killed" / "round_2" / "rollout.json").is_file()
    assert (tmp_path / "killed" / "round_2" / "checkpoint-2").is_dir()
    assert not (tmp_path / "killed" / "round_2" / "round.json").exists()
    iterative_dpo(killed, length_reward)
    full = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "model" / "model.safetensors"))
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)
    steps = [e["step"] for e in read_metrics(tmp_path / "killed" / "metrics.jsonl") if e["split"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_pairs_file_trains_with_directalign_train(tiny_model_dir, tmp_path):
    cfg = onpolicy_config(tiny_model_dir, tmp_path / "run", command="iterative-dpo", num_rounds=1,
                          prompts_per_round=4, max_steps=1, kl_prompts=0, eval_before_training=False)
    iterative_dpo(cfg, length_reward)
    pairs = tmp_path / "run" / "round_1" / "pairs.jsonl"
    offline = load_config("train", overrides=dict(model=str(tiny_model_dir), data=str(pairs), max_steps=1,
                                                  output_dir=str(tmp_path / "off"), eval_split=0.0, save_steps=0,
                                                  kl_prompts=0))
    assert train(offline).steps == 1
