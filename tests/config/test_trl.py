"""TRL 1.16 configs and alignment-handbook recipes read by --config (directalign.config.trl)."""

from __future__ import annotations

import dataclasses
import enum
import json
from importlib.resources import files

import pytest
import yaml

from directalign.config import load_config
from directalign.errors import ConfigError
from tests.data.test_hub import hub_layout

trl = pytest.importorskip("trl")

HANDBOOK_RECIPE = """\
# Model arguments
model_name_or_path: alignment-handbook/zephyr-7b-sft-qlora
torch_dtype: bfloat16
attn_implementation: sdpa

# LoRA arguments
use_peft: true
load_in_4bit: true
lora_r: 128
lora_alpha: 128
lora_dropout: 0.05
lora_target_modules:
- q_proj
- k_proj
- v_proj
- o_proj
- gate_proj
- up_proj
- down_proj

# Data training arguments
dataset_mixer:
  HuggingFaceH4/ultrafeedback_binarized: 1.0
dataset_splits:
- train_prefs
- test_prefs
preprocessing_num_workers: 12

# DPOTrainer arguments
bf16: true
beta: 0.01
do_eval: true
evaluation_strategy: steps
eval_steps: 100
gradient_accumulation_steps: 4
gradient_checkpointing: true
gradient_checkpointing_kwargs:
  use_reentrant: false
hub_model_id: zephyr-7b-dpo-qlora
learning_rate: 5.0e-6
log_level: info
logging_steps: 10
lr_scheduler_type: cosine
max_length: 1024
max_prompt_length: 512
num_train_epochs: 1
optim: paged_adamw_32bit
output_dir: data/zephyr-7b-dpo-qlora
per_device_train_batch_size: 4
per_device_eval_batch_size: 8
push_to_hub: true
report_to:
- tensorboard
save_strategy: "steps"
save_steps: 100
save_total_limit: 1
seed: 42
warmup_ratio: 0.1
"""


def _plain(value):
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


def trl_defaults() -> dict:
    """config/trl_1_16.json as the installed TRL gives it: each key's to_dict() default, then its field default."""
    table = {}
    for cls in (trl.DPOConfig, trl.KTOConfig, trl.GRPOConfig):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        entry = {}
        for name, value in cls(output_dir="out", bf16=False, use_cpu=False).to_dict().items():
            values = [_plain(value)]
            f = fields.get(name)
            if f is not None:
                default = f.default if f.default is not dataclasses.MISSING else (
                    f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
                if _plain(default) not in values:
                    values.append(_plain(default))
            entry[name] = values
        table[cls.__name__] = entry
    for cls in (trl.ModelConfig, trl.ScriptArguments):
        table[cls.__name__] = {f.name: [_plain(None if f.default is dataclasses.MISSING else f.default)]
                               for f in dataclasses.fields(cls)}
    return table


def _yaml(tmp_path, values: dict, name="config.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


def _to_dict(cls, **kw) -> dict:
    return cls(output_dir="out", bf16=False, use_cpu=True, **kw).to_dict()


def test_the_shipped_defaults_are_trl_1_16s():
    if trl.__version__ != "1.16.0":
        pytest.skip(f"the table is TRL 1.16's; TRL {trl.__version__} is installed")
    shipped = json.loads((files("directalign.config") / "trl_1_16.json").read_text())
    for cls, table in trl_defaults().items():
        for name, values in table.items():
            if name not in ("output_dir", "use_cpu"):
                assert shipped[cls][name] == values, (cls, name)


def test_a_dpo_config_to_dict_yaml_maps_one_to_one(tmp_path, capsys):
    values = _to_dict(trl.DPOConfig, learning_rate=2e-6, beta=0.2, max_length=512, warmup_steps=0.1,
                      eval_strategy="steps", eval_steps=7, report_to="none", lr_scheduler_type="cosine")
    assert values["loss_type"] == ["sigmoid"] and values["report_to"] == [] and "max_prompt_length" not in values
    cfg = load_config("train", _yaml(tmp_path, values))
    assert (cfg.loss_type, cfg.learning_rate, cfg.beta, cfg.max_length) == ("sigmoid", 2e-6, 0.2, 512)
    assert cfg.prompt_length_limit == 256  # TRL 1.16 has no max_prompt_length: half of max_length
    assert (cfg.warmup_ratio, cfg.warmup_steps) == (0.1, 0)  # transformers 5: warmup_steps < 1 is a ratio
    assert (cfg.eval_steps, cfg.report_to, cfg.lr_scheduler_type) == (7, ["none"], "cosine")
    assert cfg.gradient_checkpointing is True and cfg.disable_dropout is True  # TRL's defaults, honoured
    assert cfg.eval_before_training is False  # TRL's eval_on_start
    assert cfg.per_device_train_batch_size == 8 and cfg.save_steps == 500 and cfg.num_train_epochs == 3.0
    notes = capsys.readouterr().err
    assert "TRL keys that cannot change the result, not read: " in notes and "dataloader_num_workers" in notes
    assert "TRL keys left at TRL 1.16's defaults, not read by directalign" in notes
    assert "use_peft True (TRL False)" in notes  # a ModelConfig key the file leaves out


def test_trl_defaults_without_warmup_mean_no_warmup(tmp_path):
    cfg = load_config("train", _yaml(tmp_path, _to_dict(trl.DPOConfig)))
    assert (cfg.warmup_ratio, cfg.warmup_steps) == (0.0, 0)
    assert load_config("train").warmup_ratio == 0.1  # directalign's own default is untouched


def test_kto_and_grpo_configs(tmp_path):
    cfg = load_config("train", _yaml(tmp_path, _to_dict(trl.KTOConfig, desirable_weight=1.5)))
    assert (cfg.loss_type, cfg.desirable_weight) == ("kto", 1.5)
    values = _to_dict(trl.GRPOConfig, per_device_train_batch_size=8, num_generations=4, max_completion_length=64,
                      beta=0.04, scale_rewards="none", epsilon=0.3)
    cfg = load_config("grpo", _yaml(tmp_path, values))
    # TRL counts completions per device; directalign counts prompts, each with num_generations completions.
    assert (cfg.per_device_train_batch_size, cfg.num_generations, cfg.max_new_tokens) == (2, 4, 64)
    assert (cfg.beta, cfg.scale_rewards, cfg.epsilon) == (0.04, False, 0.3)
    values["loss_type"] = "dr_grpo"
    with pytest.raises(ConfigError, match="dr_grpo normalisations are not offered"):
        load_config("grpo", _yaml(tmp_path, values))


def test_every_unhonoured_key_is_named_in_one_error(tmp_path):
    values = _to_dict(trl.DPOConfig)
    values.update(tf32=True, use_weighting=True, optim="adafactor", eval_strategy="epoch", loss_weights=[1.0],
                  hub_token="hf_abcdefghijklmnopqrstuvwxyz")
    with pytest.raises(ConfigError) as err:
        load_config("train", _yaml(tmp_path, values))
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'config.yaml'}: directalign train does not honour these TRL keys: ")
    for part in ("tf32 True", "use_weighting True", "optim 'adafactor'", "eval_strategy 'epoch'",
                 "loss_weights [1.0]", "hub_token (a token does not belong in a config file: set HF_TOKEN)"):
        assert part in message
    assert "hf_abcdef" not in message and message.count("\n") == 0


def test_combined_trl_losses_and_unknown_keys_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"loss_type \['sigmoid', 'sft'\]: TRL's combined losses"):
        load_config("train", _yaml(tmp_path, {"loss_type": ["sigmoid", "sft"]}))
    with pytest.raises(ConfigError, match="unknown key 'lerning_rate' for train"):
        load_config("train", _yaml(tmp_path, {"loss_type": ["ipo"], "lerning_rate": 1.0}))


