"""GRPO training on a tiny model: per-token layout, advantages in the loop, KL, clipping with num_iterations."""

from __future__ import annotations

import pytest
import torch

from directalign.data.batching import build_batch
from directalign.data.types import TokenizedRecord
from directalign.engine.metrics import read_metrics
from directalign.training import grpo as grpo_module
from directalign.training.grpo import grpo, per_response_tokens
from tests.training.test_online import length_reward, onpolicy_config

RECORDS = [
    TokenizedRecord([1, 2], [[3, 4, 5], [6]], pairs=[]),
    TokenizedRecord([7, 8, 9, 10, 11, 12], [[13, 14]], pairs=[]),
    TokenizedRecord([15], [[16, 17, 18, 19], [20, 21]], pairs=[]),
]


@pytest.mark.parametrize("layout", ["shared", "padded", "packed"])
def test_per_response_tokens_in_every_layout(layout):
    batch = build_batch(RECORDS, 0, layout, max_tokens_per_row=12)
    values, mask = per_response_tokens(batch.gather_labels.float(), batch)
    # Each response's tokens, in order, left-aligned: the labels are the response tokens themselves.
    expected = [[3, 4, 5, 0], [6, 0, 0, 0], [13, 14, 0, 0], [16, 17, 18, 19], [20, 21, 0, 0]]
    assert values.tolist() == expected
    assert mask.tolist() == [[int(v != 0) for v in row] for row in expected]


def grpo_events(path):
    return [e for e in read_metrics(path / "metrics.jsonl") if e["split"] == "train"]


def test_grpo_logs_rewards_kl_lengths_and_clipping(tiny_model_dir, tmp_path):
    result = grpo(onpolicy_config(tiny_model_dir, tmp_path / "run", command="grpo", beta=0.04), length_reward)
    events = grpo_events(tmp_path / "run")
    assert [e["step"] for e in events] == [1, 2]
    for key in ("reward", "reward_std", "rewards/length_reward/mean", "rewards/length_reward/std", "kl",
                "frac_reward_zero_std", "clip_ratio", "completions/mean_length", "completions/clipped_ratio", "loss"):
        assert key in events[0], key
    assert events[0]["kl"] == pytest.approx(0.0, abs=1e-7)  # LoRA B = 0 at step 1: policy == reference
    assert events[1]["kl"] > 0
    assert all(e["clip_ratio"] == 0.0 for e in events)  # one update per generation batch: ratio 1, never clipped
    assert result.eval_after is not None and (tmp_path / "run" / "adapter").is_dir()


def test_several_updates_per_batch_clip(tiny_model_dir, tmp_path):
    cfg = onpolicy_config(tiny_model_dir, tmp_path / "run", command="grpo", beta=0.0, num_iterations=4,
                          learning_rate=0.05, max_steps=1, eval_before_training=False, kl_prompts=0)
    grpo(cfg, length_reward)
    (event,) = grpo_events(tmp_path / "run")
    assert event["clip_ratio"] > 0  # later updates push ratios past 1 +- epsilon
    assert "kl" not in event  # beta = 0: no reference pass


def test_beta_zero_runs_no_reference(tiny_model_dir, tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a reference pass ran with beta = 0")

    monkeypatch.setattr(grpo_module, "as_reference", forbidden)
    cfg = onpolicy_config(tiny_model_dir, tmp_path / "run", command="grpo", beta=0.0, max_steps=1, kl_prompts=0)
    grpo(cfg, length_reward)


def test_equal_rewards_teach_nothing(tiny_model_dir, tmp_path):
    cfg = onpolicy_config(tiny_model_dir, tmp_path / "run", command="grpo", beta=0.0, max_steps=1, kl_prompts=0,
                          eval_before_training=False)
    grpo(cfg, lambda prompts, completions, **c: [0.5] * len(completions))
    (event,) = grpo_events(tmp_path / "run")
    assert event["frac_reward_zero_std"] == 1.0 and event["loss"] == 0.0 and event["grad_norm"] == 0.0


def test_cli_grpo_with_a_reward_function_file(tiny_model_dir, tmp_path, capsys):
    from directalign.cli.main import main

    rewards = tmp_path / "my_rewards.py"
    rewards.write_text("def brevity(prompts, completions, **columns):\n"
                       "    return [1.0 / (1 + len(c)) for c in completions]\n")
    code = main(["grpo", "--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "run"),
                 "--reward-funcs", f"builtin,{rewards}:brevity", "--reward-weights", "1,0.5", "--max-steps", "1",
                 "--builtin-train-prompts", "2", "--builtin-eval-prompts", "2", "--per-device-train-batch-size", "2",
                 "--num-generations", "2", "--max-new-tokens", "4", "--kl-prompts", "0"])
    assert code == 0
    assert "held-out" in capsys.readouterr().out
    (event,) = grpo_events(tmp_path / "run")
    assert {"rewards/builtin_reward/mean", "rewards/brevity/mean"} <= event.keys()
    assert torch.isfinite(torch.tensor(event["loss"]))
