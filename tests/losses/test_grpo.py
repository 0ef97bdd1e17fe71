"""GRPO's group advantages and clipped objective against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from directalign.losses.grpo import group_advantages, grpo_loss


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 2.0, 2.0, 2.0, 2.0])
    adv = group_advantages(rewards, group_size=4, eps=0.0)
    # Group 1: mean 0.5, sample std sqrt(((0.5)^2 * 2 + 0 + 0) / 3) = sqrt(1/6).
    std = math.sqrt(1 / 6)
    assert adv[:4].tolist() == pytest.approx([0.5 / std, -0.5 / std, 0.0, 0.0])
    assert adv[4:].tolist() == [0.0, 0.0, 0.0, 0.0]  # no spread: nothing to learn, and no 0/0
    scaled = group_advantages(rewards, 4, eps=1e-4)
    assert scaled[0].item() == pytest.approx(0.5 / (std + 1e-4))
    assert group_advantages(rewards, 4, scale=False)[:4].tolist() == pytest.approx([0.5, -0.5, 0.0, 0.0])


def test_group_advantages_refuses_groups_it_cannot_normalise():
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages(torch.tensor([1.0, 2.0]), 1)
    with pytest.raises(ValueError, match="do not split"):
        group_advantages(torch.tensor([1.0, 2.0, 3.0]), 2)


def test_first_update_is_the_plain_policy_gradient_token_averaged():
    logps = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv = torch.tensor([0.8, -1.2])
    out = grpo_loss(logps, logps.detach(), adv, mask)
    # ratio = 1 everywhere: loss = -(3 * 0.8 + 2 * -1.2) / 5 tokens = 0.
    assert out.loss.item() == pytest.approx(0.0, abs=1e-7)
    out.loss.backward()
    # d loss / d logp_t = -A / 5 on real tokens, 0 on padding.
    assert logps.grad.flatten().tolist() == pytest.approx([-0.16, -0.16, -0.16, 0.24, 0.24, 0.0])
    assert out.clip_fraction.item() == 0.0


def test_clipping_by_hand():
    old = torch.zeros(2, 2)
    # ratios: [[1.5, 0.5], [0.9, 1.1]] (log of them as the new log-probs)
    new = torch.log(torch.tensor([[1.5, 0.5], [0.9, 1.1]])).requires_grad_(True)
    adv = torch.tensor([1.0, -2.0])
    mask = torch.ones(2, 2)
    out = grpo_loss(new, old, adv, mask, epsilon=0.2)
    # Row 0, A = 1: min(1.5, 1.2) = 1.2 (clipped); min(0.5, 0.8) = 0.5 (ratio below 1 - eps with A > 0: kept).
    # Row 1, A = -2: min(-1.8, -1.8) = -1.8; min(-2.2, -2.2) = -2.2 (both inside the clip range).
    expected = -(1.2 + 0.5 - 1.8 - 2.2) / 4
    assert out.loss.item() == pytest.approx(expected)
    assert out.clip_fraction.item() == pytest.approx(1 / 4)
    out.loss.backward()
    # The clipped token has no gradient; the others -A * ratio / 4 (d ratio / d logp = ratio).
    assert new.grad.flatten().tolist() == pytest.approx([0.0, -0.5 / 4, 2 * 0.9 / 4, 2 * 1.1 / 4])


def test_negative_advantage_clips_below():
    old = torch.zeros(1, 1)
    new = torch.log(torch.tensor([[0.5]])).requires_grad_(True)
    out = grpo_loss(new, old, torch.tensor([-1.0]), torch.ones(1, 1), epsilon=0.2)
    assert out.loss.item() == pytest.approx(0.8)  # -min(-0.5, -0.8) = 0.8
    assert out.clip_fraction.item() == 1.0
    out.loss.backward()
    assert new.grad.item() == 0.0


def test_k3_kl_penalty_by_hand():
    logps = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0]])
    mask = torch.tensor([[1, 1]])
    out = grpo_loss(logps, logps.detach(), torch.tensor([0.0]), mask, beta=0.1, ref_logps=ref)
    k3 = [math.exp(d) - d - 1 for d in (-0.5, 1.0)]
    assert out.kl.item() == pytest.approx(sum(k3) / 2)
    assert out.loss.item() == pytest.approx(0.1 * sum(k3) / 2)
    out.loss.backward()
    # d k3 / d logp = 1 - exp(ref - logp)
    assert logps.grad.flatten().tolist() == pytest.approx([0.1 * (1 - math.exp(-0.5)) / 2, 0.1 * (1 - math.exp(1)) / 2])
    no_penalty = grpo_loss(logps, logps.detach(), torch.tensor([0.0]), mask, beta=0.0, ref_logps=ref)
    assert no_penalty.loss.item() == 0.0 and no_penalty.kl.item() == pytest.approx(sum(k3) / 2)
    with pytest.raises(ValueError, match="needs ref_logps"):
        grpo_loss(logps, logps.detach(), torch.tensor([0.0]), mask, beta=0.1)
