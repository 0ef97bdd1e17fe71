"""SimPO, ORPO, CPO and the chosen NLL against their formulas, evaluated independently in plain math."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import torch

from directalign.losses import cpo_loss, dpo_loss, nll_loss, orpo_loss, simpo_loss
from tests.conftest import tiny_llama


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


# Against TRL 1.16's own trainer code (trl.experimental.cpo / orpo, trl.DPOTrainer with loss_type ["sigmoid",
# "sft"], its RPO), on a tiny float64 Llama. TRL computes its loss from logits; ours from the summed response
# log-probs of the same logits. The NLL terms differ by the exact amount the module docstring states.

UNEQUAL = ([3, 5, 1], [4, 9, 1], [7, 2, 5])  # prompt, chosen, rejected lengths of three pairs
EQUAL_CHOSEN = ([1, 1, 1], [6, 6, 6], [7, 2, 5])


def token_logps(model, ids: list[int]) -> torch.Tensor:
    """log pi(token t | tokens < t) for t = 1.. of one unpadded sequence (position 0 has no prediction)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    return logits[:-1].log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]


def trl_pair_batch(lengths, seed: int = 0) -> tuple[dict, list[tuple[list[int], list[int], list[int]]]]:
    """A batch in the layout TRL's CPO/ORPO tokenize_row and collator give: prompt + response ids, right-padded,
    labels -100 on the prompt and the padding."""
    rng = random.Random(seed)
    triples = [tuple([rng.randrange(3, 128) for _ in range(n)] for n in row) for row in zip(*lengths, strict=True)]
    batch = {}
    for side, index in (("chosen", 1), ("rejected", 2)):
        width = max(len(t[0]) + len(t[index]) for t in triples)
        ids, mask, labels = [], [], []
        for t in triples:
            sequence, pad = t[0] + t[index], width - len(t[0]) - len(t[index])
            ids.append(sequence + [0] * pad)
            mask.append([1] * len(sequence) + [0] * pad)
            labels.append([-100] * len(t[0]) + t[index] + [-100] * pad)
        batch.update({f"{side}_input_ids": torch.tensor(ids), f"{side}_attention_mask": torch.tensor(mask),
                      f"{side}_labels": torch.tensor(labels)})
    return batch, triples


def trl_trainer(cls, **attributes):
    """A TRL trainer object carrying only what its loss code reads (no model loading, no dataset)."""
    trainer = object.__new__(cls)
    accelerator = SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda value: value)
    trainer.__dict__.update(accelerator=accelerator, is_encoder_decoder=False, aux_loss_enabled=False, **attributes)
    return trainer


def response_sums(model, triples) -> dict[str, torch.Tensor]:
    """Summed log-probs of the chosen (S) and rejected responses and of the prompt after its first token (P)."""
    sums = {"chosen": [], "rejected": [], "prompt": []}
    for prompt, chosen, rejected in triples:
        for side, response in (("chosen", chosen), ("rejected", rejected)):
            logps = token_logps(model, prompt + response)
            sums[side].append(logps[len(prompt) - 1:].sum())
        sums["prompt"].append(logps[: len(prompt) - 1].sum())
    return {key: torch.stack(values) for key, values in sums.items()}


def nll_gap(chosen_logps: torch.Tensor, chosen_lengths: torch.Tensor) -> float:
    """ours - TRL's pooled NLL = sum_i (-S_i / n_i) (1 / B - n_i / N)."""
    n = chosen_lengths.double()
    return float((-chosen_logps / n * (1 / len(n) - n / n.sum())).sum())


@pytest.mark.parametrize("lengths", [UNEQUAL, EQUAL_CHOSEN], ids=["unequal", "equal"])
def test_cpo_against_trl_cpo_trainer(lengths):
    from trl.experimental.cpo import CPOTrainer

    model = tiny_llama().double()
    batch, triples = trl_pair_batch(lengths)
    trainer = trl_trainer(CPOTrainer, beta=0.3, cpo_alpha=1.0, loss_type="sigmoid", alpha=0.0, label_smoothing=0.0,
                          simpo_gamma=0.5, pad_token_id=0)
    with torch.no_grad():
        trl_loss, metrics = trainer.get_batch_loss_metrics(model, batch)
    sums, n_c = response_sums(model, triples), torch.tensor(lengths[1])
    ours = cpo_loss(sums["chosen"], sums["rejected"], n_c, beta=0.3).mean().item()
    gap = nll_gap(sums["chosen"], n_c)
    assert metrics["nll_loss"] == pytest.approx(-(sums["chosen"].sum() / n_c.sum()).item(), abs=1e-12)
    assert ours - trl_loss.item() == pytest.approx(gap, abs=1e-12)
    assert (abs(gap) > 1e-2) == (lengths is UNEQUAL)  # a real difference exactly when the lengths differ
    pooled = cpo_loss(sums["chosen"], sums["rejected"], n_c, beta=0.3, pooled=True).mean().item()
    assert pooled == pytest.approx(trl_loss.item(), abs=1e-12)


