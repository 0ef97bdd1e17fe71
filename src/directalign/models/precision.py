"""bf16 storage for the weights nothing trains.

Under bf16 autocast every nn.Linear casts its fp32 weight to bf16 on each call, and autocast caches that cast
only for weights that require a gradient: the frozen base weights under LoRA (nearly all of them) are cast again
on every forward pass. Storing them in bf16 once gives the same numbers (autocast rounds to nearest, as
`.to(torch.bfloat16)` does) without the copies, and halves their memory. Trainable weights (LoRA adapters, or a
fully fine-tuned model) stay fp32, so the optimizer updates full-precision values; the embedding, norms and the
LM head (tied to the embedding here, and computed in fp32 by directalign.models.logprobs) are left alone.

When autocast is off (generation, evaluation outside the training step), hooks cast the input of each such
layer to the weight's dtype and its output back to the input's, so the rest of the model sees what it would see
with fp32 weights and the model runs in either mode.
"""

from __future__ import annotations

import torch
from torch import nn


def store_frozen_linears_in(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Cast the frozen weights (and biases) of the model's nn.Linear layers, the output head excepted, to dtype;
    returns how many parameters were cast."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    cast = 0
    for module in model.modules():
        if not isinstance(module, nn.Linear) or module is head or module.weight.requires_grad:
            continue
        if module.bias is not None and module.bias.requires_grad:
            continue
        for param in (module.weight, module.bias):
            if param is not None and param.dtype != dtype:
                param.data = param.data.to(dtype)
                cast += param.numel()
        if not hasattr(module, "_directalign_input_dtype"):
            module.register_forward_pre_hook(_cast_input_to_weight_dtype)
            module.register_forward_hook(_cast_output_to_input_dtype)
        module._directalign_input_dtype = None
    return cast


def _cast_input_to_weight_dtype(module: nn.Linear, args: tuple):
    x = args[0]
    module._directalign_input_dtype = None
    if x.dtype != module.weight.dtype and not torch.is_autocast_enabled(x.device.type):
        module._directalign_input_dtype = x.dtype
        return (x.to(module.weight.dtype), *args[1:])
    return None


def _cast_output_to_input_dtype(module: nn.Linear, args: tuple, output: torch.Tensor):
    if module._directalign_input_dtype is not None:
        return output.to(module._directalign_input_dtype)
    return None
