"""KTO in the trainer: z0 from mismatched pairs, the loss against the paper's formula, weights and the loop."""

from __future__ import annotations

import json
import math

import pytest
import torch

from directalign.config import load_config
from directalign.data.batching import build_batch
from directalign.data.types import TokenizedRecord
from directalign.engine.metrics import read_metrics
from directalign.models.logprobs import ResponseLogProbs
from directalign.models.reference import FrozenReference
from directalign.training.dpo import train
from directalign.training.kto import KTOObjective, KTOWeights, kto_weights, mismatched_records
from tests.conftest import tiny_llama

RECORDS = [
    TokenizedRecord([5, 6, 7], [[10, 11, 12]], pairs=[], source="r0", labels=[True]),
    TokenizedRecord([8, 9], [[13, 14]], pairs=[], source="r1", labels=[False]),
    TokenizedRecord([20, 21, 22, 23], [[15]], pairs=[], source="r2", labels=[True]),
    TokenizedRecord([30], [[16, 17, 18, 19]], pairs=[], source="r3", labels=[False]),
]


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@torch.no_grad()
def logp(model, prompt: list[int], completion: list[int]) -> float:
    """log p(completion | prompt) from plain full-sequence logits: the reference the batched path must match."""
    ids = torch.tensor([prompt + completion])
    logprobs = model(ids).logits[0].float().log_softmax(-1)
    return sum(logprobs[len(prompt) - 1 + k, t].item() for k, t in enumerate(completion))


def objective(beta=0.5, weights=(1.0, 1.0)):
    cfg = load_config("train", overrides={"loss_type": "kto", "beta": beta})
    return KTOObjective(cfg, KTOWeights(*weights, 0, 0), pad_token_id=0)


def test_mismatched_pairs_put_completion_i_after_prompt_i_plus_1():
    mismatched = mismatched_records(RECORDS)
    assert [r.prompt_ids for r in mismatched] == [[8, 9], [20, 21, 22, 23], [30], [5, 6, 7]]
    assert [r.response_ids for r in mismatched] == [r.response_ids for r in RECORDS]
    (alone,) = mismatched_records(RECORDS[:1])
    assert (alone.prompt_ids, alone.response_ids) == (RECORDS[0].prompt_ids, RECORDS[0].response_ids)


@pytest.mark.parametrize("layout", ["shared", "padded"])
def test_loss_and_z0_match_the_paper(layout):
    policy_model, ref_model = tiny_llama(seed=0), tiny_llama(seed=1)
    policy, reference = ResponseLogProbs(policy_model), FrozenReference(ref_model)
    beta, w_d, w_u = 0.5, 1.3, 0.7
    kto = objective(beta, (w_d, w_u))
    kto.layout = layout
    loss, metrics = kto(policy, reference, RECORDS, build_batch(RECORDS, 0, layout))

    n = len(RECORDS)
    kl_terms = [
        logp(policy_model, RECORDS[(i + 1) % n].prompt_ids, RECORDS[i].response_ids[0])
        - logp(ref_model, RECORDS[(i + 1) % n].prompt_ids, RECORDS[i].response_ids[0])
        for i in range(n)
    ]
    z0 = max(0.0, sum(kl_terms) / n)
    assert metrics["kl"] == pytest.approx(z0, abs=1e-4)
    expected = []
    for r in RECORDS:
        reward = logp(policy_model, r.prompt_ids, r.response_ids[0]) - logp(ref_model, r.prompt_ids, r.response_ids[0])
        if r.labels[0]:
            expected.append(w_d * (1 - sigmoid(beta * (reward - z0))))
        else:
            expected.append(w_u * (1 - sigmoid(beta * (z0 - reward))))
    assert loss.tolist() == pytest.approx(expected, abs=1e-5)
    assert metrics["count/desirable"] == 2 and metrics["count/undesirable"] == 2
    assert metrics["rewards/margins"] == pytest.approx(metrics["rewards/chosen"] - metrics["rewards/rejected"])


def test_z0_pass_runs_without_gradient_and_the_loss_has_one():
    policy = ResponseLogProbs(tiny_llama(seed=0))
    kto = objective()
    calls = []
    real_forward = policy.forward

    def recording_forward(batch):
        calls.append(torch.is_grad_enabled())
        return real_forward(batch)

    policy.forward = recording_forward
    loss, _ = kto(policy, FrozenReference(tiny_llama(seed=1)), RECORDS, build_batch(RECORDS, 0, "shared"))
    assert calls == [True, False]  # the loss pass with gradient, the mismatched (z0) pass without
    loss.sum().backward()
    assert all(p.grad is not None for p in policy.parameters() if p.requires_grad)