@pytest.mark.parametrize("lengths", [UNEQUAL, EQUAL_CHOSEN], ids=["unequal", "equal"])
def test_orpo_against_trl_orpo_trainer(lengths):
    from trl.experimental.orpo import ORPOTrainer

    model = tiny_llama().double()
    batch, triples = trl_pair_batch(lengths, seed=1)
    trainer = trl_trainer(ORPOTrainer, beta=0.25, padding_value=0)  # TRL's beta is ORPO's lambda
    with torch.no_grad():
        trl_loss, metrics = trainer.get_batch_loss_metrics(model, batch)
    sums = response_sums(model, triples)
    n_p, n_c, n_r = (torch.tensor(n) for n in lengths)
    trl_nll = -((sums["chosen"] + sums["prompt"]).sum() / (n_c + n_p - 1).sum()).item()
    assert metrics["nll_loss"] == pytest.approx(trl_nll, abs=1e-12)  # prompt and response tokens, pooled
    ours = orpo_loss(sums["chosen"], sums["rejected"], n_c, n_r, lam=0.25).mean().item()
    ours_nll = nll_loss(sums["chosen"], n_c).mean().item()
    # The odds-ratio terms agree (to TRL's float32 cast); the totals differ by the NLL terms alone.
    assert ours - trl_loss.item() == pytest.approx(ours_nll - trl_nll, abs=1e-6)
    # With one-token prompts (nothing to predict in them) and equal chosen lengths the NLLs are the same.
    assert (abs(ours_nll - trl_nll) < 1e-12) == (lengths is EQUAL_CHOSEN)


@pytest.mark.parametrize("chosen_texts,equal", [((" a long long long chosen answer here", " four", " ok then"), False),
                                                ((" one two", " three four", " five six"), True)],
                         ids=["unequal", "equal"])
def test_rpo_against_trl_dpo_trainer_sft_term(chosen_texts, equal, smollm2_tokenizer, tmp_path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    alpha, beta, vocab = 0.7, 0.1, len(smollm2_tokenizer)
    policy = tiny_llama(vocab_size=vocab, pad_token_id=None, seed=0).double()
    ref = tiny_llama(vocab_size=vocab, pad_token_id=None, seed=1).double()
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in
            zip(["Hi", "What is two plus two, please?", "Say"], chosen_texts, [" no", " it is five or so", " x"],
                strict=True)]
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=3, beta=beta, loss_type=["sigmoid", "sft"],
                     loss_weights=[1.0, alpha], max_length=None, bf16=False, use_cpu=True, report_to="none",
                     activation_checkpointing=False, train_sampling_strategy="sequential", dataset_num_proc=None)
    trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=smollm2_tokenizer)
    inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, inputs).item()
    logps = {"policy": [], "ref": []}
    for ids, mask, completion in zip(inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"],
                                     strict=True):
        sequence, in_response = ids[mask.bool()].tolist(), completion[mask.bool()][1:].bool()
        for name, model in (("policy", policy), ("ref", ref)):
            logps[name].append(token_logps(model, sequence)[in_response].sum())
    policy_logps, ref_logps = torch.stack(logps["policy"]), torch.stack(logps["ref"])
    n_c = inputs["completion_mask"][:3].sum(1)
    pc, pr, rc, rr = policy_logps[:3], policy_logps[3:], ref_logps[:3], ref_logps[3:]
    dpo = dpo_loss(pc, pr, rc, rr, beta=beta)
    ours = (dpo + alpha * nll_loss(pc, n_c)).mean().item()
    # TRL's fused LM head returns float32 log-probs even from a float64 model: agreement to 1e-5 of a loss near 8.
    assert ours - trl_loss == pytest.approx(alpha * nll_gap(pc, n_c), abs=1e-5)
    assert (len(set(n_c.tolist())) == 1) == equal
    assert (abs(nll_gap(pc, n_c)) > 1e-2) == (not equal)
    assert (dpo + alpha * nll_loss(pc, n_c, pooled=True)).mean().item() == pytest.approx(trl_loss, abs=1e-5)
