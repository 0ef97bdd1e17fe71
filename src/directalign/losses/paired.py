"""Paired preference losses that compare the policy with a reference model: DPO, cDPO, robust DPO, IPO, SLiC.

Every function takes per-sequence log-probabilities of shape (B,) (one entry per preference pair) and returns
the per-pair loss of shape (B,), unreduced. Hyperparameters may be floats or tensors that broadcast to (B,).

All of them are functions of the same quantity, the difference of the policy/reference log-ratios

    h = (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))

computed by `_log_ratio_margin`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from directalign.errors import ConfigError
from directalign.losses.registry import PairTerms, register_loss

Hyper = float | torch.Tensor


def _log_ratio_margin(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
) -> torch.Tensor:
    """h = (pc - rc) - (pr - rr), the chosen log-ratio minus the rejected one, shape (B,). Plain numbers are
    read as float64 tensors, so that a worked example can be checked by hand."""
    pc, pr, rc, rr = _as_tensors(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return (pc - rc) - (pr - rr)


def _as_tensors(*values) -> list[torch.Tensor]:
    """Tensors as they are; floats (and lists of them) as float64 tensors on the first tensor's device."""
    first = next((v for v in values if isinstance(v, torch.Tensor)), None)
    if first is not None:
        return [v if isinstance(v, torch.Tensor) else torch.as_tensor(v, dtype=first.dtype, device=first.device)
                for v in values]
    return [torch.as_tensor(v, dtype=torch.float64) for v in values]


def implicit_rewards(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: Hyper) -> torch.Tensor:
    """DPO's implicit reward r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)) (Rafailov et al. 2023, eq. 5).

    The paper's prompt-only term beta * log Z(x) cancels in every pairwise comparison and is left out.
    Not detached: callers that only log it should detach it themselves.
    """
    return beta * (policy_logps - ref_logps)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: Hyper,
    label_smoothing: Hyper = 0.0,
) -> torch.Tensor:
    """Sigmoid DPO (Rafailov et al. 2023, eq. 7), and conservative DPO (cDPO) when label_smoothing > 0.

        loss = -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)

    eps = label_smoothing is the assumed probability that a pair's label is flipped (Mitchell 2023, "A note on
    DPO with noisy preferences"); eps = 0 is plain DPO. TRL 1.16's "sigmoid" ignores label_smoothing; this
    does not. Worked check: pc, pr = -10, -15, rc, rr = -11, -14, beta = 0.1 gives h = 2 and
    loss = -log sigmoid(0.2) = 0.5981.
    """
    logits = beta * _log_ratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    # logsigmoid rather than log(sigmoid(.)): finite for |beta * h| in the thousands and in its gradient.
    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


@register_loss(
    "sigmoid",
    summary="DPO (Rafailov et al. 2023); cDPO with label_smoothing > 0",
    reference=True,
    data="paired",
    keys=("beta", "label_smoothing", "rpo_alpha"),
)
def _sigmoid(t: PairTerms, cfg) -> torch.Tensor:
    return dpo_loss(t.policy_chosen, t.policy_rejected, t.ref_chosen, t.ref_rejected, cfg.beta, cfg.label_smoothing)


def robust_dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: Hyper,
    label_smoothing: Hyper,
) -> torch.Tensor:
    """Robust DPO (Chowdhury et al. 2024, "Provably Robust DPO"): an unbiased loss under label noise eps.

        loss = ((1 - eps) * -log sigmoid(beta * h) - eps * -log sigmoid(-beta * h)) / (1 - 2 * eps)

    In expectation over labels flipped with probability eps this equals the clean DPO loss, so a single pair's
    loss can be negative. eps = 0 is plain DPO. Raises ConfigError for eps >= 0.5, where the denominator
    vanishes or flips sign.
    """
    if bool(torch.any(torch.as_tensor(label_smoothing) >= 0.5)):
        raise ConfigError(f"robust DPO needs label_smoothing < 0.5, got {label_smoothing}")
    logits = beta * _log_ratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    noisy = (1 - label_smoothing) * -F.logsigmoid(logits) - label_smoothing * -F.logsigmoid(-logits)
    return noisy / (1 - 2 * label_smoothing)


@register_loss(
    "robust",
    summary="robust DPO, unbiased under label noise label_smoothing (Chowdhury et al. 2024)",
    reference=True,
    data="paired",
    keys=("beta", "label_smoothing", "rpo_alpha"),
)
def _robust(t: PairTerms, cfg) -> torch.Tensor:
    return robust_dpo_loss(
        t.policy_chosen, t.policy_rejected, t.ref_chosen, t.ref_rejected, cfg.beta, cfg.label_smoothing
    )


def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: Hyper,
) -> torch.Tensor:
    """IPO (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human Preferences",
    eq. 17).

        loss = (h - 1 / (2 * beta))^2

    beta plays the role of the paper's tau: it regresses the log-ratio margin onto 1 / (2 * tau). The paper
    writes h on sequence log-probs; TRL passes length-averaged (per-token) log-probs, which its authors say
    the paper's experiments used, and which changes beta's useful range a lot. This function uses whatever it
    is given, summed or averaged; the trainer passes what the config asks for.
    """
    h = _log_ratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return (h - 1 / (2 * beta)) ** 2


@register_loss(
    "ipo",
    summary="IPO on length-averaged log-ratios (Azar et al. 2023); beta is the paper's tau",
    reference=True,
    data="paired",
    keys=("beta", "rpo_alpha"),
)
def _ipo(t: PairTerms, cfg) -> torch.Tensor:
    # Length-averaged log-ratios, as IPO's authors confirmed to TRL (see ipo_loss).
    c, r = t.chosen_lengths, t.rejected_lengths
    return ipo_loss(t.policy_chosen / c, t.policy_rejected / r, t.ref_chosen / c, t.ref_rejected / r, cfg.beta)


def hinge_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: Hyper,
) -> torch.Tensor:
    """SLiC-style hinge loss on the reference-normalised margin (Zhao et al. 2023, "SLiC-HF"; TRL's "hinge").

        loss = max(0, 1 - beta * h)

    Zero once the margin exceeds 1 / beta, so well-separated pairs stop contributing gradient.
    """
    h = _log_ratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return torch.relu(1 - beta * h)


@register_loss(
    "hinge",
    summary="SLiC hinge on the log-ratio margin (Zhao et al. 2023)",
    reference=True,
    data="paired",
    keys=("beta", "rpo_alpha"),
)
def _hinge(t: PairTerms, cfg) -> torch.Tensor:
    return hinge_loss(t.policy_chosen, t.policy_rejected, t.ref_chosen, t.ref_rejected, cfg.beta)
