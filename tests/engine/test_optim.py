"""The optimizer step: warm-up from the config, the norm before clipping, no clipping at max_grad_norm 0, the
non-finite guard that never applies a bad step, and the skipped step that only advances the schedule."""

import pytest
import torch
from accelerate import Accelerator

from directalign.config import load_config
from directalign.engine.distributed import Dist, make_accelerator
from directalign.engine.optim import NonFiniteStep, StepOptimizer, make_optimizer


def _optim(total_steps=4, **kw):
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    cfg = load_config("train", overrides={"learning_rate": 1.0, "warmup_ratio": 0.0, "lr_scheduler_type": "constant",
                                          "weight_decay": 0.0, **kw})
    return model, StepOptimizer(cfg, model, total_steps, Accelerator(cpu=True), Dist())


def test_make_optimizer_takes_only_trainable_parameters_and_warms_up():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    model[0].weight.requires_grad_(False)
    cfg = load_config("train", overrides={"learning_rate": 0.1, "warmup_ratio": 0.5, "adam_beta2": 0.99})
    trainable, optimizer, scheduler = make_optimizer(cfg, model, total_steps=4)
    assert [id(p) for p in trainable] == [id(p) for p in model.parameters() if p.requires_grad]
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.99)
    rates = [scheduler.get_last_lr()[0]]
    for _ in range(4):
        optimizer.step()
        scheduler.step()
        rates.append(scheduler.get_last_lr()[0])
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.05, 0.0])


def test_the_norm_before_clipping_is_returned_and_the_gradient_is_clipped():
    model, optim = _optim(max_grad_norm=1.0)
    model.weight.grad = torch.tensor([[3.0, 4.0]])
    assert optim.step() == pytest.approx(5.0)
    assert model.weight.grad is None
    # AdamW's first step moves each weight by lr whatever the scale: the sign is what clipping left
    assert model.weight.detach()[0].tolist() == pytest.approx([-1.0, -1.0], abs=1e-6)


def test_max_grad_norm_zero_means_no_clipping_not_uphill():
    model, optim = _optim(max_grad_norm=0.0)
    model.weight.grad = torch.tensor([[300.0, -400.0]])
    assert optim.step() == pytest.approx(500.0)
    assert model.weight.detach()[0].tolist() == pytest.approx([-1.0, 1.0], abs=1e-6)  # downhill


def test_a_non_finite_gradient_is_never_applied():
    model, optim = _optim()
    model.weight.grad = torch.tensor([[float("inf"), 1.0]])
    with pytest.raises(NonFiniteStep, match="non-finite gradient norm"):
        optim.step()
    assert model.weight.detach().tolist() == [[0.0, 0.0]] and model.weight.grad is None
    with pytest.raises(NonFiniteStep, match="non-finite loss"):
        optim.backward(torch.tensor(float("nan"), requires_grad=True), 1)


def test_the_backward_pass_is_normalised_by_the_total_count():
    model, optim = _optim()
    loss_sum = model(torch.ones(3, 2)).sum() + 3.0  # three items, each d loss / d w = [1, 1]
    optim.backward(loss_sum, total_count=6)  # half the step's items are on this process
    assert model.weight.grad[0].tolist() == pytest.approx([0.5, 0.5])


def test_a_skipped_step_advances_only_the_schedule():
    model, optim = _optim(lr_scheduler_type="linear")
    optim.skip()
    assert model.weight.detach().tolist() == [[0.0, 0.0]]
    assert optim.learning_rate == pytest.approx(0.75)


def test_one_process_can_train_in_fp32_then_bf16():
    # accelerate alone refuses a second Accelerator with another mixed_precision in the same process.
    assert make_accelerator(False).mixed_precision == "no"
    assert make_accelerator(True).mixed_precision == "bf16"
    assert make_accelerator(False).mixed_precision == "no"
