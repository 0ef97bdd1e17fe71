"""A model card (README.md in the Hub's model-card format: YAML front matter, then Markdown) for every saved
adapter or model: base model, data, method and hyperparameters, held-out metrics before and after, the run's
health warnings, and the directalign version."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from directalign import __version__
from directalign.config.keys import default_of
from directalign.data.hub import looks_like_hub_id
from directalign.secrets import redact

SHOWN_ALWAYS = ("loss_type", "beta", "learning_rate", "use_peft", "lora_r", "lora_alpha", "max_steps",
                "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps", "seed")


def _hyperparameters(cfg) -> list[tuple[str, object]]:
    rows = []
    for f in dataclasses.fields(cfg):
        if not f.metadata.get("result", True) or f.name in ("data", "eval_data", "model", "prompts"):
            continue
        value = getattr(cfg, f.name)
        if f.name in SHOWN_ALWAYS or value != default_of(f):
            rows.append((f.name, value))
    return rows


def _is_hub_id(name: str) -> bool:
    return looks_like_hub_id(name) and not Path(name).exists()


def hub_datasets(cfg) -> list[str]:
    """The Hub dataset ids among the run's data (for the card's `datasets:`), not local files or folders."""
    names = [getattr(cfg, name, None) for name in ("data", "eval_data", "prompts", "eval_prompts")]
    return [n for n in dict.fromkeys(names) if isinstance(n, str) and looks_like_hub_id(n) and not Path(n).exists()]


def _metrics_table(before: dict | None, after: dict | None) -> list[str]:
    if not after:
        return ["No held-out evaluation was run."]
    lines = ["| held-out metric | before | after |", "|---|---|---|"]
    for name, value in after.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or name.endswith("_time_s"):
            continue
        old = (before or {}).get(name)
        shown = f"{old:.4g}" if isinstance(old, int | float) else "-"
        lines.append(f"| {name} | {shown} | {value:.4g} |")
    return lines


def model_card(
    cfg,
    *,
    base_model: str,
    adapter: bool,
    data: str,
    steps: int,
    eval_before: dict | None,
    eval_after: dict | None,
    warnings: list[str],
    dataset_id: str | None = None,
) -> str:
    method = getattr(cfg, "loss_type", None) or cfg.command
    front = {
        "base_model": base_model if _is_hub_id(base_model) else None,  # the Hub refuses a local path here
        "library_name": "peft" if adapter else "transformers",
        "tags": ["directalign", cfg.command, method] + (["lora"] if adapter else []),
        "pipeline_tag": "text-generation",
    }
    front = {k: v for k, v in front.items() if v is not None}
    datasets = [dataset_id] if dataset_id else hub_datasets(cfg)
    if datasets:
        front["datasets"] = datasets
    load = (
        'from peft import AutoPeftModelForCausalLM\nmodel = AutoPeftModelForCausalLM.from_pretrained("PATH")'
        if adapter
        else 'from transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained("PATH")'
    )
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# {'LoRA adapter' if adapter else 'Model'} trained with directalign {cfg.command}",
        "",
        f"- base model: `{base_model}`",
        f"- data: {data}" + "".join(
            f", {key} `{getattr(cfg, key)}`" for key in ("data_split", "data_config") if getattr(cfg, key, None)
        ),
        f"- method: `{cfg.command}` with `{method}`, {steps} optimizer steps",
        f"- directalign {__version__}",
        "",
        "## Held-out evaluation",
        "",
        *_metrics_table(eval_before, eval_after),
        "",
        "## Hyperparameters",
        "",
        "| key | value |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in _hyperparameters(cfg)],
        "",
        "## Run health",
        "",
        *([f"- {w}" for w in warnings] or ["No health warning was raised."]),
        "",
        "## Use",
        "",
        "```python",
        load,
        "```",
        "",
    ]
    return redact("\n".join(lines))
