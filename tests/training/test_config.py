import pytest

from directalign.errors import ConfigError
from directalign.training.config import load_config, parse_cli_overrides


def test_cli_overrides_accept_dash_and_underscore_spellings():
    values = parse_cli_overrides(
        ["--max-steps", "12", "--learning_rate=1e-4", "--use-peft", "false", "--bf16"]
    )
    cfg = load_config(overrides=values)
    assert cfg.max_steps == 12 and cfg.learning_rate == pytest.approx(1e-4)
    assert cfg.use_peft is False and cfg.bf16 is True


def test_yaml_config_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("beta: 0.25\nloss_type: ipo\nlora_target_modules: [q_proj, v_proj]\nmax_steps: 3\n")
    cfg = load_config(path, {"max_steps": "7"})
    assert (cfg.beta, cfg.loss_type, cfg.max_steps) == (0.25, "ipo", 7)
    assert cfg.lora_target_modules == ["q_proj", "v_proj"]


def test_unknown_key_suggests_the_closest(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        load_config(overrides={"learnig_rate": "1e-4"})
    path = tmp_path / "c.yaml"
    path.write_text("per_device_batch_size: 2\n")
    with pytest.raises(
        ConfigError,
        match=r"c\.yaml: unknown key 'per_device_batch_size'; did you mean .*'per_device_train_batch_size'",
    ):
        load_config(path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"loss_type": "dpoo"}, "loss_type must be one of"),
        ({"max_steps": "2.5"}, "max_steps: cannot read"),
        ({"label_smoothing": "0.7"}, "label_smoothing"),
        ({"beta": "0"}, "beta must be positive"),
    ],
)
def test_bad_values_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_reference_free_losses_need_no_reference():
    assert not load_config(overrides={"loss_type": "simpo"}).needs_reference
    assert load_config(overrides={"loss_type": "ipo"}).needs_reference
