"""The final outputs of a run, each written atomically, each with a model card, each recorded in finished.json
with its checksum.

- adapter/ (LoRA) or model/ (full fine-tuning): the standard layout `from_pretrained` opens; an adapter's
  adapter_config.json names its base model by what the user gave (a hub id, a folder), the embedded model by
  its Hub id (HuggingFaceTB/SmolLM2-135M-Instruct), never a local cache path, so that it loads anywhere;
- merged/ with `merge`: the adapter merged into the base weights, a model plain from_pretrained opens;
- README.md in each: a model card in the Hub's format (directalign.engine.model_card).
"""

from __future__ import annotations

import json
from pathlib import Path

from peft import PeftModel

from directalign.engine.files import sha256_file, staged_dir
from directalign.models.embedded import EMBEDDED_MODELS
from directalign.models.loading import load_model


def base_model_id(model: str) -> str:
    """What an adapter records as its base model: the embedded model's Hub id, else the name given."""
    spec = EMBEDDED_MODELS.get(model.lower())
    return spec.hub_id if spec is not None else model


def _name_base(folder: Path, base: str) -> None:
    config_path = folder / "adapter_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = base
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_pretrained(target: Path, model, tokenizer, card: str, base: str, state_dict=None) -> dict[str, str]:
    """save_pretrained (of state_dict when given: gathered weights) into a staging folder renamed to `target`;
    returns {relative file: sha256}."""
    with staged_dir(target) as staging:
        model.save_pretrained(staging, **({} if state_dict is None else {"state_dict": state_dict}))
        tokenizer.save_pretrained(staging)
        _name_base(staging, base)
        (staging / "README.md").write_text(card)
    return {f"{target.name}/{p.name}": sha256_file(p) for p in sorted(target.iterdir()) if p.is_file()}


def gathered_state(full_state: dict | None, prefix: str = "model.") -> dict | None:
    """A sharded run's gathered weights (of the ResponseLogProbs root) as the wrapped model's own state dict."""
    if full_state is None:
        return None
    return {k.removeprefix(prefix): v for k, v in full_state.items()}


def _not_fp32(cfg) -> bool:
    return getattr(cfg, "torch_dtype", "float32") != "float32" or getattr(cfg, "load_in_4bit", False) or \
        getattr(cfg, "load_in_8bit", False)


def save_policy(cfg, model, tokenizer, out: Path, card: str, state_dict=None) -> dict[str, str]:
    """adapter/ or model/, and merged/ with cfg.merge (see the module docstring); returns the files' sha256.
    state_dict: the gathered weights of a sharded (FSDP) run."""
    base = base_model_id(cfg.model)
    use_peft = getattr(cfg, "use_peft", True) and isinstance(model, PeftModel)
    target = out / ("adapter" if use_peft else "model")
    outputs = write_pretrained(target, model, tokenizer, card, base, state_dict)
    if use_peft and getattr(cfg, "merge", False):
        if cfg.bf16 or state_dict is not None or _not_fp32(cfg):
            # Merge into the original fp32 base weights (not the bf16 or quantised copies the run trained over,
            # nor shards).
            model = PeftModel.from_pretrained(load_model(cfg.model), target)
        merged = model.merge_and_unload()
        outputs.update(write_pretrained(out / "merged", merged, tokenizer, card, base))
    return outputs
