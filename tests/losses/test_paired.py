"""DPO, cDPO, robust DPO, IPO and hinge against their formulas, evaluated independently in plain math."""

from __future__ import annotations

import math
import random

import pytest
import torch

from directalign.errors import ConfigError
from directalign.losses import dpo_loss, hinge_loss, implicit_rewards, ipo_loss, robust_dpo_loss


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def random_logps(rng: random.Random, n: int) -> list[tuple[float, float, float, float]]:
    """n rows of (policy chosen, policy rejected, ref chosen, ref rejected) summed log-probs."""
    return [tuple(rng.uniform(-120.0, -1.0) for _ in range(4)) for _ in range(n)]


def as_tensors(rows, requires_grad: bool = False) -> list[torch.Tensor]:
    return [torch.tensor([row[i] for row in rows], dtype=torch.float64, requires_grad=requires_grad) for i in range(4)]


def margin(pc: float, pr: float, rc: float, rr: float) -> float:
    return (pc - rc) - (pr - rr)


def dpo_formula(row, beta: float, eps: float) -> float:
    z = beta * margin(*row)
    return -(1 - eps) * log_sigmoid(z) - eps * log_sigmoid(-z)


def robust_formula(row, beta: float, eps: float) -> float:
    z = beta * margin(*row)
    return ((1 - eps) * -log_sigmoid(z) - eps * -log_sigmoid(-z)) / (1 - 2 * eps)


def test_dpo_worked_example():
    loss = dpo_loss(*(torch.tensor([v]) for v in (-10.0, -15.0, -11.0, -14.0)), beta=0.1)
    assert loss.item() == pytest.approx(0.5981, abs=1e-4)
    assert loss.item() != pytest.approx(0.6731, abs=1e-3)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("beta", [0.05, 0.5, 2.0])
def test_dpo_matches_formula(beta, eps):
    rows = random_logps(random.Random(17), 16)
    got = dpo_loss(*as_tensors(rows), beta=beta, label_smoothing=eps)
    assert got.shape == (16,)
    assert got.tolist() == pytest.approx([dpo_formula(r, beta, eps) for r in rows], rel=1e-10)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_dpo_gradient_matches_hand_derivative(eps):
    rows = random_logps(random.Random(3), 8)
    beta = 0.3
    pc, pr, rc, rr = as_tensors(rows, requires_grad=True)
    grads = torch.autograd.grad(dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=eps).sum(), [pc, pr, rc, rr])
    for i, row in enumerate(rows):
        z = beta * margin(*row)
        d_pc = -beta * (1 - eps) * sigmoid(-z) + beta * eps * sigmoid(z)
        assert grads[0][i].item() == pytest.approx(d_pc, rel=1e-9)
        assert grads[1][i].item() == pytest.approx(-d_pc, rel=1e-9)
        assert grads[2][i].item() == pytest.approx(-d_pc, rel=1e-9)
        assert grads[3][i].item() == pytest.approx(d_pc, rel=1e-9)


@pytest.mark.parametrize("eps", [0.05, 0.25, 0.45])
def test_robust_matches_formula(eps):
    rows = random_logps(random.Random(5), 16)
    got = robust_dpo_loss(*as_tensors(rows), beta=0.2, label_smoothing=eps)
    assert got.tolist() == pytest.approx([robust_formula(r, 0.2, eps) for r in rows], rel=1e-10)


def test_robust_is_unbiased_under_label_flips():
    # Chowdhury et al.'s defining property: (1 - eps) L(h) + eps L(-h) equals the clean DPO loss at h.
    rows = random_logps(random.Random(11), 16)
    swapped = [(pr, pc, rr, rc) for pc, pr, rc, rr in rows]
    eps, beta = 0.3, 0.1
    expected = (1 - eps) * robust_dpo_loss(*as_tensors(rows), beta=beta, label_smoothing=eps)
    expected += eps * robust_dpo_loss(*as_tensors(swapped), beta=beta, label_smoothing=eps)
    assert expected.tolist() == pytest.approx([dpo_formula(r, beta, 0.0) for r in rows], rel=1e-9)


def test_robust_gradient_matches_hand_derivative():
    rows = random_logps(random.Random(8), 8)
    beta, eps = 0.4, 0.15
    pc, pr, rc, rr = as_tensors(rows, requires_grad=True)
    (d_pc,) = torch.autograd.grad(robust_dpo_loss(pc, pr, rc, rr, beta, eps).sum(), [pc])
    for i, row in enumerate(rows):
        z = beta * margin(*row)
        expected = (-(1 - eps) * beta * sigmoid(-z) - eps * beta * sigmoid(z)) / (1 - 2 * eps)
        assert d_pc[i].item() == pytest.approx(expected, rel=1e-9)


def test_robust_without_noise_is_dpo():
    tensors = as_tensors(random_logps(random.Random(2), 16))
    assert torch.equal(robust_dpo_loss(*tensors, beta=0.1, label_smoothing=0.0), dpo_loss(*tensors, beta=0.1))


