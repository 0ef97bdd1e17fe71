"""The loss registry: each loss registered beside its function, one view for config and --help (parsed, no torch)
and one for the trainers (imported); both must agree, and the objective must call exactly the registered loss."""

import subprocess
import sys

import pytest
import torch

from directalign.config import load_config
from directalign.losses import dpo_loss, kto_loss, orpo_loss
from directalign.losses.registry import (
    PairTerms,
    declared,
    imported,
    loss_function,
    loss_names,
    loss_spec,
    losses_table,
)
from directalign.training.objective import pair_loss


def test_the_parsed_and_the_imported_registry_agree():
    parsed, live = declared(), imported()
    assert list(loss_names()) == ["sigmoid", "robust", "ipo", "hinge", "simpo", "orpo", "cpo", "kto", "grpo"]
    assert set(parsed) == set(live)
    for name, spec in live.items():
        assert callable(spec.fn)
        assert (parsed[name].summary, parsed[name].reference, parsed[name].data, parsed[name].keys,
                parsed[name].rewards) == (spec.summary, spec.reference, spec.data, spec.keys, spec.rewards)


def test_what_each_loss_needs():
    needs = {name: loss_spec(name).reference for name in loss_names()}
    assert needs == {"sigmoid": True, "robust": True, "ipo": True, "hinge": True, "simpo": False, "orpo": False,
                     "cpo": False, "kto": True, "grpo": True}
    assert loss_names("unpaired") == ["kto"] and loss_names("grouped") == ["grpo"]
    assert loss_function("kto") is kto_loss
    with pytest.raises(Exception, match="loss_type must be one of sigmoid"):
        loss_spec("dpo", ("paired",))  # TRL's old alias is not silently accepted


def test_validation_and_help_read_the_registry_without_torch():
    code = ("import sys; from directalign.config import load_config, keys_help; "
            "load_config('train', overrides={'loss_type': 'simpo', 'simpo_gamma': 0.7}); "
            "from directalign.losses.registry import losses_table; losses_table(); "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_the_table_lists_every_loss_with_the_keys_it_reads():
    table = losses_table("paired", "unpaired")
    assert "| `simpo` |" in table and "`simpo_gamma`" in table and "grpo" not in table
    assert len(table.splitlines()) == 2 + 8


@pytest.mark.parametrize("name", loss_names("paired"))
def test_the_objective_calls_the_registered_loss(name):
    g = torch.Generator().manual_seed(0)
    terms = PairTerms(*(torch.randn(3, generator=g) - 20 for _ in range(4)), torch.tensor([3.0, 5, 8]),
                      torch.tensor([4.0, 2, 9]))
    cfg = load_config("train", overrides={"loss_type": name})
    loss, chosen, rejected = pair_loss(cfg, terms)
    torch.testing.assert_close(loss, loss_function(name)(terms, cfg), rtol=0, atol=0)
    assert chosen.shape == rejected.shape == (3,) and not chosen.requires_grad


def test_registered_wrappers_pass_the_config_through():
    t = PairTerms(torch.tensor([-10.0]), torch.tensor([-15.0]), torch.tensor([-11.0]), torch.tensor([-14.0]),
                  torch.tensor([4.0]), torch.tensor([6.0]))
    sigmoid = load_config("train", overrides={"beta": 0.1})
    assert pair_loss(sigmoid, t)[0].item() == pytest.approx(0.5981, abs=1e-4)  # the worked DPO check
    smoothed = load_config("train", overrides={"beta": 0.1, "label_smoothing": 0.2})
    expected = dpo_loss(t.policy_chosen, t.policy_rejected, t.ref_chosen, t.ref_rejected, 0.1, 0.2)
    torch.testing.assert_close(pair_loss(smoothed, t)[0], expected)
    orpo = load_config("train", overrides={"loss_type": "orpo", "orpo_lambda": 0.3})
    expected = orpo_loss(t.policy_chosen, t.policy_rejected, t.chosen_lengths, t.rejected_lengths, 0.3)
    torch.testing.assert_close(pair_loss(orpo, t)[0], expected)
    rpo = load_config("train", overrides={"rpo_alpha": 0.5})
    nll = 10.0 / 4.0
    assert pair_loss(rpo, t)[0].item() == pytest.approx(0.5981 + 0.5 * nll, abs=1e-4)
