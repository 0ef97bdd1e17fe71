"""SimPO, ORPO, CPO and the chosen NLL against their formulas, evaluated independently in plain math."""

from __future__ import annotations

import math
import random

import pytest
import torch

from directalign.losses import cpo_loss, nll_loss, orpo_loss, simpo_loss


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def log_odds(avg_logp: float) -> float:
    """log(p / (1 - p)) for p = exp(avg_logp), straight from the definition."""
    p = math.exp(avg_logp)
    return math.log(p) - math.log(1 - p)


def random_rows(rng: random.Random, n: int) -> list[tuple[float, float, int, int]]:
    """(chosen logp, rejected logp, chosen length, rejected length) with average log-probs in [-3, -0.05]."""
    rows = []
    for _ in range(n):
        lc, lr = rng.randint(1, 80), rng.randint(1, 80)
        rows.append((lc * rng.uniform(-3.0, -0.05), lr * rng.uniform(-3.0, -0.05), lc, lr))
    return rows


def as_tensors(rows, requires_grad: bool = False):
    pc = torch.tensor([r[0] for r in rows], dtype=torch.float64, requires_grad=requires_grad)
    pr = torch.tensor([r[1] for r in rows], dtype=torch.float64, requires_grad=requires_grad)
    return pc, pr, torch.tensor([r[2] for r in rows]), torch.tensor([r[3] for r in rows])


def test_simpo_worked_example():
    loss = simpo_loss(torch.tensor([-45.0]), torch.tensor([-36.0]), torch.tensor([90]), torch.tensor([60]), 2.0, 0.5)
    assert loss.item() == pytest.approx(0.8544, abs=1e-4)


@pytest.mark.parametrize("beta,gamma", [(2.0, 0.5), (10.0, 1.6), (0.5, 0.0)])
def test_simpo_matches_formula_and_gradient(beta, gamma):
    rows = random_rows(random.Random(41), 16)
    pc, pr, lc, lr = as_tensors(rows, requires_grad=True)
    loss = simpo_loss(pc, pr, lc, lr, beta=beta, gamma=gamma)
    expected, d_pc, d_pr = [], [], []
    for c, r, n_c, n_r in rows:
        x = beta * c / n_c - beta * r / n_r - gamma
        expected.append(-log_sigmoid(x))
        d_pc.append(-sigmoid(-x) * beta / n_c)
        d_pr.append(sigmoid(-x) * beta / n_r)
    assert loss.tolist() == pytest.approx(expected, rel=1e-10)
    grads = torch.autograd.grad(loss.sum(), [pc, pr])
    assert grads[0].tolist() == pytest.approx(d_pc, rel=1e-9)
    assert grads[1].tolist() == pytest.approx(d_pr, rel=1e-9)


