"""The real embedded SmolLM2-135M-Instruct as a reward model on real hh-rlhf pairs (LoRA, a dozen steps)."""

import gzip

import pytest

from directalign.config import load_config
from directalign.reward_models.scoring import RewardModel
from directalign.reward_models.trainer import train_reward_model

pytestmark = pytest.mark.integration


def test_reward_model_fits_real_hh_rlhf_pairs(hh_rlhf_file, tmp_path):
    subset = tmp_path / "hh-8.jsonl"
    with gzip.open(hh_rlhf_file, "rt", encoding="utf-8") as f:
        subset.write_text("".join(next(f) for _ in range(8)))
    # Trained and evaluated on the same 8 pairs: a test-sized run can show fitting, not generalisation (the
    # README gives the held-out accuracy of a longer run).
    cfg = load_config("reward-model train", overrides=dict(
        data=str(subset),
        eval_data=str(subset),
        output_dir=str(tmp_path / "rm"),
        max_steps=12,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        lora_layers=4,
        max_length=128,
        max_prompt_length=96,
        logging_steps=4,
        warmup_ratio=0.0,
    ))
    result = train_reward_model(cfg)
    before, after = result.eval_before, result.eval_after
    assert after["n_pairs"] == 8
    assert after["loss"] < before["loss"] - 0.1
    assert after["accuracy"] > 0.5 and after["mean_margin"] > before["mean_margin"]
    scores = RewardModel.load(result.output_dir).score(["Hi"], ["Hello! How can I help?"])
    assert len(scores) == 1
