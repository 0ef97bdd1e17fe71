"""torch_dtype and 4/8-bit loading of the base weights."""

from __future__ import annotations

import pytest
import torch

from directalign.config import load_config
from directalign.engine.run import precision
from directalign.errors import ConfigError
from directalign.models.loading import disable_dropout, load_kwargs
from directalign.models.policy import build_policy
from tests.conftest import tiny_llama


def _cfg(tiny_model_dir, **kw):
    return load_config("train", overrides={"model": str(tiny_model_dir), **kw})


def test_bf16_base_weights_with_an_fp32_adapter(tiny_model_dir):
    model = build_policy(_cfg(tiny_model_dir, torch_dtype="bfloat16"))
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}  # the trained weights stay fp32
    assert {d for n, d in dtypes.items() if "lora_" not in n} == {torch.bfloat16}
    assert precision(_cfg(tiny_model_dir, torch_dtype="bfloat16")) == "bf16 base weights"
    assert precision(_cfg(tiny_model_dir, torch_dtype="bfloat16", bf16=True)) == "bf16 base weights, bf16 autocast"
    assert precision(_cfg(tiny_model_dir)) == "fp32"


def test_fp16_full_fine_tuning_is_refused(tiny_model_dir):
    with pytest.raises(ConfigError, match="torch_dtype float16 with full fine-tuning"):
        build_policy(_cfg(tiny_model_dir, torch_dtype="float16", use_peft=False))


def test_quantised_loading_needs_cuda_and_lora(tiny_model_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match=r"^load_in_4bit needs a CUDA GPU \(bitsandbytes\); this machine has none"):
        load_kwargs(_cfg(tiny_model_dir, load_in_4bit=True))
    with pytest.raises(ConfigError, match="load_in_4bit and load_in_8bit: choose one"):
        _cfg(tiny_model_dir, load_in_4bit=True, load_in_8bit=True)
    with pytest.raises(ConfigError, match="set use_peft true"):
        _cfg(tiny_model_dir, load_in_8bit=True, use_peft=False)


def test_disable_dropout_zeroes_every_dropout():
    model = tiny_llama(attention_dropout=0.3)
    assert {m.attention_dropout for m in model.modules() if hasattr(m, "attention_dropout")} == {0.3}
    assert disable_dropout(model) == 2  # one attention module per layer
    assert {m.attention_dropout for m in model.modules() if hasattr(m, "attention_dropout")} == {0.0}


@pytest.mark.cuda
def test_qlora_trains_on_cuda(tiny_model_dir, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    pytest.importorskip("bitsandbytes")
    from directalign.training.dpo import train

    cfg = _cfg(tiny_model_dir, load_in_4bit=True, output_dir=str(tmp_path / "run"), max_steps=2,
               builtin_train_pairs=8, builtin_eval_pairs=4, kl_prompts=0, learning_rate=1e-2)
    result = train(cfg)
    assert result.steps == 2 and (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert result.eval_after["n_pairs"] == 4
