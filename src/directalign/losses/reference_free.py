"""Preference losses that need no reference model: SimPO, ORPO, CPO, and the chosen-response NLL they share.

Inputs are summed per-sequence log-probabilities of shape (B,) and response lengths in tokens, shape (B,)
(ints or floats); outputs are per-pair losses of shape (B,), unreduced. Hyperparameters may be floats or
tensors. Lengths below 1 are treated as 1, so an empty response cannot divide by zero.

The NLL term and TRL 1.16 (checked against TRL's own trainer code in tests/losses/test_reference_free.py). With
S_i = log pi(y_w,i|x_i) summed over the n_i chosen response tokens and the batch mean taken by the trainer:
- ours (RPO, CPO, ORPO): the mean of per-response averages, (1/B) sum_i -S_i / n_i; each response counts once.
- TRL's SFT term of DPOTrainer (loss_type ["sigmoid", "sft"], RPO) and CPOTrainer's NLL: the token-pooled
  -sum_i S_i / sum_i n_i over the batch; each token counts once, so long responses weigh more.
  Equal when all n_i are equal; otherwise ours - TRL's = sum_i (-S_i / n_i) (1/B - n_i / N), N = sum_i n_i.
  `nll_loss(..., pooled=True)` (and `cpo_loss(..., pooled=True)`) gives TRL's value as the batch mean.
- TRL's ORPOTrainer: token-pooled over the prompt *and* the chosen response, -sum_i (S_i + P_i) / sum_i
  (n_i + p_i - 1), where P_i sums the log-probs of the prompt's tokens after its first (p_i tokens, the first
  has no prediction). Never equal to ours unless the prompts are a single token and the lengths equal; ours
  follows the paper's L_SFT (Hong et al. 2024, eq. 2), the response given the prompt, and cannot add prompt
  tokens since only response log-probs reach the loss.
The preference terms themselves equal TRL's per pair (CPO's sigmoid term; ORPO's log-odds term with lam = TRL's
beta, computed here in the input's precision where TRL casts to float32).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from directalign.losses.registry import PairTerms, register_loss

Hyper = float | torch.Tensor

# The largest average log-prob ORPO's log-odds accepts: log(1 - p) diverges as p -> 1, and its gradient
# 1 / (1 - p) is about 1 / |a| for a near 0, so capping a at -1e-6 caps that gradient near 1e6.
_MAX_AVG_LOGP = -1e-6


def _per_token(logps: torch.Tensor, lengths: torch.Tensor | float) -> torch.Tensor:
    """Length-normalised log-prob logps / |y|, with |y| clamped to at least 1."""
    lengths = torch.as_tensor(lengths, dtype=logps.dtype, device=logps.device)
    return logps / lengths.clamp(min=1)


def nll_loss(
    policy_chosen_logps: torch.Tensor, chosen_lengths: torch.Tensor | float, *, pooled: bool = False
) -> torch.Tensor:
    """Per-token negative log-likelihood of the chosen response, -log pi(y_w|x) / |y_w|.

    The supervised term of RPO (Pang et al. 2024: loss = dpo + rpo_alpha * nll), ORPO and CPO. Its batch mean
    averages per response; pooled=True divides every response by the batch's mean length instead, so that the
    batch mean is the token-pooled -sum_i log pi(y_w,i|x_i) / sum_i |y_w,i| of TRL (see the module docstring).
    Pooled values are shares of one batch statistic, not per-pair losses: only their mean over this batch means
    anything.
    """
    if not pooled:
        return -_per_token(policy_chosen_logps, chosen_lengths)
    lengths = torch.as_tensor(chosen_lengths, dtype=policy_chosen_logps.dtype, device=policy_chosen_logps.device)
    return -policy_chosen_logps / lengths.clamp(min=1).mean()


def simpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor | float,
    rejected_lengths: torch.Tensor | float,
    beta: Hyper,
    gamma: Hyper,
) -> torch.Tensor:
    """SimPO (Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward", eq. 6).

        loss = -log sigmoid(beta * log pi(y_w|x) / |y_w| - beta * log pi(y_l|x) / |y_l| - gamma)

    The reward is the length-averaged log-prob scaled by beta; gamma is the target reward margin.
    Worked check: -45 over 90 tokens vs -36 over 60, beta 2, gamma 0.5 gives -log sigmoid(-0.3) = 0.8544.
    """
    chosen_rewards = beta * _per_token(policy_chosen_logps, chosen_lengths)
    rejected_rewards = beta * _per_token(policy_rejected_logps, rejected_lengths)
    return -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)


@register_loss(
    "simpo",
    summary="SimPO, length-averaged reward with target margin simpo_gamma (Meng et al. 2024)",
    reference=False,
    data="paired",
    keys=("beta", "simpo_gamma"),
    rewards="per_token",
)
def _simpo(t: PairTerms, cfg) -> torch.Tensor:
    return simpo_loss(
        t.policy_chosen, t.policy_rejected, t.chosen_lengths, t.rejected_lengths, cfg.beta, cfg.simpo_gamma
    )


def _log_odds(avg_logps: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) for p = exp(a), computed as a - log(1 - exp(a)) without cancellation.

    log(-expm1(a)) is accurate for a near 0 and log1p(-exp(a)) for very negative a (Maechler 2012, "Accurately
    computing log(1 - exp(-|a|))", switching at a = -log 2); a is capped just below 0 so p = 1 stays finite.
    """
    a = avg_logps.clamp(max=_MAX_AVG_LOGP)
    near_zero = a > -math.log(2)
    # Each branch gets an argument valid for it, so the unused branch cannot put NaN into the gradient.
    log1m_exp = torch.where(
        near_zero,
        torch.log(-torch.expm1(torch.where(near_zero, a, -1.0))),
        torch.log1p(-torch.exp(torch.where(near_zero, -1.0, a))),
    )
    return a - log1m_exp


def orpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor | float,
    rejected_lengths: torch.Tensor | float,
    lam: Hyper,
) -> torch.Tensor:
    """ORPO (Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model", eqs. 6-7).

        loss = nll(y_w) + lam * -log sigmoid(log odds(y_w) - log odds(y_l))
        log odds(y) = a - log(1 - exp(a)),  a = log pi(y|x) / |y|  (the length-averaged log-prob)

    Stable for a from about 0 (a confident model) down to -1e4 (see `_log_odds`). The NLL is over the chosen
    response only, per response; TRL's ORPOTrainer pools the prompt's tokens in too (module docstring).
    """
    chosen_avg = _per_token(policy_chosen_logps, chosen_lengths)
    rejected_avg = _per_token(policy_rejected_logps, rejected_lengths)
    odds_ratio_loss = -F.logsigmoid(_log_odds(chosen_avg) - _log_odds(rejected_avg))
    return -chosen_avg + lam * odds_ratio_loss


