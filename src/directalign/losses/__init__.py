"""The preference-loss family as pure functions over per-sequence log-probs, one module per family:
paired.py (DPO, cDPO, robust DPO, IPO, hinge), reference_free.py (SimPO, ORPO, CPO), kto.py, grpo.py.

Each loss registers itself beside its function (`directalign.losses.registry`). The names below load their
module on first use (PEP 562), so that the registry, which the command line reads, imports no torch.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "dpo_loss": "paired",
    "hinge_loss": "paired",
    "implicit_rewards": "paired",
    "ipo_loss": "paired",
    "robust_dpo_loss": "paired",
    "cpo_loss": "reference_free",
    "nll_loss": "reference_free",
    "orpo_loss": "reference_free",
    "simpo_loss": "reference_free",
    "kto_auto_weights": "kto",
    "kto_kl_anchor": "kto",
    "kto_loss": "kto",
    "GRPOLoss": "grpo",
    "group_advantages": "grpo",
    "grpo_loss": "grpo",
    "LOSSES": "registry",
    "LossSpec": "registry",
    "PairTerms": "registry",
    "loss_names": "registry",
    "loss_spec": "registry",
    "register_loss": "registry",
}
FAMILIES = ("paired", "reference_free", "kto", "grpo")  # every module that registers losses

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'directalign.losses' has no attribute {name!r}")
    return getattr(importlib.import_module(f"directalign.losses.{_HOMES[name]}"), name)
