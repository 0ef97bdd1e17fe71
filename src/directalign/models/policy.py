"""The policy a trainer trains: the model loaded once, LoRA (or full fine-tuning) set up once, for every trainer.

- `lora_config`: PEFT's LoraConfig from the LoRA keys; `lora_target_modules: all-linear` is PEFT's own spelling
  (every linear layer but the output head); `lora_layers: N` adapts only the last N decoder layers (nothing below
  them then needs a gradient, so the backward pass stops there).
- `build_policy`: the causal LM with its adapter; under bf16 the frozen base weights are stored in bf16 once
  (directalign.models.precision) instead of being cast on every forward pass; gradient checkpointing on request.
"""

from __future__ import annotations

import contextlib

import torch
from peft import LoraConfig, get_peft_model

from directalign.errors import ConfigError
from directalign.models.attention import attention_implementation
from directalign.models.loading import disable_dropout, load_kwargs, load_model
from directalign.models.precision import store_frozen_linears_in


def _layers(model: torch.nn.Module, last: int | None) -> list[int] | None:
    if last is None:
        return None
    total = model.config.num_hidden_layers
    if not 1 <= last <= total:
        raise ConfigError(f"lora_layers must be between 1 and {total} (the model's layers); got {last}")
    return list(range(total - last, total))


def lora_config(cfg, model: torch.nn.Module, task_type: str = "CAUSAL_LM", modules_to_save=None) -> LoraConfig:
    targets = cfg.lora_target_modules
    if targets == ["all-linear"] or targets == "all-linear":
        targets = "all-linear"
    layers = _layers(model, cfg.lora_layers)
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        modules_to_save=modules_to_save,
        layers_to_transform=layers,
        layers_pattern="layers" if layers else None,
        task_type=task_type,
    )


def add_adapter(cfg, model: torch.nn.Module, task_type: str = "CAUSAL_LM", modules_to_save=None):
    """`model` with a fresh LoRA adapter from the config's LoRA keys."""
    try:
        return get_peft_model(model, lora_config(cfg, model, task_type, modules_to_save))
    except ValueError as err:  # PEFT: target modules not found in the base model
        raise ConfigError(f"lora_target_modules {cfg.lora_target_modules}: {err}") from err


def enable_checkpointing(cfg, model: torch.nn.Module) -> None:
    """Recompute each decoder layer's activations in the backward pass (non-reentrant: works with LoRA). The
    recomputation runs after the forward pass has returned, so it is given the attention implementation that
    layer ran with (ResponseLogProbs switches to segment attention for the shared and packed layouts)."""
    if getattr(cfg, "gradient_checkpointing", False):
        config = model.config

        def same_attention():
            return contextlib.nullcontext(), attention_implementation(config, config._attn_implementation)

        model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False, "context_fn": same_attention}
        )
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()


def build_policy(cfg) -> torch.nn.Module:
    """The causal LM to train: with a LoRA adapter when use_peft, else every weight trainable. The base weights
    load in torch_dtype, or quantised (load_in_4bit/8bit: QLoRA); the adapter's weights stay fp32 (PEFT)."""
    kwargs = load_kwargs(cfg)
    if kwargs["dtype"] == torch.float16 and not cfg.use_peft:
        raise ConfigError("torch_dtype float16 with full fine-tuning: fp16 weights need a loss scaler that "
                          "directalign does not run; use bfloat16, or LoRA (use_peft true)")
    model = load_model(cfg.model, attn_implementation=cfg.attn_implementation, **kwargs)
    if "quantization_config" in kwargs:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    if cfg.disable_dropout:
        disable_dropout(model)
    enable_checkpointing(cfg, model)
    if not cfg.use_peft:
        return model
    model = add_adapter(cfg, model)
    if cfg.bf16 and "quantization_config" not in kwargs and kwargs["dtype"] == torch.float32:
        store_frozen_linears_in(model, torch.bfloat16)
    return model
