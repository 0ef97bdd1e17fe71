"""Command configs: made of the key groups each command honours, loaded from YAML and the command line, every
key range-checked, keys of other commands and keys the loss does not read refused, --help from the same source."""

import dataclasses

import pytest

from directalign.config import COMMANDS, keys_help, load_config, parse_cli_overrides
from directalign.config.keys import default_of
from directalign.errors import ConfigError


def test_cli_overrides_accept_dash_and_underscore_spellings():
    values = parse_cli_overrides(["--max-steps", "12", "--learning_rate=1e-4", "--use-peft", "false", "--bf16"])
    cfg = load_config("train", overrides=values)
    assert cfg.max_steps == 12 and cfg.learning_rate == pytest.approx(1e-4)
    assert cfg.use_peft is False and cfg.bf16 is True


def test_yaml_config_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("beta: 0.25\nloss_type: ipo\nlora_target_modules: [q_proj, v_proj]\nmax_steps: 3\n")
    cfg = load_config("train", path, {"max_steps": "7"})
    assert (cfg.beta, cfg.loss_type, cfg.max_steps) == (0.25, "ipo", 7)
    assert cfg.lora_target_modules == ["q_proj", "v_proj"]


def test_unknown_key_suggests_the_closest(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        load_config("train", overrides={"learnig_rate": "1e-4"})
    path = tmp_path / "c.yaml"
    path.write_text("per_device_batch_size: 2\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key 'per_device_batch_size' for train; did you mean"):
        load_config("train", path)


@pytest.mark.parametrize(
    "command, overrides, message",
    [
        ("grpo", {"label_smoothing": "0.1"}, "grpo does not take 'label_smoothing' .a key of train, online-dpo"),
        ("grpo", {"precompute_ref_log_probs": "true"}, "grpo does not take 'precompute_ref_log_probs'"),
        ("online-dpo", {"num_rounds": "2"}, "online-dpo does not take 'num_rounds' .a key of iterative-dpo"),
        ("reward-model train", {"loss_type": "ipo"}, "reward-model train does not take 'loss_type'"),
        ("train", {"num_generations": "4"}, "train does not take 'num_generations'"),
    ],
)
def test_a_key_of_another_command_is_an_error_naming_both(command, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(command, overrides=overrides)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"loss_type": "ipo", "label_smoothing": "0.1"}, "loss_type ipo does not read label_smoothing .label_smoothing "
         "is read by sigmoid, robust"),
        ({"simpo_gamma": "1.0"}, "loss_type sigmoid does not read simpo_gamma"),
        ({"loss_type": "cpo", "rpo_alpha": "1"}, "loss_type cpo does not read rpo_alpha"),
        ({"loss_type": "orpo", "orpo_lambda": "0.2", "desirable_weight": "2"}, "does not read desirable_weight"),
    ],
)
def test_a_loss_key_the_loss_does_not_read_is_an_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("train", overrides=overrides)