def test_a_handbook_recipe_maps_and_runs(tmp_path, tiny_model_dir, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text(HANDBOOK_RECIPE)
    cfg = load_config("train", path)
    assert (cfg.model, cfg.torch_dtype, cfg.load_in_4bit) == ("alignment-handbook/zephyr-7b-sft-qlora", "bfloat16",
                                                              True)
    assert (cfg.data, cfg.data_split) == ("HuggingFaceH4/ultrafeedback_binarized", "train_prefs")
    assert (cfg.eval_data, cfg.eval_data_split) == ("HuggingFaceH4/ultrafeedback_binarized", "test_prefs")
    assert (cfg.eval_steps, cfg.save_steps, cfg.save_total_limit, cfg.warmup_ratio) == (100, 100, 1, 0.1)
    assert (cfg.push_to_hub, cfg.hub_model_id, cfg.report_to) == (True, "zephyr-7b-dpo-qlora", ["tensorboard"])
    assert (cfg.lora_r, cfg.lora_dropout, cfg.beta, cfg.max_prompt_length) == (128, 0.05, 0.01, 512)
    assert "optim paged_adamw_32bit (torch AdamW runs the same update)" in capsys.readouterr().err

    # The same recipe on a tiny model, a local copy of the dataset in its Hub layout, on this CPU.
    data = hub_layout(tmp_path / "ultrafeedback")
    recipe = HANDBOOK_RECIPE.replace("HuggingFaceH4/ultrafeedback_binarized", str(data))
    path.write_text(recipe)
    from directalign.training.dpo import train

    overrides = dict(model=str(tiny_model_dir), load_in_4bit=False, torch_dtype="float32", bf16=False,
                     push_to_hub=False, report_to="none", max_steps=1, gradient_accumulation_steps=1,
                     per_device_train_batch_size=1, output_dir=str(tmp_path / "run"), kl_prompts=0)
    result = train(load_config("train", path, overrides))
    assert result.steps == 1 and result.eval_after["n_pairs"] == 1  # test_prefs has one pair
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["lora_r"] == 128 and config["lr_scheduler_type"] == "cosine"


def test_peft_spelling_all_linear_builds_the_adapter(tiny_model_dir):
    from directalign.models.policy import build_policy

    cfg = load_config("train", overrides={"model": str(tiny_model_dir), "lora_target_modules": "all-linear"})
    model = build_policy(cfg)
    adapted = {name.split(".")[-1] for name, _ in model.named_modules() if name.endswith(("q_proj", "down_proj"))}
    assert adapted == {"q_proj", "down_proj"}
    assert any("lora_A" in name for name, _ in model.named_parameters())
