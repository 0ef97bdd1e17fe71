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
from directalign.losses import kto_loss
from directalign.models.logprobs import ResponseLogProbs, sequence_logps
from directalign.models.reference import FrozenReference
from directalign.training.dpo import train
from directalign.training.kto import KTOObjective, KTOWeights, kl_groups, kto_weights
from tests.conftest import tiny_llama

RECORDS = [
    TokenizedRecord([5, 6, 7], [[10, 11, 12]], pairs=[], source="r0", labels=[True]),
    TokenizedRecord([8, 9], [[13, 14]], pairs=[], source="r1", labels=[False]),
    TokenizedRecord([20, 21, 22, 23], [[15]], pairs=[], source="r2", labels=[True]),
    TokenizedRecord([30], [[16, 17, 18, 19]], pairs=[], source="r3", labels=[False]),
]
LONG = TokenizedRecord([40, 41, 42, 43, 44, 45], [[24, 25]], pairs=[], source="r4", labels=[True])


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


def mismatched_records(records, positions=None):
    """The z0 pairs as the separate pass scored them: completion i after prompt i+1 (mod B)."""
    n = len(records)
    return [TokenizedRecord(records[(i + 1) % n].prompt_ids, records[i].response_ids, [], labels=records[i].labels)
            for i in (range(n) if positions is None else positions)]


def test_kl_groups_put_completion_j_minus_1_after_prompt_j():
    groups = kl_groups(RECORDS)
    assert [g.prompt_ids for g in groups] == [r.prompt_ids for r in RECORDS]
    assert [g.response_ids for g in groups] == [[[10, 11, 12], [16, 17, 18, 19]], [[13, 14], [10, 11, 12]],
                                                [[15], [13, 14]], [[16, 17, 18, 19], [15]]]
    (alone,) = kl_groups(RECORDS[:1])
    assert alone.response_ids == [RECORDS[0].response_ids[0]] * 2
    assert [g.prompt_ids for g in kl_groups(RECORDS, [1, 3])] == [[8, 9], [30]]
    # Over the processes every pair of the separate pass is scored once, by the process holding its prompt.
    grouped = {(tuple(g.prompt_ids), tuple(g.response_ids[1])) for g in kl_groups(RECORDS)}
    assert grouped == {(tuple(m.prompt_ids), tuple(m.response_ids[0])) for m in mismatched_records(RECORDS)}


class Pooled:
    """The other processes of a run, as far as z0 goes: their ratio sum and count, added to this one's."""

    def __init__(self, others=(0.0, 0)):
        self.others, self.mine = others, None

    def sum(self, values):
        self.mine = values
        return [v + o for v, o in zip(values, self.others, strict=True)]


def separate_passes(kto, policy, reference, records, mismatched, others=(0.0, 0)):
    """The objective before the z0 pairs shared the passes of their prompts: the graded batch, then the
    mismatched pairs in a batch of their own, policy without gradient, and z0 pooled with `others`."""
    batch = build_batch(records, 0, kto.layout)
    policy_logps = sequence_logps(policy(batch), batch).float()
    ref_logps = reference.sequence_logps(batch).float()
    kl_batch = build_batch(mismatched, 0, kto.layout)
    with torch.no_grad():
        ratios = sequence_logps(policy(kl_batch), kl_batch).float() - reference.sequence_logps(kl_batch).float()
    z0 = torch.tensor(max((ratios.sum().item() + others[0]) / (ratios.numel() + others[1]), 0.0))
    w = kto.weights
    loss = kto_loss(policy_logps, ref_logps, batch.labels, z0, kto.beta, w.desirable, w.undesirable)
    return loss, kto.metrics(loss, policy_logps, ref_logps, batch.labels, z0), (ratios.sum().item(), ratios.numel())


@pytest.mark.parametrize("layout", ["shared", "padded", "packed"])
@pytest.mark.parametrize("size, positions", [(1, None), (3, None), (5, [0, 2, 4])], ids=["B1", "B3", "slice"])
def test_shared_prompt_passes_give_the_separate_passes_loss_z0_and_gradients(layout, size, positions):
    torch.manual_seed(0)
    records = [*RECORDS, LONG][:size]
    ref_model = tiny_llama(seed=1)
    ref_model.model.norm.weight.data *= 4  # a sharper reference: log pi - log pi_ref > 0, so z0 is not clamped to 0
    policy, reference = ResponseLogProbs(tiny_llama(seed=0)), FrozenReference(ref_model)
    kto = objective(0.5, (1.3, 0.7))
    kto.layout = layout
    mine = range(size) if positions is None else positions
    others = [i for i in range(size) if i not in mine]
    local = [records[i] for i in mine]

    old_others = separate_passes(kto, policy, reference, [records[i] for i in others],
                                 mismatched_records(records, others))[2] if others else (0.0, 0)
    old_loss, old_metrics, _ = separate_passes(kto, policy, reference, local, mismatched_records(records, mine),
                                               old_others)
    old_loss.sum().backward()
    old_grads = [p.grad.clone() for p in policy.parameters()]
    policy.zero_grad()

    rest = Pooled()
    if others:
        kto(policy, reference, [records[i] for i in others], build_batch([records[i] for i in others], 0, layout),
            kl_groups(records, others), rest)
    dist = Pooled(rest.mine) if others else None
    loss, metrics = kto(policy, reference, local, build_batch(local, 0, layout), kl_groups(records, mine), dist)
    loss.sum().backward()
    assert metrics["kl"] > 0
    assert loss.tolist() == pytest.approx(old_loss.tolist(), abs=1e-5)
    assert metrics.keys() == old_metrics.keys()
    assert all(metrics[k] == pytest.approx(old_metrics[k], abs=1e-5) for k in metrics)
    for new, old in zip((p.grad for p in policy.parameters()), old_grads, strict=True):
        assert torch.allclose(new, old, atol=1e-5, rtol=0)


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


def test_one_policy_pass_with_gradient_scores_the_examples_and_their_z0_pairs():
    policy = ResponseLogProbs(tiny_llama(seed=0))
    kto = objective()
    calls = []
    real_forward = policy.forward

    def recording_forward(batch):
        calls.append(torch.is_grad_enabled())
        return real_forward(batch)

    policy.forward = recording_forward
    loss, _ = kto(policy, FrozenReference(tiny_llama(seed=1)), RECORDS, build_batch(RECORDS, 0, "shared"))
    assert calls == [True]  # one pass with gradient for the graded examples and the z0 pairs on their prompts
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