def test_a_loss_key_at_its_default_is_not_an_error():
    assert load_config("train", overrides={"loss_type": "ipo", "label_smoothing": "0"}).loss_type == "ipo"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"loss_type": "dpoo"}, "loss_type must be one of sigmoid, .* got 'dpoo'"),
        ({"loss_type": "grpo"}, "loss_type must be one of"),  # registered, but not a loss of `train`
        ({"max_steps": "2.5"}, "max_steps: cannot read '2.5' as an integer"),
        ({"label_smoothing": "0.7"}, r"label_smoothing must be in \[0, 0.5\); got 0.7"),
        ({"beta": "0"}, "beta must be > 0; got 0.0"),
        ({"learning_rate": "-1e-4"}, "learning_rate must be > 0"),
        ({"max_grad_norm": "-1"}, "max_grad_norm must be >= 0; got -1.0"),
        ({"logging_steps": "0"}, "logging_steps must be >= 1; got 0"),
        ({"lora_r": "0"}, "lora_r must be >= 1; got 0"),
        ({"lora_dropout": "1.5"}, r"lora_dropout must be in \[0, 1\)"),
        ({"warmup_ratio": "nan"}, "warmup_ratio must be a finite number"),
        ({"max_steps": "0"}, "max_steps must be -1 .* or at least 1"),
        ({"layout": "diagonal"}, "layout must be one of padded, shared, packed"),
        ({"lr_scheduler_type": "cosin"}, "lr_scheduler_type must be one of linear, cosine"),
        ({"max_prompt_length": "600", "max_length": "512"}, "max_prompt_length .600. must be smaller than max_length"),
        ({"use_peft": "maybe"}, "use_peft: cannot read 'maybe' as true or false"),
        ({"attn_implementation": "flash_attention_2"}, "cannot take the shared layout's mask"),
        ({"kl_budget": "3"}, "kl_budget needs eval_steps"),
        ({"early_stopping_metric": "eval/implicit_accuracy"}, "is a held-out metric: set eval_steps"),
        ({"loss_type": "simpo", "precompute_ref_log_probs": "true"}, "precompute_ref_log_probs needs a reference"),
    ],
)
def test_every_bad_value_is_one_error_naming_the_key_and_its_range(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("train", overrides=overrides)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_validates_its_defaults_and_every_numeric_key_has_a_range_or_is_free(command):
    cfg = load_config(command)
    assert cfg.command == command
    for f in dataclasses.fields(cfg):
        assert f.metadata["help"], f"{command}: {f.name} has no help line"
        assert getattr(cfg, f.name) == default_of(f)


def test_commands_honour_only_their_groups():
    train, grpo, rm = (set(COMMANDS[c].__dataclass_fields__) for c in ("train", "grpo", "reward-model train"))
    assert {"loss_type", "label_smoothing", "precompute_ref_log_probs", "sample_generations"} <= train - grpo
    assert {"epsilon", "num_iterations", "num_generations", "reward_funcs"} <= grpo - train
    assert {"margin", "lora_modules_to_save"} <= rm - train
    assert not {"kl_budget", "kl_prompts", "logits_chunk_size", "loss_type"} & rm
    assert {"layout", "max_tokens_per_row"} <= train & rm  # the reward model scores a batch in any layout
    assert {"gradient_accumulation_steps", "resume", "save_steps", "early_stopping_metric"} <= train & grpo & rm


def test_on_policy_defaults_and_the_grpo_reference():
    grpo = load_config("grpo", overrides={"beta": "0"})
    assert not grpo.needs_reference and grpo.output_dir == "runs/grpo"
    assert load_config("grpo").needs_reference  # beta 0.1 by default: a KL penalty, so a reference pass
    assert load_config("online-dpo", overrides={"reward_weights": "0.5"}).reward_weights == [0.5]
    rm = load_config("reward-model train")
    assert (rm.learning_rate, rm.per_device_train_batch_size, rm.output_dir) == (1e-4, 8, "runs/reward-model")


def test_reference_free_losses_need_no_reference():
    assert not load_config("train", overrides={"loss_type": "simpo"}).needs_reference
    assert load_config("train", overrides={"loss_type": "ipo"}).needs_reference


def test_help_lists_every_key_with_its_default_and_range():
    text = keys_help("grpo")
    for f in dataclasses.fields(COMMANDS["grpo"]):
        assert f"--{f.name.replace('_', '-')} " in text
    assert "--epsilon" in text and "float, default 0.2, in (0, 1)" in text
    assert "--output-dir" in text and "default runs/grpo" in text
    assert "--label-smoothing" not in text


def test_a_yaml_that_is_not_a_mapping_is_one_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="a config is a mapping of key: value, got list"):
        load_config("train", path)
    path.write_text("beta: [unclosed\n")
    with pytest.raises(ConfigError, match="c.yaml: cannot read the config"):
        load_config("train", path)
