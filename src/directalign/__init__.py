"""directalign: direct preference alignment of language models (DPO and its family).

The Python API mirrors the command line (directalign.api, docs/api.md):

    from directalign import TrainConfig, train, evaluate

Names load on first use (PEP 562), so that `import directalign` stays fast and imports no torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = ("GRPOConfig", "IterativeDPOConfig", "OnlineDPOConfig", "RewardModelConfig", "TrainConfig", "diagnose_data",
        "evaluate", "grpo", "inspect_data", "iterative_dpo", "load_data", "online_dpo", "train",
        "train_reward_model")

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module("directalign.api"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'directalign' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
