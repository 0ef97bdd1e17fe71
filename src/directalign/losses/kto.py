"""KTO, Kahneman-Tversky Optimization (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic
Optimization"), for unpaired data: each completion is only labelled desirable or undesirable.

    r(x, y) = log pi(y|x) - log pi_ref(y|x)
    z0      = max(0, KL(pi || pi_ref)) estimated on mismatched (x, y') pairs, detached
    loss    = lambda_D * (1 - sigmoid(beta * (r - z0)))   for desirable y
              lambda_U * (1 - sigmoid(beta * (z0 - r)))   for undesirable y
"""

from __future__ import annotations

import torch

from directalign.losses.registry import register_loss

Hyper = float | torch.Tensor


def kto_kl_anchor(policy_mismatched_logps: torch.Tensor, ref_mismatched_logps: torch.Tensor) -> torch.Tensor:
    """The reference point z0: mean of log pi(y'|x) - log pi_ref(y'|x) over mismatched pairs, >= 0, detached.

    The paper pairs each prompt x with another example's completion y' in the same batch, so this estimates
    KL(pi(y'|x) || pi_ref(y'|x)) without sampling; as in the paper, no gradient flows through it.
    Returns a scalar tensor.
    """
    return (policy_mismatched_logps - ref_mismatched_logps).mean().clamp(min=0).detach()


@register_loss(
    "kto",
    summary="KTO for unpaired desirable/undesirable examples (Ethayarajh et al. 2024)",
    reference=True,
    data="unpaired",
    keys=("beta", "desirable_weight", "undesirable_weight"),
)
def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    labels: torch.Tensor,
    kl_anchor: Hyper,
    beta: Hyper,
    desirable_weight: Hyper = 1.0,
    undesirable_weight: Hyper = 1.0,
) -> torch.Tensor:
    """Per-example KTO loss, shape (B,), for completions labelled desirable (True) or undesirable (False).

    kl_anchor is z0 (see `kto_kl_anchor`); it is clamped at 0 and detached here too, so a raw estimate is
    safe.
    Each row uses only its own term, so a batch holding one class only, or a single example, is fine.
    1 - sigmoid(x) is written sigmoid(-x), which does not round to 0 for large x.
    """
    z0 = torch.as_tensor(kl_anchor, dtype=policy_logps.dtype, device=policy_logps.device)
    z0 = z0.clamp(min=0).detach()
    rewards = policy_logps - ref_logps
    labels = labels.to(device=policy_logps.device, dtype=torch.bool)
    desirable = desirable_weight * torch.sigmoid(-beta * (rewards - z0))
    undesirable = undesirable_weight * torch.sigmoid(-beta * (z0 - rewards))
    return torch.where(labels, desirable, undesirable)


def kto_auto_weights(n_desirable: int, n_undesirable: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) that balance the two classes: lambda_D * n_D == lambda_U * n_U.

    Follows the paper's hyperparameter guidance: lambda_U = 1 and lambda_D = n_U / n_D, so the more frequent
    class is down-weighted relative to the rarer one. 28,000 desirable and 14,000 undesirable examples give
    (0.5, 1.0); 1:10 gives (10.0, 1.0). The paper finds lambda_D * n_D / (lambda_U * n_U) anywhere in [1, 4/3]
    works; this returns the lower end. Raises ValueError when either count is not positive.
    """
    if n_desirable <= 0 or n_undesirable <= 0:
        raise ValueError(
            f"KTO needs both desirable and undesirable examples to balance them, got {n_desirable} desirable "
            f"and {n_undesirable} undesirable; set desirable_weight and undesirable_weight by hand instead"
        )
    return n_undesirable / n_desirable, 1.0
