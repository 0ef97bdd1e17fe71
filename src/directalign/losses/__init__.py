"""The preference-loss family as pure functions over per-sequence log-probs, one module per family.

`LOSS_TYPES` maps each loss name a config may use to its function and whether it needs reference log-probs,
so the trainer knows whether to build (or cache) a reference model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from directalign.losses.grpo import GRPOLoss, group_advantages, grpo_loss
from directalign.losses.kto import kto_auto_weights, kto_kl_anchor, kto_loss
from directalign.losses.paired import dpo_loss, hinge_loss, implicit_rewards, ipo_loss, robust_dpo_loss
from directalign.losses.reference_free import cpo_loss, nll_loss, orpo_loss, simpo_loss


class LossType(NamedTuple):
    """A loss function and whether it compares against a reference model."""

    fn: Callable[..., object]
    needs_reference: bool


LOSS_TYPES: dict[str, LossType] = {
    "sigmoid": LossType(dpo_loss, True),
    "dpo": LossType(dpo_loss, True),
    "robust": LossType(robust_dpo_loss, True),
    "ipo": LossType(ipo_loss, True),
    "hinge": LossType(hinge_loss, True),
    "simpo": LossType(simpo_loss, False),
    "orpo": LossType(orpo_loss, False),
    "cpo": LossType(cpo_loss, False),
    "kto": LossType(kto_loss, True),
}

__all__ = [
    "GRPOLoss",
    "LOSS_TYPES",
    "LossType",
    "cpo_loss",
    "dpo_loss",
    "group_advantages",
    "grpo_loss",
    "hinge_loss",
    "implicit_rewards",
    "ipo_loss",
    "kto_auto_weights",
    "kto_kl_anchor",
    "kto_loss",
    "nll_loss",
    "orpo_loss",
    "robust_dpo_loss",
    "simpo_loss",
]