@pytest.mark.parametrize("eps", [0.5, 0.7, torch.tensor(0.5)])
def test_robust_rejects_half_or_more_noise(eps):
    with pytest.raises(ConfigError, match="label_smoothing"):
        robust_dpo_loss(*as_tensors(random_logps(random.Random(0), 2)), beta=0.1, label_smoothing=eps)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_ipo_matches_formula_and_gradient(beta):
    rows = random_logps(random.Random(23), 12)
    pc, pr, rc, rr = as_tensors(rows, requires_grad=True)
    loss = ipo_loss(pc, pr, rc, rr, beta=beta)
    assert loss.tolist() == pytest.approx([(margin(*r) - 1 / (2 * beta)) ** 2 for r in rows], rel=1e-10)
    (d_pc,) = torch.autograd.grad(loss.sum(), [pc])
    assert d_pc.tolist() == pytest.approx([2 * (margin(*r) - 1 / (2 * beta)) for r in rows], rel=1e-9)


def test_ipo_is_zero_at_its_target_margin():
    beta = 0.25  # target margin 1 / (2 * beta) = 2
    loss = ipo_loss(*(torch.tensor([v]) for v in (-10.0, -13.0, -11.0, -12.0)), beta=beta)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


def test_hinge_matches_formula_and_gradient():
    rows = random_logps(random.Random(29), 32)
    beta = 0.05
    pc, pr, rc, rr = as_tensors(rows, requires_grad=True)
    loss = hinge_loss(pc, pr, rc, rr, beta=beta)
    assert loss.tolist() == pytest.approx([max(0.0, 1 - beta * margin(*r)) for r in rows], rel=1e-10)
    assert 0 < int((loss == 0).sum()) < len(rows), "the test inputs should cover both sides of the hinge"
    (d_pc,) = torch.autograd.grad(loss.sum(), [pc])
    assert d_pc.tolist() == pytest.approx([-beta if 1 - beta * margin(*r) > 0 else 0.0 for r in rows])


def test_implicit_rewards():
    policy, ref = torch.tensor([-3.0, -8.5]), torch.tensor([-4.0, -2.5])
    assert implicit_rewards(policy, ref, beta=0.5).tolist() == pytest.approx([0.5, -3.0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "fn,kwargs",
    [
        (dpo_loss, {"beta": 10.0}),
        (dpo_loss, {"beta": 10.0, "label_smoothing": 0.1}),
        (robust_dpo_loss, {"beta": 10.0, "label_smoothing": 0.4}),
        (ipo_loss, {"beta": 0.01}),
        (hinge_loss, {"beta": 10.0}),
    ],
)
def test_extreme_inputs_stay_finite(fn, kwargs, dtype):
    rows = [
        (-1e4, -1.0, -1.0, -1e4),
        (-1.0, -1e4, -1e4, -1.0),
        (-1e4, -1e4, -1e4, -1e4),
        (0.0, -1e4, 0.0, 0.0),
    ]
    pc, pr, rc, rr = (t.to(dtype).detach().requires_grad_() for t in as_tensors(rows))
    loss = fn(pc, pr, rc, rr, **kwargs)
    grads = torch.autograd.grad(loss.sum(), [pc, pr])
    assert torch.isfinite(loss).all()
    assert all(torch.isfinite(g).all() for g in grads)


def test_dpo_extreme_values_are_right_not_just_finite():
    # beta * h = -2e4: the loss is 2e4 (log sigmoid(x) ~ x for very negative x), the gradient -beta.
    pc = torch.tensor([-1e4], requires_grad=True)
    loss = dpo_loss(pc, torch.tensor([-1.0]), torch.tensor([-1.0]), torch.tensor([-1e4]), beta=1.0)
    (grad,) = torch.autograd.grad(loss.sum(), [pc])
    assert loss.item() == pytest.approx(2 * (1e4 - 1), rel=1e-6)
    assert grad.item() == pytest.approx(-1.0)


@pytest.mark.parametrize("fn", [dpo_loss, ipo_loss, hinge_loss])
def test_tensor_and_float_beta_agree(fn):
    tensors = as_tensors(random_logps(random.Random(31), 6))
    from_float = fn(*tensors, beta=0.2)
    assert torch.allclose(fn(*tensors, beta=torch.tensor(0.2, dtype=torch.float64)), from_float)
    per_row = torch.full((6,), 0.2, dtype=torch.float64)
    assert torch.allclose(fn(*tensors, beta=per_row), from_float)


def test_tensor_label_smoothing_agrees_with_float():
    tensors = as_tensors(random_logps(random.Random(37), 6))
    eps = torch.tensor(0.2, dtype=torch.float64)
    assert torch.allclose(dpo_loss(*tensors, 0.1, eps), dpo_loss(*tensors, 0.1, 0.2))
    assert torch.allclose(robust_dpo_loss(*tensors, 0.1, eps), robust_dpo_loss(*tensors, 0.1, 0.2))
