"""Bradley-Terry reward model training on a tiny random Llama with the real SmolLM2 tokenizer."""

import json
import math

import pytest
import torch

from directalign.config import load_config
from directalign.engine.metrics import read_metrics
from directalign.errors import ConfigError
from directalign.reward_models.bradley_terry import bradley_terry_loss, load_backbone
from directalign.reward_models.scoring import METADATA_FILE, RewardModel
from directalign.reward_models.trainer import train_reward_model


def test_loss_is_the_negative_log_likelihood_of_the_preference():
    loss = bradley_terry_loss(torch.tensor([1.0, 0.0, -2.0]), torch.tensor([0.0, 0.0, 0.0]))
    assert loss.tolist() == pytest.approx([math.log1p(math.exp(-1)), math.log(2), math.log1p(math.exp(2))])
    # a margin asks the chosen reward to lead by it: r_c - r_r = 1 with margin 1 costs as much as a tie
    assert bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), margin=1.0).item() == pytest.approx(math.log(2))


def config(tiny_model_dir, easy_pairs, out, **overrides):
    values = dict(
        data=str(easy_pairs),
        model=str(tiny_model_dir),
        output_dir=str(out),
        max_steps=8,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        eval_split=0.25,
        max_length=64,
        max_prompt_length=48,
        seed=0,
    )
    return load_config("reward-model train", overrides={**values, **overrides})


def test_lora_training_learns_logs_and_saves_a_loadable_model(tiny_model_dir, easy_pairs, tmp_path):
    out = tmp_path / "rm"
    result = train_reward_model(config(tiny_model_dir, easy_pairs, out))
    assert result.eval_before["n_pairs"] == 10 and result.eval_after["n_pairs"] == 10
    assert result.eval_after["loss"] < result.eval_before["loss"] - 0.3
    assert result.eval_after["accuracy"] == 1.0 and result.eval_after["mean_margin"] > 1.0

    events = read_metrics(out / "metrics.jsonl")
    train = [e for e in events if e["split"] == "train"]
    assert [e["step"] for e in train] == list(range(1, 9))
    for key in (
        "loss",
        "accuracy",
        "margin",
        "rewards/chosen",
        "rewards/rejected",
        "grad_norm",
        "learning_rate",
        "pairs_per_s",
        "tokens_per_s",
        "epoch",
    ):
        assert train[-1][key] is not None, key
    assert train[-1]["loss"] < train[0]["loss"]
    assert [e["tag"] for e in events if e["split"] == "eval"] == ["before", "after"]
    assert json.loads((out / "config.json").read_text())["learning_rate"] == 1e-2

    folder = result.model_dir
    assert folder == out / "reward_model"
    assert {"adapter_config.json", "adapter_model.safetensors", METADATA_FILE, "tokenizer.json"} <= {
        p.name for p in folder.iterdir()
    }
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    reward_model = RewardModel.load(out)
    chosen, rejected = reward_model.score(
        ["Question 7: can you help me with task 7?"] * 2, ["Yes, certainly, here is how.", "No."]
    )
    assert chosen - rejected == pytest.approx(result.eval_after["mean_margin"], abs=0.5)
    assert chosen > rejected


def test_full_fine_tuning_with_a_margin_and_a_second_run_replaces_the_model(tiny_model_dir, easy_pairs, tmp_path):
    out = tmp_path / "full"
    cfg = config(
        tiny_model_dir,
        easy_pairs,
        out,
        use_peft=False,
        learning_rate=1e-3,
        margin=0.5,
        max_steps=3,
        eval_before_training=False,
    )
    first = train_reward_model(cfg)
    assert first.eval_before is None
    assert {"config.json", "model.safetensors"} <= {p.name for p in first.model_dir.iterdir()}
    scores_first = RewardModel.load(first.model_dir).score(["q"], ["a"])
    second = train_reward_model(
        config(
            tiny_model_dir,
            easy_pairs,
            out,
            use_peft=False,
            learning_rate=1e-3,
            max_steps=1,
            eval_before_training=False,
            seed=5,
            overwrite_output_dir=True,  # a finished run is replaced only when asked
        )
    )
    assert second.model_dir == first.model_dir
    assert RewardModel.load(out).score(["q"], ["a"]) != scores_first
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "finished.json", "metrics.jsonl", "reward_model"]


def test_lora_on_the_last_layers_only(tiny_model_dir, easy_pairs, tmp_path):
    from directalign.models.loading import load_tokenizer

    cfg = config(tiny_model_dir, easy_pairs, tmp_path, lora_layers=1)
    model = load_backbone(cfg, load_tokenizer(str(tiny_model_dir)))
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert all(".layers.1." in name or "score" in name for name in trainable)
    assert any("score" in name for name in trainable) and any(".layers.1." in name for name in trainable)
    with pytest.raises(ConfigError, match="lora_layers must be between 1 and 2"):
        load_backbone(config(tiny_model_dir, easy_pairs, tmp_path, lora_layers=3), load_tokenizer(str(tiny_model_dir)))


def test_invalid_options_are_one_error_naming_the_key():
    with pytest.raises(ConfigError, match="max_prompt_length .512. must be smaller than max_length .512."):
        load_config("reward-model train", overrides={"max_length": 512, "max_prompt_length": 512})
    with pytest.raises(ConfigError, match="reward-model train: margin must be >= 0"):
        load_config("reward-model train", overrides={"margin": -1})