@pytest.mark.parametrize("lam", [0.1, 1.0])
def test_orpo_matches_formula_and_gradient(lam):
    rows = random_rows(random.Random(43), 16)
    pc, pr, lc, lr = as_tensors(rows, requires_grad=True)
    loss = orpo_loss(pc, pr, lc, lr, lam=lam)
    expected, d_pc, d_pr = [], [], []
    for c, r, n_c, n_r in rows:
        a_c, a_r = c / n_c, r / n_r
        d = log_odds(a_c) - log_odds(a_r)
        expected.append(-a_c + lam * -log_sigmoid(d))
        # d log_odds(a) / da = 1 / (1 - exp(a))
        d_pc.append(-1 / n_c - lam * sigmoid(-d) / (1 - math.exp(a_c)) / n_c)
        d_pr.append(lam * sigmoid(-d) / (1 - math.exp(a_r)) / n_r)
    assert loss.tolist() == pytest.approx(expected, rel=1e-9)
    grads = torch.autograd.grad(loss.sum(), [pc, pr])
    assert grads[0].tolist() == pytest.approx(d_pc, rel=1e-8)
    assert grads[1].tolist() == pytest.approx(d_pr, rel=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_orpo_is_stable_near_zero_and_far_below(dtype):
    # Average log-probs of 0 (a certain model), just below 0, around the log 2 switch, and -1e4.
    chosen = torch.tensor([0.0, -1e-9, -0.6931, -1e5, -1e4, -1e-3], dtype=dtype, requires_grad=True)
    rejected = torch.tensor([-1e5, 0.0, -0.6932, -1e-9, -1e4, -1e-2], dtype=dtype, requires_grad=True)
    lengths = torch.tensor([10, 10, 1, 10, 1, 1])
    loss = orpo_loss(chosen, rejected, lengths, lengths, lam=1.0)
    grads = torch.autograd.grad(loss.sum(), [chosen, rejected])
    assert torch.isfinite(loss).all()
    assert all(torch.isfinite(g).all() for g in grads)
    # Away from the cap the value is still the exact one: a = -1e-3 vs -1e-2.
    expected = 1e-3 - math.log(sigmoid(log_odds(-1e-3) - log_odds(-1e-2)))
    assert loss[5].item() == pytest.approx(expected, rel=1e-3 if dtype == torch.float32 else 1e-9)


def test_orpo_prefers_the_more_likely_chosen():
    lengths = torch.tensor([4, 4])
    loss = orpo_loss(torch.tensor([-1.0, -8.0]), torch.tensor([-8.0, -1.0]), lengths, lengths, lam=1.0)
    odds_term = loss - torch.tensor([0.25, 2.0])  # minus the chosen NLL, -pc / |yc|
    assert odds_term[0] < math.log(2) < odds_term[1]


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_cpo_matches_formula_and_gradient(beta):
    rows = random_rows(random.Random(47), 16)
    pc, pr, lc, _ = as_tensors(rows, requires_grad=True)
    loss = cpo_loss(pc, pr, lc, beta=beta)
    expected, d_pc, d_pr = [], [], []
    for c, r, n_c, _ in rows:
        x = beta * (c - r)
        expected.append(-log_sigmoid(x) - c / n_c)
        d_pc.append(-beta * sigmoid(-x) - 1 / n_c)
        d_pr.append(beta * sigmoid(-x))
    assert loss.tolist() == pytest.approx(expected, rel=1e-10)
    grads = torch.autograd.grad(loss.sum(), [pc, pr])
    assert grads[0].tolist() == pytest.approx(d_pc, rel=1e-9)
    assert grads[1].tolist() == pytest.approx(d_pr, rel=1e-9)


def test_nll_is_per_token_and_guards_empty_responses():
    loss = nll_loss(torch.tensor([-12.0, -3.0, -2.0]), torch.tensor([4, 1, 0]))
    assert loss.tolist() == pytest.approx([3.0, 3.0, 2.0])


def test_nll_accepts_float_lengths():
    assert nll_loss(torch.tensor([-9.0]), 3.0).item() == pytest.approx(3.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_simpo_and_cpo_extreme_inputs_stay_finite(dtype):
    pc = torch.tensor([-1e4, -1.0, -1e4], dtype=dtype, requires_grad=True)
    pr = torch.tensor([-1.0, -1e4, -1e4], dtype=dtype, requires_grad=True)
    lengths = torch.tensor([1, 1, 1])
    for loss in (simpo_loss(pc, pr, lengths, lengths, 10.0, 1.0), cpo_loss(pc, pr, lengths, 10.0)):
        grads = torch.autograd.grad(loss.sum(), [pc, pr])
        assert torch.isfinite(loss).all()
        assert all(torch.isfinite(g).all() for g in grads)
    assert simpo_loss(pc, pr, lengths, lengths, 10.0, 1.0)[0].item() == pytest.approx(10.0 * (1e4 - 1) + 1.0)


def test_tensor_and_float_hyperparameters_agree():
    pc, pr, lc, lr = as_tensors(random_rows(random.Random(53), 6))

    def t(value: float) -> torch.Tensor:
        return torch.tensor(value, dtype=torch.float64)

    assert torch.allclose(simpo_loss(pc, pr, lc, lr, t(2.0), t(0.5)), simpo_loss(pc, pr, lc, lr, 2.0, 0.5))
    assert torch.allclose(orpo_loss(pc, pr, lc, lr, t(0.1)), orpo_loss(pc, pr, lc, lr, 0.1))
    assert torch.allclose(cpo_loss(pc, pr, lc, t(0.1)), cpo_loss(pc, pr, lc, 0.1))
