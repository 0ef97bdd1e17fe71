"""KTO loss, its KL reference point and class-balancing weights, against the paper's formulas."""

from __future__ import annotations

import math
import random

import pytest
import torch

from directalign.losses import kto_auto_weights, kto_kl_anchor, kto_loss


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def kto_formula(policy: float, ref: float, desirable: bool, z0: float, beta: float, w_d: float, w_u: float):
    """(loss, d loss / d policy) for one example; z0 is already clamped at 0."""
    x = beta * (policy - ref - z0)
    if desirable:
        return w_d * (1 - sigmoid(x)), -w_d * beta * sigmoid(x) * (1 - sigmoid(x))
    return w_u * (1 - sigmoid(-x)), w_u * beta * sigmoid(x) * (1 - sigmoid(x))


def random_batch(rng: random.Random, n: int):
    policy = [rng.uniform(-60.0, -5.0) for _ in range(n)]
    ref = [p + rng.uniform(-4.0, 4.0) for p in policy]
    labels = [rng.random() < 0.5 for _ in range(n)]
    return policy, ref, labels


@pytest.mark.parametrize("kl_anchor", [0.0, 0.7, -2.0])
@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.5, 1.0), (1.0, 1.33)])
def test_kto_matches_formula_and_gradient(kl_anchor, weights):
    policy, ref, labels = random_batch(random.Random(61), 24)
    beta = 0.3
    policy_t = torch.tensor(policy, dtype=torch.float64, requires_grad=True)
    loss = kto_loss(
        policy_t,
        torch.tensor(ref, dtype=torch.float64),
        torch.tensor(labels),
        kl_anchor=kl_anchor,
        beta=beta,
        desirable_weight=weights[0],
        undesirable_weight=weights[1],
    )
    z0 = max(kl_anchor, 0.0)
    expected = [kto_formula(p, r, y, z0, beta, *weights) for p, r, y in zip(policy, ref, labels, strict=True)]
    assert loss.tolist() == pytest.approx([e[0] for e in expected], rel=1e-10)
    (grad,) = torch.autograd.grad(loss.sum(), [policy_t])
    assert grad.tolist() == pytest.approx([e[1] for e in expected], rel=1e-9)


def test_kl_anchor_gets_no_gradient():
    anchor = torch.tensor(0.5, requires_grad=True)
    loss = kto_loss(torch.tensor([-3.0, -4.0]), torch.tensor([-4.0, -3.0]), torch.tensor([True, False]), anchor, 0.1)
    assert not loss.requires_grad


def test_kl_anchor_estimate_is_clamped_mean_and_detached():
    policy = torch.tensor([-10.0, -12.0, -7.0], requires_grad=True)
    anchor = kto_kl_anchor(policy, torch.tensor([-11.0, -11.5, -8.0]))
    assert anchor.item() == pytest.approx((1.0 - 0.5 + 1.0) / 3)
    assert not anchor.requires_grad
    assert kto_kl_anchor(torch.tensor([-12.0]), torch.tensor([-10.0])).item() == 0.0


@pytest.mark.parametrize("labels", [[True], [False], [True, True, True], [False, False]])
def test_one_class_batches_and_batch_of_one_are_finite(labels):
    n = len(labels)
    policy = torch.full((n,), -20.0, requires_grad=True)
    loss = kto_loss(policy, torch.full((n,), -21.0), torch.tensor(labels), kl_anchor=0.2, beta=0.1)
    (grad,) = torch.autograd.grad(loss.sum(), [policy])
    assert loss.shape == (n,)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    x = 0.1 * (1.0 - 0.2)
    assert loss[0].item() == pytest.approx(1 - sigmoid(x) if labels[0] else 1 - sigmoid(-x), rel=1e-6)


def test_kto_extreme_rewards_are_finite_and_saturate():
    policy = torch.tensor([-1e4, -1.0, -1e4, -1.0], requires_grad=True)
    ref = torch.tensor([-1.0, -1e4, -1.0, -1e4])
    loss = kto_loss(policy, ref, torch.tensor([True, True, False, False]), kl_anchor=0.0, beta=10.0)
    (grad,) = torch.autograd.grad(loss.sum(), [policy])
    assert torch.isfinite(grad).all()
    assert loss.tolist() == pytest.approx([1.0, 0.0, 0.0, 1.0], abs=1e-6)


def test_labels_may_be_ints():
    args = (torch.tensor([-3.0, -4.0]), torch.tensor([-4.0, -3.0]))
    as_bool = kto_loss(*args, torch.tensor([True, False]), kl_anchor=0.1, beta=0.5)
    as_int = kto_loss(*args, torch.tensor([1, 0]), kl_anchor=0.1, beta=0.5)
    assert torch.equal(as_bool, as_int)


def test_tensor_and_float_hyperparameters_agree():
    policy, ref, labels = (torch.tensor(v) for v in random_batch(random.Random(67), 8))
    floats = kto_loss(policy, ref, labels, 0.3, 0.1, 0.5, 1.0)
    tensors = kto_loss(policy, ref, labels, torch.tensor(0.3), torch.tensor(0.1), torch.tensor(0.5), torch.tensor(1.0))
    assert torch.allclose(floats, tensors)


def test_auto_weights_balance_the_classes():
    # The example: 28 K desirable, 14 K undesirable gives lambda_D = 0.5 with lambda_U = 1.
    assert kto_auto_weights(28_000, 14_000) == pytest.approx((0.5, 1.0))
    # The paper's 1:10 example: lambda_U = 1, lambda_D = 10.
    assert kto_auto_weights(100, 1_000) == pytest.approx((10.0, 1.0))
    w_d, w_u = kto_auto_weights(37, 91)
    assert w_d * 37 == pytest.approx(w_u * 91)


@pytest.mark.parametrize("counts", [(0, 10), (10, 0), (-1, 5)])
def test_auto_weights_reject_a_missing_class(counts):
    with pytest.raises(ValueError, match="desirable"):
        kto_auto_weights(*counts)