@register_loss(
    "orpo",
    summary="ORPO, NLL plus orpo_lambda times the odds-ratio term (Hong et al. 2024); beta scales logged rewards",
    reference=False,
    data="paired",
    keys=("beta", "orpo_lambda"),
    rewards="per_token",
)
def _orpo(t: PairTerms, cfg) -> torch.Tensor:
    return orpo_loss(t.policy_chosen, t.policy_rejected, t.chosen_lengths, t.rejected_lengths, cfg.orpo_lambda)


def cpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor | float,
    beta: Hyper,
    *,
    pooled: bool = False,
) -> torch.Tensor:
    """CPO (Xu et al. 2024, "Contrastive Preference Optimization"): DPO without the reference, plus NLL.

        loss = -log sigmoid(beta * (log pi(y_w|x) - log pi(y_l|x))) - log pi(y_w|x) / |y_w|

    The preference term uses summed log-probs, as TRL's CPOTrainer (loss_type "sigmoid"). The NLL term is
    normalised per response (`nll_loss`); TRL's (cpo_alpha = 1) pools the batch's chosen tokens, which
    pooled=True reproduces in the batch mean. The two agree when the chosen responses of a batch have one length.
    (The paper writes the summed NLL, which weighs long chosen responses more still.)
    """
    preference = -F.logsigmoid(beta * (policy_chosen_logps - policy_rejected_logps))
    return preference + nll_loss(policy_chosen_logps, chosen_lengths, pooled=pooled)


@register_loss(
    "cpo",
    summary="CPO, reference-free DPO plus the chosen NLL (Xu et al. 2024)",
    reference=False,
    data="paired",
    keys=("beta",),
    rewards="logp",
)
def _cpo(t: PairTerms, cfg) -> torch.Tensor:
    return cpo_loss(t.policy_chosen, t.policy_rejected, t.chosen_lengths, cfg.beta)
