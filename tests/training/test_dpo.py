"""`train` (the DPO-family recipe on the run engine) on a tiny random model with the real tokenizer."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from directalign.config import load_config
from directalign.engine.metrics import read_metrics
from directalign.errors import TrainingError
from directalign.training import dpo as dpo_module
from directalign.training.dpo import train

TRAIN_METRICS = [
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
    "kl",
    "lengths/chosen",
    "lengths/rejected",
    "grad_norm",
    "learning_rate",
    "tokens_per_s",
    "pairs_per_s",
    "num_processes",
]


def _cfg(tiny_model_dir, out, **kw):
    base = dict(
        model=str(tiny_model_dir),
        output_dir=str(out),
        max_steps=4,
        logging_steps=1,
        builtin_train_pairs=16,
        builtin_eval_pairs=8,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        save_steps=2,
        seed=3,
    )
    return load_config("train", overrides={**base, **kw})


def test_train_writes_metrics_adapter_and_eval(tiny_model_dir, tmp_path):
    result = train(_cfg(tiny_model_dir, tmp_path / "run"))
    events = read_metrics(tmp_path / "run" / "metrics.jsonl")
    train_events = [e for e in events if e["split"] == "train"]
    assert [e["step"] for e in train_events] == [1, 2, 3, 4]
    for key in TRAIN_METRICS:
        assert all(isinstance(e[key], int | float) for e in train_events), key
    assert {e["num_processes"] for e in train_events} == {1}
    assert [e["tag"] for e in events if e["split"] == "eval"] == ["before", "after"]
    assert result.eval_before["implicit_accuracy"] == 0.5  # policy == reference: every margin is a tie
    assert result.eval_after["mean_margin"] != 0.0
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    # At step 1 the LoRA B matrices are zero: policy == reference, so the first loss is exactly log 2.
    assert train_events[0]["loss"] == pytest.approx(0.693147, abs=1e-5)
    assert train_events[-1]["loss"] < train_events[0]["loss"]


def test_killed_run_resumes_to_identical_weights(tiny_model_dir, tmp_path):
    train(_cfg(tiny_model_dir, tmp_path / "full", gradient_accumulation_steps=2))

    def kill_after_step_3(step, metrics):
        if step == 3:
            raise KeyboardInterrupt

    interrupted = _cfg(tiny_model_dir, tmp_path / "killed", gradient_accumulation_steps=2)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, on_step=kill_after_step_3)
    assert [p.name for p in (tmp_path / "killed").glob("checkpoint-*")] == ["checkpoint-2"]
    train(interrupted)
    full = load_file(str(tmp_path / "full" / "adapter" / "adapter_model.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "adapter" / "adapter_model.safetensors"))
    assert full.keys() == resumed.keys()
    for name in full:
        assert torch.equal(full[name], resumed[name]), name
    steps = [e["step"] for e in read_metrics(tmp_path / "killed" / "metrics.jsonl") if e["split"] == "train"]
    assert steps == [1, 2, 3, 4]  # the step logged after the checkpoint was dropped, then logged again


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    real = dpo_module.pair_loss
    calls = {"n": 0}

    def poisoned(cfg, terms):
        calls["n"] += 1
        loss, c, r = real(cfg, terms)
        return (loss * float("nan") if calls["n"] == 3 else loss), c, r

    monkeypatch.setattr(dpo_module, "pair_loss", poisoned)
    with pytest.raises(TrainingError, match=r"non-finite loss .* step 3.*checkpoint-2"):
        train(_cfg(tiny_model_dir, tmp_path / "run"))
    assert (tmp_path / "run" / "checkpoint-2" / "trainer_state.json").is_file()


def test_reference_free_loss_builds_no_reference(tiny_model_dir, tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a reference was built for a reference-free loss")

    monkeypatch.setattr(dpo_module, "live_reference", forbidden)
    monkeypatch.setattr(dpo_module, "precompute_reference", forbidden)
    result = train(_cfg(tiny_model_dir, tmp_path / "run", loss_type="simpo", beta=2.0))
    assert "implicit_accuracy" not in result.eval_after and "logp_accuracy" in result.eval_after


def test_merged_model_loads_with_plain_from_pretrained(tiny_model_dir, tmp_path):
    train(_cfg(tiny_model_dir, tmp_path / "run", merge=True, max_steps=2))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "merged")
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapted = PeftModel.from_pretrained(base, tmp_path / "run" / "adapter")
    ids = torch.tensor([[5, 17, 300, 42]])
    torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, atol=1e-5, rtol=1e-4)
    untouched = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not torch.allclose(merged(ids).logits, untouched(ids).logits)


def test_bf16_run_keeps_the_adapter_fp32_and_merges_into_the_fp32_base(tiny_model_dir, tmp_path):
    result = train(_cfg(tiny_model_dir, tmp_path / "run", bf16=True, merge=True, max_steps=2))
    assert result.eval_after["mean_margin"] != 0.0
    from peft import PeftModel
    from safetensors.torch import load_file

    adapter = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    assert {t.dtype for t in adapter.values()} == {torch.float32}
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "merged")
    assert {p.dtype for p in merged.parameters()} == {torch.float32}
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapted = PeftModel.from_pretrained(base, tmp_path / "run" / "adapter")
    ids = torch.tensor([[5, 17, 300, 42]])
    torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, atol=1e-5, rtol=1e-4)


def test_bf16_full_finetuning_keeps_a_bf16_frozen_reference_and_fp32_weights(tiny_model_dir, tmp_path):
    from directalign.models.policy import build_policy
    from directalign.models.reference import frozen_copy

    cfg = _cfg(tiny_model_dir, tmp_path / "run", use_peft=False, bf16=True, precompute_ref_log_probs=False,
               max_steps=2, learning_rate=1e-3)
    policy = build_policy(cfg)
    reference = frozen_copy(policy, cfg.bf16)
    frozen = reference.scorer.model.model.layers[0].mlp.down_proj
    assert frozen.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in policy.parameters())  # the trained weights stay fp32
    result = train(cfg)
    assert result.eval_after["mean_margin"] != 0.0


def test_ranked_file_trains_on_every_pair_it_defines(tiny_model_dir, tmp_path):
    rows = [{"prompt": f"Question {i}?", "responses": [f"best {i}", f"good {i}", f"bad {i}"], "ranks": [0, 1, 2]}
            for i in range(6)]
    path = tmp_path / "ranked.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    held_out = tmp_path / "held.jsonl"
    held_out.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    result = train(_cfg(tiny_model_dir, tmp_path / "run", data=str(path), eval_data=str(held_out), max_steps=1,
                        kl_prompts=0))
    assert result.eval_after["n_pairs"] == 6  # 2 prompts x 3 ordered pairs, each prompt computed once
    assert result.eval_after["mean_margin"] != 0.0


def test_full_finetuning_uses_a_frozen_reference(tiny_model_dir, tmp_path):
    result = train(_cfg(tiny_model_dir, tmp_path / "run", use_peft=False, max_steps=2, learning_rate=1e-3))
    assert result.eval_after["mean_margin"] != 0.0
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["use_peft"] is False
