"""GRPO, Group Relative Policy Optimization (Shao et al. 2024, "DeepSeekMath", section 4.1).

For each prompt a group of G completions is sampled and scored; a completion's advantage is its reward
normalised within its group, and every one of its tokens gets that advantage in PPO's clipped objective:

    A_i           = (r_i - mean(r_group)) / (std(r_group) + eps)
    ratio_t       = pi(y_t | x, y_<t) / pi_old(y_t | x, y_<t)
    loss_t        = -min(ratio_t * A_i, clip(ratio_t, 1 - epsilon, 1 + epsilon) * A_i) + beta * kl_t
    kl_t          = exp(ref_t - logp_t) - (ref_t - logp_t) - 1      (the k3 estimator, eq. 4; >= 0)
    loss          = sum of loss_t over every completion token of the batch / number of those tokens

Token-level averaging (DAPO, Yu et al. 2025; TRL's "dapo" / "bnpo" normalisation) weighs every token the same,
so a long completion is not down-weighted per token as with the paper's per-sequence mean. With one update per
generation batch pi_old is pi (detached): the ratio is 1 and the gradient is the plain policy gradient, but the
clipping applies from the second update on the same samples (`num_iterations` > 1).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from directalign.losses.registry import register_loss


class GRPOLoss(NamedTuple):
    """The scalar loss and what to log: mean per-token KL (k3) and the fraction of tokens clipped."""

    loss: torch.Tensor
    kl: torch.Tensor
    clip_fraction: torch.Tensor


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4, scale: bool = True) -> torch.Tensor:
    """(r - group mean) / (group std + eps) for rewards laid out group after group, shape (B * G,).

    std is the sample standard deviation (Bessel-corrected, as TRL computes it), so a group needs G >= 2. A group
    whose rewards are all equal gets advantage 0 and teaches nothing. scale=False leaves out the division
    (Dr. GRPO, Liu et al. 2025, which argues it favours prompts that are too easy or too hard).
    """
    if group_size < 2:
        raise ValueError(f"GRPO needs at least 2 completions per group to compare, got {group_size}")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        std = grouped.std(dim=1, keepdim=True)
        centred = torch.where(std > 0, centred / (std + eps), torch.zeros_like(centred))
    return centred.reshape(-1)


@register_loss(
    "grpo",
    summary="GRPO's clipped group-relative policy gradient with a k3 KL penalty beta (Shao et al. 2024)",
    reference=True,
    data="grouped",
    keys=("beta", "epsilon", "num_iterations", "scale_rewards"),
    rewards="none",
)
def grpo_loss(
    policy_logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon: float = 0.2,
    beta: float = 0.0,
    ref_logps: torch.Tensor | None = None,
    num_tokens: torch.Tensor | float | None = None,
) -> GRPOLoss:
    """The clipped GRPO objective over per-token log-probs (see the module docstring).

    policy_logps, old_logps, ref_logps and mask are (num_completions, T); mask is 1 on completion tokens and 0 on
    padding; advantages is (num_completions,). old_logps and ref_logps carry no gradient. beta = 0 leaves out the
    KL term (ref_logps may then be None). num_tokens is what the token sums are divided by: by default this
    batch's completion tokens; a trainer spreading one batch over several processes passes the count over all
    of them, so that the loss means the same as on one process.
    """
    if beta and ref_logps is None:
        raise ValueError("a KL penalty (beta > 0) needs ref_logps")
    mask = mask.to(policy_logps.dtype)
    ratio = torch.exp(policy_logps - old_logps.detach())
    advantage = advantages[:, None].to(policy_logps.dtype)
    unclipped = ratio * advantage
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * advantage
    per_token = -torch.min(unclipped, clipped)
    # Where the clipped term is the smaller one, the token gets no gradient: ratio pushed past the trust region.
    clipped_tokens = ((ratio < 1 - epsilon) & (advantage < 0)) | ((ratio > 1 + epsilon) & (advantage > 0))
    tokens = (mask.sum() if num_tokens is None else torch.as_tensor(num_tokens, dtype=mask.dtype)).clamp(min=1)
    kl = torch.zeros((), dtype=policy_logps.dtype, device=policy_logps.device)
    if ref_logps is not None:
        delta = ref_logps.detach() - policy_logps
        per_token_kl = torch.exp(delta) - delta - 1
        kl = (per_token_kl * mask).sum() / tokens
        if beta:
            per_token = per_token + beta * per_token_kl
    loss = (per_token * mask).sum() / tokens
    clip_fraction = (clipped_tokens.to(mask.dtype) * mask).sum() / tokens
    return GRPOLoss(loss, kl.detach(), clip_fraction.detach())
