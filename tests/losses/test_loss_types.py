"""LOSS_TYPES: each loss name maps to its function and says whether it needs a reference model."""

from __future__ import annotations

import pytest
import torch

from directalign.losses import LOSS_TYPES, dpo_loss, kto_loss, orpo_loss


def test_reference_requirements():
    needs = {name: spec.needs_reference for name, spec in LOSS_TYPES.items()}
    assert needs == {
        "sigmoid": True,
        "dpo": True,
        "robust": True,
        "ipo": True,
        "hinge": True,
        "simpo": False,
        "orpo": False,
        "cpo": False,
        "kto": True,
    }


def test_entries_unpack_as_pairs():
    fn, needs_reference = LOSS_TYPES["orpo"]
    assert fn is orpo_loss and needs_reference is False
    assert LOSS_TYPES["sigmoid"].fn is LOSS_TYPES["dpo"].fn is dpo_loss
    assert LOSS_TYPES["kto"].fn is kto_loss


@pytest.mark.parametrize("name", ["sigmoid", "robust", "ipo", "hinge"])
def test_reference_losses_take_the_shared_keywords(name):
    logps = {
        "policy_chosen_logps": torch.tensor([-5.0, -6.0]),
        "policy_rejected_logps": torch.tensor([-7.0, -5.5]),
        "ref_chosen_logps": torch.tensor([-5.5, -6.0]),
        "ref_rejected_logps": torch.tensor([-6.5, -6.0]),
    }
    extra = {"label_smoothing": 0.1} if name == "robust" else {}
    assert LOSS_TYPES[name].fn(**logps, beta=0.1, **extra).shape == (2,)
