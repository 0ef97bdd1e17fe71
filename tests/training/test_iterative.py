"""Iterative DPO on a tiny model: rounds, pairs files, the moving reference and the saved model."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from directalign.data.batching import build_batch
from directalign.data.formats import CONVERSATIONAL, load_records
from directalign.data.types import TokenizedRecord
from directalign.models.logprobs import sequence_logps
from directalign.training.iterative import iterative_dpo, move_reference, rounds_table
from directalign.training.metrics import read_metrics
from directalign.training.rollout import OnPolicyRun
from tests.training.test_online import length_reward, onpolicy_config


def test_rounds_write_pairs_metrics_and_a_loadable_model(tiny_model_dir, tmp_path):
    cfg = onpolicy_config(tiny_model_dir, tmp_path / "run", method="iterative-dpo", num_rounds=2,
                          prompts_per_round=4, max_steps=-1, builtin_train_prompts=8)
    result = iterative_dpo(cfg, length_reward)
    out = tmp_path / "run"
    assert [e["round"] for e in result.history] == [0, 1, 2]
    assert all("reward" in e and "kl" in e for e in result.history)
    for n in (1, 2):
        loaded = load_records(out / f"round_{n}" / "pairs.jsonl")
        assert loaded.schema == CONVERSATIONAL
        sampled = next(e for e in read_metrics(out / f"round_{n}" / "metrics.jsonl") if e["split"] == "sample")
        assert sampled["pairs"] == len(loaded.records) > 0
        train = [e for e in read_metrics(out / f"round_{n}" / "metrics.jsonl") if e["split"] == "train"]
        assert len(train) == 2  # 4 pairs, batch 2, one epoch
    steps = [e["step"] for e in read_metrics(out / "metrics.jsonl") if e["split"] == "train"]
    assert steps == [1, 2, 3, 4]
    assert AutoModelForCausalLM.from_pretrained(out / "model") is not None  # merged: opens without peft
    table = rounds_table(result.history)
    assert table.splitlines()[0].split()[:3] == ["round", "reward", "KL"] and len(table.splitlines()) == 4


def test_move_reference_makes_the_policy_the_new_reference(tiny_model_dir, tmp_path):
    cfg = onpolicy_config(tiny_model_dir, tmp_path / "run", method="iterative-dpo")
    run = OnPolicyRun(cfg, length_reward, frozen_start=True)
    with torch.no_grad():
        for name, param in run.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # a trained adapter
    batch = build_batch([TokenizedRecord([1, 5, 9], [[20, 21, 2]], pairs=[])], run.tokenizer.pad_token_id)
    with torch.no_grad():
        trained = sequence_logps(run.policy(batch), batch)
        start = run.kl_reference.sequence_logps(batch)
        assert not torch.allclose(trained, run.reference.sequence_logps(batch))
        move_reference(run)
        torch.testing.assert_close(run.reference.sequence_logps(batch), trained)
        torch.testing.assert_close(sequence_logps(run.policy(batch), batch), trained)  # fresh LoRA: no change
        torch.testing.assert_close(run.kl_reference.sequence_logps(batch), start)  # KL still to the start


def test_fixed_reference_keeps_one_adapter(tiny_model_dir, tmp_path):
    cfg = onpolicy_config(tiny_model_dir, tmp_path / "run", method="iterative-dpo", num_rounds=2, prompts_per_round=2,
                          update_reference=False, max_steps=1, kl_prompts=0)
    result = iterative_dpo(cfg, length_reward)
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    assert not (tmp_path / "run" / "model").exists()
    assert result.eval_after["round"] == 2


def test_pairs_file_trains_with_directalign_train(tiny_model_dir, tmp_path):
    from directalign.training.config import load_config
    from directalign.training.loop import train

    cfg = onpolicy_config(tiny_model_dir, tmp_path / "run", method="iterative-dpo", num_rounds=1, prompts_per_round=4,
                          max_steps=1, kl_prompts=0, eval_before_training=False)
    iterative_dpo(cfg, length_reward)
    pairs = tmp_path / "run" / "round_1" / "pairs.jsonl"
    offline = load_config(overrides=dict(model=str(tiny_model_dir), data=str(pairs), output_dir=str(tmp_path / "off"),
                                         max_steps=1, eval_split=0.0, save_steps=0, kl_prompts=0))
    assert train(offline).steps == 1