@pytest.mark.parametrize("records", [RECORDS[:1], [RECORDS[0], RECORDS[2]], [RECORDS[1], RECORDS[3]]])
def test_one_class_and_batch_of_one_stay_finite(records):
    policy = ResponseLogProbs(tiny_llama(seed=0))
    loss, metrics = objective()(policy, FrozenReference(tiny_llama(seed=1)), records, build_batch(records, 0, "shared"))
    loss.sum().backward()
    assert torch.isfinite(loss).all() and math.isfinite(metrics["kl"])
    grads = [p.grad for p in policy.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert "rewards/margins" not in metrics  # one class: no margin to report


def test_auto_weights_balance_the_class_counts():
    records = [RECORDS[0]] * 6 + [RECORDS[1]] * 2
    cfg = load_config("train", overrides={"loss_type": "kto", "undesirable_weight": "auto"})
    weights = kto_weights(cfg, records)
    assert (weights.n_desirable, weights.n_undesirable) == (6, 2)
    assert weights.desirable * 6 == pytest.approx(weights.undesirable * 2)
    assert (weights.desirable, weights.undesirable) == pytest.approx((1 / 3, 1.0))
    assert "6 desirable / 2 undesirable" in weights.describe()
    fixed = kto_weights(load_config("train", overrides={"loss_type": "kto", "desirable_weight": "1.5"}), records)
    assert (fixed.desirable, fixed.undesirable) == (1.5, 1.0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"undesirable_weight": "lots"}, "undesirable_weight must be a positive number or auto"),
        ({"desirable_weight": "0"}, "desirable_weight must be > 0; got 0.0"),
        ({"precompute_ref_log_probs": "true"}, "precompute_ref_log_probs false"),
        ({"loss_type": "sigmoid", "desirable_weight": "2"}, "loss_type sigmoid does not read desirable_weight"),
    ],
)
def test_bad_kto_settings_are_config_errors(overrides, message):
    from directalign.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config("train", overrides={"loss_type": "kto", **overrides})  # a later loss_type replaces kto


def _unpaired_file(path, n_desirable=9, n_undesirable=3):
    rows = [{"prompt": f"What is {i} + 1?", "completion": str(i + 1), "label": "👍"} for i in range(n_desirable)]
    rows += [{"prompt": f"What is {i} + 2?", "completion": "No idea.", "label": "👎"} for i in range(n_undesirable)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def test_kto_run_logs_counts_weights_and_kl(tiny_model_dir, tmp_path, capsys):
    cfg = load_config(
        "train",
        overrides=dict(
            model=str(tiny_model_dir), output_dir=str(tmp_path / "run"), data=str(_unpaired_file(tmp_path / "k.jsonl")),
            eval_split=0.25, loss_type="kto", undesirable_weight="auto", max_steps=3, logging_steps=1,
            per_device_train_batch_size=4, learning_rate=1e-2, save_steps=0, seed=1, kl_prompts=0,
        )
    )
    result = train(cfg)
    out = capsys.readouterr().out
    events = [e for e in read_metrics(tmp_path / "run" / "metrics.jsonl") if e["split"] == "train"]
    assert len(events) == 3
    first = events[0]
    # Step 1: LoRA B is zero, so policy == reference: every reward and z0 are 0 and each loss is weight * 1/2.
    assert first["kl"] == 0.0 and first["rewards/chosen"] == 0.0
    n_d, n_u = result_counts(out)
    w_d, w_u = n_u / n_d, 1.0
    assert first["weights/desirable"] == pytest.approx(w_d) and first["weights/undesirable"] == 1.0
    share_d = first["count/desirable"] / (first["count/desirable"] + first["count/undesirable"])
    assert first["loss"] == pytest.approx(0.5 * (share_d * w_d + (1 - share_d) * w_u), abs=1e-6)
    assert all(math.isfinite(e["kl"]) and e["kl"] >= 0 for e in events)
    assert result.eval_before["implicit_accuracy"] == 0.5  # untrained: every reward ties
    assert {"n_desirable", "n_undesirable", "mean_margin"} <= result.eval_after.keys()


def result_counts(printed: str) -> tuple[int, int]:
    line = next(line for line in printed.splitlines() if line.startswith("KTO: "))
    n_d, rest = line.removeprefix("KTO: ").split(" desirable / ")
    return int(n_d), int(rest.split(" undesirable")[0])


def test_cli_kto_on_paired_builtin_data(tiny_model_dir, tmp_path, capsys):
    from directalign.cli.main import main

    code = main([
        "train", "--loss-type", "kto", "--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "run"),
        "--builtin-train-pairs", "8", "--builtin-eval-pairs", "4", "--max-steps", "2", "--logging-steps", "1",
        "--per-device-train-batch-size", "4", "--kl-prompts", "0", "--save-steps", "0",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "KTO: 8 paired records -> 16 unpaired" in printed and "KTO: 8 desirable / 8 undesirable" in printed
    assert "implicit_accuracy" in printed  # the held-out set stays paired: preference accuracy as for DPO
