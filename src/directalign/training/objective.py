"""From per-response log-probs to the configured loss and the metrics users know from TRL.

The loss functions themselves are pure (directalign.losses); this module only picks the pair members out of a
batch, chooses the loss by `loss_type`, and names the statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from directalign.data.batching import SequenceBatch
from directalign.losses import (
    cpo_loss,
    dpo_loss,
    hinge_loss,
    ipo_loss,
    nll_loss,
    orpo_loss,
    robust_dpo_loss,
    simpo_loss,
)
from directalign.training.config import TrainConfig


@dataclass
class PairTerms:
    """The pair-level quantities of one batch: (num_pairs,) tensors."""

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    ref_chosen: torch.Tensor | None
    ref_rejected: torch.Tensor | None
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor


def pair_terms(policy_logps: torch.Tensor, ref_logps: torch.Tensor | None, batch: SequenceBatch) -> PairTerms:
    c, r = batch.chosen_index, batch.rejected_index
    lengths = batch.response_lengths.to(policy_logps.dtype).clamp(min=1)
    return PairTerms(
        policy_chosen=policy_logps[c],
        policy_rejected=policy_logps[r],
        ref_chosen=None if ref_logps is None else ref_logps[c],
        ref_rejected=None if ref_logps is None else ref_logps[r],
        chosen_lengths=lengths[c],
        rejected_lengths=lengths[r],
    )


def pair_loss(cfg: TrainConfig, t: PairTerms) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair loss and the implicit rewards of chosen and rejected (detached)."""
    kind = cfg.loss_type
    if kind in ("sigmoid", "robust", "ipo", "hinge"):
        refs = (t.ref_chosen, t.ref_rejected)
        if kind == "ipo":
            # IPO on length-averaged log-ratios, as its authors confirmed to TRL; beta is the paper's tau.
            four = (
                t.policy_chosen / t.chosen_lengths,
                t.policy_rejected / t.rejected_lengths,
                refs[0] / t.chosen_lengths,
                refs[1] / t.rejected_lengths,
            )
            loss = ipo_loss(*four, beta=cfg.beta)
        elif kind == "sigmoid":
            loss = dpo_loss(
                t.policy_chosen, t.policy_rejected, *refs, beta=cfg.beta, label_smoothing=cfg.label_smoothing
            )
        elif kind == "robust":
            loss = robust_dpo_loss(
                t.policy_chosen, t.policy_rejected, *refs, beta=cfg.beta, label_smoothing=cfg.label_smoothing
            )
        else:
            loss = hinge_loss(t.policy_chosen, t.policy_rejected, *refs, beta=cfg.beta)
        chosen_rewards = cfg.beta * (t.policy_chosen - t.ref_chosen).detach()
        rejected_rewards = cfg.beta * (t.policy_rejected - t.ref_rejected).detach()
    elif kind == "simpo":
        loss = simpo_loss(
            t.policy_chosen,
            t.policy_rejected,
            t.chosen_lengths,
            t.rejected_lengths,
            beta=cfg.beta,
            gamma=cfg.simpo_gamma,
        )
        chosen_rewards = cfg.beta * (t.policy_chosen / t.chosen_lengths).detach()
        rejected_rewards = cfg.beta * (t.policy_rejected / t.rejected_lengths).detach()
    elif kind == "orpo":
        loss = orpo_loss(
            t.policy_chosen, t.policy_rejected, t.chosen_lengths, t.rejected_lengths, lam=cfg.orpo_lambda
        )
        chosen_rewards = cfg.beta * (t.policy_chosen / t.chosen_lengths).detach()
        rejected_rewards = cfg.beta * (t.policy_rejected / t.rejected_lengths).detach()
    elif kind == "cpo":
        loss = cpo_loss(t.policy_chosen, t.policy_rejected, t.chosen_lengths, beta=cfg.beta)
        chosen_rewards = cfg.beta * t.policy_chosen.detach()
        rejected_rewards = cfg.beta * t.policy_rejected.detach()
    else:
        raise ValueError(f"unknown loss_type {kind!r}")
    if cfg.rpo_alpha is not None and kind in ("sigmoid", "robust", "ipo", "hinge"):
        loss = loss + cfg.rpo_alpha * nll_loss(t.policy_chosen, t.chosen_lengths)
    return loss, chosen_rewards, rejected_rewards


def pair_metrics(t: PairTerms, loss: torch.Tensor, chosen_rewards, rejected_rewards) -> dict[str, float]:
    """Means over the batch's pairs, named as TRL names them so that dashboards carry over."""
    margins = chosen_rewards - rejected_rewards
    metrics = {
        "loss": loss.detach().mean().item(),
        "rewards/chosen": chosen_rewards.mean().item(),
        "rewards/rejected": rejected_rewards.mean().item(),
        "rewards/margins": margins.mean().item(),
        "rewards/accuracies": (margins > 0).float().mean().item(),
        "logps/chosen": t.policy_chosen.detach().mean().item(),
        "logps/rejected": t.policy_rejected.detach().mean().item(),
        "lengths/chosen": t.chosen_lengths.mean().item(),
        "lengths/rejected": t.rejected_lengths.mean().item(),
    }
    if t.ref_chosen is not None:
        # Mean log-ratio log pi/pi_ref over the training responses: a KL(pi || pi_ref) estimate per sequence
        # that is exact only for samples of pi; it still shows how far the policy has moved on this data.
        ratios = torch.cat([t.policy_chosen - t.ref_chosen, t.policy_rejected - t.ref_rejected]).detach()
        metrics["kl"] = ratios.mean().item()
    return metrics
