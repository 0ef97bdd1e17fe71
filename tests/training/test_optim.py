"""The shared optimizer helpers: schedule and warm-up from the config, clipping, and the throughput window."""

from types import SimpleNamespace

import pytest
import torch

from directalign.training import optim


def _cfg(**overrides):
    base = dict(learning_rate=0.1, weight_decay=0.0, warmup_ratio=0.5, lr_scheduler_type="linear", max_grad_norm=1.0)
    return SimpleNamespace(**{**base, **overrides})


def test_make_optimizer_takes_only_trainable_parameters_and_warms_up():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    model[0].weight.requires_grad_(False)
    trainable, optimizer, scheduler = optim.make_optimizer(_cfg(), model, total_steps=4)
    assert [id(p) for p in trainable] == [id(p) for p in model.parameters() if p.requires_grad]
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.999)  # TrainingArguments' defaults when cfg has none
    # warmup_ratio 0.5 of 4 steps: 2 warm-up steps, so the rate starts at 0 and peaks after step 2.
    rates = [scheduler.get_last_lr()[0]]
    for _ in range(4):
        optimizer.step()
        scheduler.step()
        rates.append(scheduler.get_last_lr()[0])
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.05, 0.0])


def test_optimizer_step_returns_the_norm_before_clipping_and_clears_gradients():
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    weight.grad = torch.tensor([3.0, 4.0])
    norm = optim.optimizer_step(_cfg(max_grad_norm=1.0), [weight], optimizer, scheduler)
    assert norm == pytest.approx(5.0)
    assert weight.detach().tolist() == pytest.approx([-0.6, -0.8])  # the gradient clipped to norm 1
    assert weight.grad is None


def test_throughput_leaves_paused_time_out(monkeypatch):
    clock = iter([0.0, 10.0, 40.0, 50.0, 50.0])  # start, pause begins, pause ends, pop, restart
    monkeypatch.setattr(optim.time, "perf_counter", lambda: next(clock))
    window = optim.Throughput()
    window.add(pairs=8, tokens=400)
    with window.paused():
        pass
    window.add(pairs=2, tokens=100)
    # 50 s elapsed, 30 of them paused: 10 pairs and 500 tokens in 20 s.
    assert window.pop() == {"pairs_per_s": 0.5, "tokens_per_s": 25.0}
    assert (window.pairs, window.tokens, window.excluded) == (0, 0, 0.0)


def test_one_process_can_train_in_fp32_then_bf16():
    # accelerate alone refuses a second Accelerator with another mixed_precision in the same process.
    assert optim.make_accelerator(False).mixed_precision == "no"
    assert optim.make_accelerator(True).mixed_precision == "bf16"
    assert optim.make_accelerator(False).mixed_precision == "no"
