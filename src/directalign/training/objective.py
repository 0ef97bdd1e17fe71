"""From per-response log-probs to the configured paired loss and the metrics users know from TRL.

The loss functions themselves are pure and registered beside their code (directalign.losses.registry); this
module picks the pair members out of a batch, calls the registered loss of `loss_type`, adds RPO's NLL term
where the loss reads rpo_alpha, and names the statistics.
"""

from __future__ import annotations

import torch

from directalign.data.batching import SequenceBatch
from directalign.losses.reference_free import nll_loss
from directalign.losses.registry import PairTerms, loss_function, loss_spec


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


def implicit_rewards(kind: str, t: PairTerms, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) implicit rewards, detached, in the loss's own terms (see the registry)."""
    if kind == "log_ratio":
        return beta * (t.policy_chosen - t.ref_chosen).detach(), beta * (t.policy_rejected - t.ref_rejected).detach()
    if kind == "per_token":
        chosen, rejected = t.policy_chosen / t.chosen_lengths, t.policy_rejected / t.rejected_lengths
        return beta * chosen.detach(), beta * rejected.detach()
    return beta * t.policy_chosen.detach(), beta * t.policy_rejected.detach()


class _Overridden:
    """cfg with some keys replaced (a per-pair label_smoothing tensor), for the registered loss to read."""

    def __init__(self, cfg, **values):
        self._cfg, self._values = cfg, values

    def __getattr__(self, name):
        return self._values[name] if name in self._values else getattr(self._cfg, name)


def pair_loss(cfg, t: PairTerms, label_smoothing: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair loss of cfg.loss_type and the implicit rewards of chosen and rejected (detached).

    label_smoothing: one value per pair in place of cfg.label_smoothing (a judge's confidence in each pair,
    training/judged.py); only for losses that read label_smoothing (config checks it)."""
    spec = loss_spec(cfg.loss_type, ("paired",))
    if label_smoothing is not None:
        cfg = _Overridden(cfg, label_smoothing=label_smoothing.to(t.policy_chosen.dtype))
    loss = loss_function(cfg.loss_type)(t, cfg)
    if "rpo_alpha" in spec.keys and cfg.rpo_alpha is not None:
        loss = loss + cfg.rpo_alpha * nll_loss(t.policy_chosen, t.chosen_lengths)
    chosen_rewards, rejected_rewards = implicit_rewards(spec.rewards, t, cfg.beta)
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
