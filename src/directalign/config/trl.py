"""TRL configs as directalign configs: a YAML of TRL 1.16's DPOConfig / KTOConfig / GRPOConfig (their to_dict(), or
the few keys a user writes), or an alignment-handbook recipe (with TRL's ModelConfig and ScriptArguments keys),
read by `--config`.

Every TRL key is either
- honoured: the same name (learning_rate, beta, lora_r, ...) or a 1:1 rename/translation below
  (`model_name_or_path` -> model, `loss_type: [sigmoid]` -> sigmoid, `eval_strategy: steps` -> eval_steps,
  `warmup_steps: 0.1` -> warmup_ratio, `model_init_kwargs: {dtype: bfloat16}` -> torch_dtype, ...);
- harmless: it cannot change the trained weights (logging verbosity, dataloader workers, padding_free, a paged
  or fused AdamW): dropped, named in one warning line;
- at TRL's default value: TRL's to_dict() writes ~140 keys a user never set; those that directalign does not read
  are dropped while they hold TRL 1.16's default (config/trl_1_16.json, checked against TRL in the tests), and
  counted in one line;
- else refused: every such key is named in one error, never silently ignored.
Keys a TRL file does not set take directalign's defaults; one line names those that differ from TRL's
(learning_rate 5e-05 here, 1e-06 in TRL).
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files

from directalign.config.keys import default_of, type_name
from directalign.errors import ConfigError

TRL_CLASSES = ("DPOConfig", "KTOConfig", "GRPOConfig", "ModelConfig", "ScriptArguments")

RENAMED = {
    "model_name_or_path": "model",
    "activation_checkpointing": "gradient_checkpointing",  # transformers 5's name; to_dict writes both
    "eval_on_start": "eval_before_training",
    "max_completion_length": "max_new_tokens",
    "dataset_config": "data_config",
    "dataset_train_split": "data_split",
    "dtype": "torch_dtype",
    "evaluation_strategy": "eval_strategy",  # the older TrainingArguments name, in many handbook recipes
}

# Keys that cannot change the trained weights (how fast, how verbose, which worker processes).
HARMLESS = {
    "log_level", "log_level_replica", "log_on_each_node", "logging_first_step", "logging_nan_inf_filter",
    "logging_strategy", "disable_tqdm", "do_train", "do_eval", "do_predict", "dataloader_num_workers",
    "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor", "dataset_num_proc",
    "preprocessing_num_workers", "padding_free", "pad_to_multiple_of", "precompute_ref_batch_size",
    "skip_memory_metrics", "save_safetensors", "save_only_model", "save_on_each_node", "hub_strategy",
    "hub_always_push", "hub_revision", "project", "use_cpu", "include_num_input_tokens_seen",
    "torch_empty_cache_steps", "use_liger_kernel", "remove_unused_columns", "gradient_checkpointing_kwargs",
    "activation_checkpointing_kwargs", "log_completions", "num_completions_to_print", "save_total_limit",
    "overwrite_output_dir", "push_to_hub_model_id", "dataset_streaming",
}
# AdamW under another implementation: the same update (paged: the states may move to CPU memory).
SAME_UPDATE_OPTIMIZERS = {"adamw_torch", "adamw_torch_fused", "adamw_hf", "paged_adamw_32bit", "adamw_bnb_32bit"}
TRACKERS = {"none", "tensorboard", "wandb", "mlflow", "trackio", "all"}


@cache
def trl_defaults() -> dict[str, list]:
    """{TRL key: the values TRL 1.16's configs default it to} over every class in TRL_CLASSES."""
    table = json.loads((files("directalign.config") / "trl_1_16.json").read_text())
    merged: dict[str, list] = {}
    for cls in TRL_CLASSES:
        for name, values in table[cls].items():
            merged.setdefault(name, [])
            merged[name] += [v for v in values if v not in merged[name]]
    return merged


def is_trl_key(name: str) -> bool:
    return name in trl_defaults() or name in RENAMED or name in HARMLESS or name in ("dataset_mixer",
                                                                                        "dataset_splits")


class Translation:
    """What a TRL mapping did: the translated values, and the lines to print."""

    def __init__(self):
        self.values: dict = {}
        self.harmless: list[str] = []
        self.at_default: list[str] = []
        self.refused: list[str] = []


def _single_loss(value, command: str):
    if isinstance(value, list):
        if len(value) == 1:
            return value[0]
        raise ConfigError(f"loss_type {value}: TRL's combined losses (e.g. [sigmoid, sft], MPO) have no 1:1 "
                          "directalign form; choose one loss (sigmoid with rpo_alpha adds the chosen NLL, "
                          "normalised per response where TRL pools tokens)")
    if command == "grpo":
        if value in ("dapo", "bnpo"):
            return None  # directalign's GRPO averages over every completion token of the batch (DAPO's form)
        raise ConfigError(f"loss_type {value!r}: directalign's GRPO averages over the batch's tokens (TRL's "
                          "dapo/bnpo); the per-sequence grpo and dr_grpo normalisations are not offered")
    return value


def _dtype(value):
    if value is None:
        return None
    text = str(value).removeprefix("torch.")
    return {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "float": "float32", "half": "float16"}.get(
        text, text)


def _translate(name: str, value, out: Translation, command: str, fields: set[str]) -> None:
    """Put the directalign form of one TRL key into out.values (or name it as refused)."""
    v = out.values
    if name == "loss_type":
        loss = _single_loss(value, command)
        if loss is not None:
            v["loss_type"] = loss
    elif name == "report_to":
        names = [value] if isinstance(value, str) else list(value or [])
        unknown = [n for n in names if n not in TRACKERS]
        if unknown:
            out.refused.append(f"report_to {unknown} (directalign reports to {', '.join(sorted(TRACKERS))})")
        else:
            v["report_to"] = names or ["none"]
    elif name == "eval_strategy":
        if value == "no":
            v["eval_steps"] = None
        elif value != "steps":
            out.refused.append(f"eval_strategy {value!r} (directalign evaluates every eval_steps steps: "
                               "eval_strategy steps)")
    elif name == "save_strategy":
        if value == "no":
            v["save_steps"] = 0
        elif value != "steps":
            out.refused.append(f"save_strategy {value!r} (directalign checkpoints every save_steps steps)")
    elif name == "warmup_steps":
        number = float(value or 0)
        if 0 < number < 1:
            v["warmup_ratio"], v["warmup_steps"] = number, 0  # transformers 5: a float below 1 is a ratio
        else:
            v["warmup_steps"] = int(number)
            v.setdefault("warmup_ratio", 0.0)  # TRL has no warmup unless asked
    elif name == "optim":
        if value not in SAME_UPDATE_OPTIMIZERS:
            out.refused.append(f"optim {value!r} (directalign runs torch's AdamW: adamw_torch)")
        elif value not in ("adamw_torch", "adamw_torch_fused"):
            out.harmless.append(f"optim {value} (torch AdamW runs the same update)")
    elif name == "fp16":
        if value:
            out.refused.append("fp16 true (directalign has bf16 autocast: bf16 true)")
    elif name in ("model_init_kwargs", "ref_model_init_kwargs"):
        for key, item in (value or {}).items():
            if key in ("dtype", "torch_dtype"):
                if _dtype(item) is not None:
                    v["torch_dtype"] = _dtype(item)
            elif key == "attn_implementation" and "attn_implementation" in fields:
                v["attn_implementation"] = item
            elif key in ("trust_remote_code", "revision") and item in (False, "main", None):
                continue
            else:
                out.refused.append(f"{name}.{key} {item!r}")
    elif name == "torch_dtype":
        if _dtype(value) is not None:
            v["torch_dtype"] = _dtype(value)
    elif name == "scale_rewards" and command == "grpo":
        if value in (True, "group", "true"):
            v["scale_rewards"] = True
        elif value in (False, "none", "false"):
            v["scale_rewards"] = False
        else:
            out.refused.append(f"scale_rewards {value!r} (directalign scales within each group, or not at all)")
    elif name == "hub_token":
        if value not in (None, "", "<HUB_TOKEN>"):
            out.refused.append("hub_token (a token does not belong in a config file: set HF_TOKEN)")
    elif name == "dataset_name":
        v["prompts" if "prompts" in fields else "data"] = value
    elif name == "dataset_test_split":
        v["_test_split"] = value
    elif name == "dataset_mixer":
        mixer = value or {}
        if len(mixer) != 1 or float(next(iter(mixer.values()))) != 1.0:
            out.refused.append(f"dataset_mixer {mixer} (directalign trains on one dataset: give data)")
        else:
            v["prompts" if "prompts" in fields else "data"] = next(iter(mixer))
    elif name == "dataset_splits":
        splits = [value] if isinstance(value, str) else list(value or [])
        if splits:
            v["data_split"] = splits[0]
        if len(splits) > 1:
            v["_test_split"] = splits[1]
    elif name == "lora_target_modules" and value is None:
        return  # TRL's None: PEFT's defaults for the architecture; directalign's default adapts every projection
    else:
        v[RENAMED.get(name, name)] = value


SPECIAL = {"loss_type", "report_to", "eval_strategy", "save_strategy", "warmup_steps", "optim", "fp16",
           "model_init_kwargs", "ref_model_init_kwargs", "torch_dtype", "hub_token", "dataset_name",
           "dataset_test_split", "dataset_mixer", "dataset_splits", "scale_rewards", "lora_target_modules"}


def _grpo_batch(values: dict, config, out: Translation) -> None:
    """TRL's GRPO per_device_train_batch_size counts completions; directalign's counts prompts (each with
    num_generations completions), so the same batch is TRL's divided by num_generations."""
    completions = values.get("per_device_train_batch_size")
    generations = int(out.values.get("num_generations", values.get("num_generations", config.num_generations)))
    accumulation = int(values.get("gradient_accumulation_steps", config.gradient_accumulation_steps))
    generation_batch = values.get("generation_batch_size")
    if values.get("steps_per_generation") not in (None, accumulation):
        out.refused.append(f"steps_per_generation {values['steps_per_generation']} (directalign samples every step)")
    if completions is None:
        return
    completions = int(completions)
    if generation_batch not in (None, completions * accumulation):
        out.refused.append(f"generation_batch_size {generation_batch} (directalign samples every step: "
                           f"per_device_train_batch_size x gradient_accumulation_steps = {completions * accumulation})")
    if completions % generations:
        out.refused.append(f"per_device_train_batch_size {completions} (TRL's completions per device) is not a "
                           f"multiple of num_generations {generations}")
    else:
        out.values["per_device_train_batch_size"] = completions // generations


def translate(values: dict, config, command: str, origin: str) -> tuple[dict, list[str]]:
    """A TRL config file's values in directalign's form for `config` (a default config of the command), and
    the lines to print. Keys that are neither directalign's nor TRL's are left for the caller's error."""
    fields = set(config.__dataclass_fields__)
    out = Translation()
    grpo_batch = {"per_device_train_batch_size", "generation_batch_size", "steps_per_generation"}
    for raw, value in values.items():
        name = str(raw).replace("-", "_")
        target = RENAMED.get(name, name)
        if command == "grpo" and target in grpo_batch:
            continue  # _grpo_batch, below
        if target in SPECIAL:
            _translate(target, value, out, command, fields)
        elif target in fields and value is None and not _optional(config, target):
            out.at_default.append(name)  # TRL's None: "decide for me"; directalign's default decides
        elif target in fields:
            out.values[target] = value
        elif name in HARMLESS:
            out.harmless.append(name)
        elif name in trl_defaults():
            empty = value in ({}, [])
            if value in trl_defaults()[name] or (empty and None in trl_defaults()[name]):
                out.at_default.append(name)
            else:
                out.refused.append(f"{name} {value!r}")
        else:
            out.values[name] = value  # neither directalign's nor TRL's: the caller names it
    if command == "grpo":
        _grpo_batch(values, config, out)
    if out.refused:
        raise ConfigError(f"{origin}: directalign {command} does not honour these TRL keys: "
                          f"{'; '.join(out.refused)} (remove them, or see docs/ecosystem.md)")
    result = out.values
    test_split = result.pop("_test_split", None)
    data_key = "prompts" if "prompts" in fields else "data"
    eval_key = "eval_prompts" if data_key == "prompts" else "eval_data"
    if test_split and result.get(data_key) and eval_key not in result and "eval_data_split" in fields:
        result[eval_key], result["eval_data_split"] = result[data_key], test_split
    strategy = values.get("eval_strategy", values.get("evaluation_strategy"))
    if strategy == "steps" and result.get("eval_steps") is None:
        result["eval_steps"] = values.get("logging_steps", 500)  # TRL: eval_steps defaults to logging_steps
    lines = []
    if out.harmless:
        lines.append(f"{origin}: TRL keys that cannot change the result, not read: {', '.join(out.harmless)}")
    if out.at_default:
        lines.append(f"{origin}: {len(out.at_default)} TRL keys left at TRL 1.16's defaults, not read by "
                     "directalign (another value would be an error; see docs/ecosystem.md)")
    return result, lines


def _optional(config, name: str) -> bool:
    return type_name(type(config), name).endswith("none")


def looks_like_trl(values: dict, fields: set[str]) -> bool:
    """A file with TRL keys that are not directalign's (a TRL or handbook config), or TRL's list-form loss."""
    names = [str(k).replace("-", "_") for k in values]
    return any(n not in fields and is_trl_key(n) for n in names) or isinstance(values.get("loss_type"), list)


def default_differences(values: dict, config) -> str | None:
    """The keys a TRL file leaves out whose directalign default differs from TRL's (the command's TRL config and
    ModelConfig), in one line."""
    table = json.loads((files("directalign.config") / "trl_1_16.json").read_text())
    trl = {**table["ModelConfig"], **table["GRPOConfig" if config.command == "grpo" else "DPOConfig"]}
    shown = []
    for name in ("learning_rate", "per_device_train_batch_size", "num_train_epochs", "logging_steps",
                 "save_steps", "use_peft", "lora_dropout", "eval_before_training", "gradient_checkpointing",
                 "max_new_tokens", "num_generations", "beta"):
        trl_name = {"eval_before_training": "eval_on_start", "max_new_tokens": "max_completion_length"}.get(name,
                                                                                                              name)
        if name not in config.__dataclass_fields__ or trl_name in values or name in values or trl_name not in trl:
            continue
        if config.command == "grpo" and name == "per_device_train_batch_size":
            continue  # TRL counts completions, directalign prompts: not comparable
        trl_value, ours = trl[trl_name][0], default_of(config.__dataclass_fields__[name])
        if trl_value is not None and trl_value != ours:
            shown.append(f"{name} {ours} (TRL {trl_value})")
    if not {"warmup_steps", "warmup_ratio"} & set(values):
        shown.append(f"warmup_ratio {default_of(config.__dataclass_fields__['warmup_ratio'])} (TRL: no warmup)")
    if not shown:
        return None
    return "keys not in the file take directalign's defaults, which differ from TRL's: " + ", ".join(shown)
