"""The shared-prefix engine against `model.generate`: greedy token for token, sampled in distribution."""

from __future__ import annotations

import itertools

import pytest
import torch

from directalign.generation import engine
from directalign.generation.base import GenerationConfig
from tests.conftest import tiny_llama

VOCAB = 8
EOS = 7
PROMPTS = [[1, 3, 4, 5], [1, 6]]
# Each chi-square test below rejects a true null hypothesis with probability ALPHA. Per configuration and prompt
# three run (engine vs exact, generate vs exact, engine vs generate): 2 configurations x 2 prompts x 3 = 12, so a
# correct engine fails the test with probability <= 12 * ALPHA = 1.2% over seeds (Bonferroni). The seeds are
# fixed, so on a given platform the outcome is fixed too; the twelve p-values here range from 0.16 to 0.94.
ALPHA = 1e-3
SAMPLES = 3000
CONFIGS = [
    GenerationConfig(max_new_tokens=2, temperature=1.0),
    GenerationConfig(max_new_tokens=2, temperature=0.7, top_k=5, top_p=0.9),
]


@pytest.fixture(scope="module")
def small_vocab_model():
    """A 2-layer Llama over 8 tokens, flat enough (initializer_range 0.1) that no sequence dominates."""
    return tiny_llama(vocab_size=VOCAB, initializer_range=0.1, eos_token_id=EOS, pad_token_id=0, bos_token_id=1)


def engine_samples(model, config, seeds, budget=10**6):
    return engine.sample(model, PROMPTS, config, seeds, [EOS], 0, budget, 8)


def sequence_cell(tokens: list[int]) -> tuple[int, ...]:
    """The sampled sequence up to and including the first eos (what a completion keeps)."""
    cut = tokens.index(EOS) + 1 if EOS in tokens else len(tokens)
    return tuple(tokens[:cut])


def plain_cells(model, prompt, config, n, seed):
    torch.manual_seed(seed)
    out = model.generate(
        input_ids=torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        do_sample=True, temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
        max_new_tokens=config.max_new_tokens, num_return_sequences=n, eos_token_id=EOS, pad_token_id=0,
    )  # fmt: skip
    return [sequence_cell(row[len(prompt) :].tolist()) for row in out]


def exact_distribution(model, prompt, config) -> dict[tuple[int, ...], float]:
    """P(sequence) under the warped sampling distribution, by enumerating all two-token continuations."""
    warp = engine.warpers(config)

    def next_probs(ids):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[:, -1].float()
        return torch.softmax(warp(None, logits), -1)[0]

    first = next_probs(prompt)
    dist = {}
    for t in range(VOCAB):
        if t == EOS:
            dist[(t,)] = first[t].item()
            continue
        second = next_probs(prompt + [t])
        for u in range(VOCAB):
            dist[(t, u)] = first[t].item() * second[u].item()
    return dist


def chi_square_p(observed: list[float], expected: list[float], df: int) -> float:
    stat = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    return torch.special.gammaincc(torch.tensor(df / 2), torch.tensor(stat / 2)).item()


def goodness_of_fit(cells: list[tuple[int, ...]], dist: dict) -> float:
    """p-value of the cells' counts against dist; cells expected fewer than 5 times are pooled into one."""
    n = len(cells)
    counts = {cell: cells.count(cell) for cell in set(cells)}
    impossible = [cell for cell in counts if dist.get(cell, 0.0) == 0.0]
    assert not impossible, f"sampled sequences of probability 0 (filtered out): {impossible}"
    big = [cell for cell, p in dist.items() if p * n >= 5]
    observed = [counts.get(cell, 0) for cell in big]
    expected = [dist[cell] * n for cell in big]
    observed.append(n - sum(observed))
    expected.append(n - sum(expected))
    if expected[-1] < 5:  # too little left over to test: fold it into the last big cell
        observed[-2:] = [observed[-2] + observed[-1]]
        expected[-2:] = [expected[-2] + expected[-1]]
    return chi_square_p(observed, expected, len(observed) - 1)


def homogeneity(a: list[tuple[int, ...]], b: list[tuple[int, ...]]) -> float:
    """p-value of the two-sample chi-square test that a and b come from one distribution (equal sizes)."""
    cells = sorted(set(a) | set(b))
    count_a, count_b = [a.count(c) for c in cells], [b.count(c) for c in cells]
    # Pool rare cells so that every expected count is at least 5.
    rare = [i for i, c in enumerate(cells) if (count_a[i] + count_b[i]) / 2 < 5]
    keep = [i for i in range(len(cells)) if i not in rare]
    rows = [[count_a[i] for i in keep] + [sum(count_a[i] for i in rare)],
            [count_b[i] for i in keep] + [sum(count_b[i] for i in rare)]]  # fmt: skip
    if rows[0][-1] + rows[1][-1] < 10:
        rows = [row[:-1] for row in rows]
    totals = [sum(col) for col in zip(*rows, strict=True)]
    observed = rows[0] + rows[1]
    expected = [t * sum(row) / sum(totals) for row in rows for t in totals]
    return chi_square_p(observed, expected, len(totals) - 1)


@pytest.mark.parametrize("config", CONFIGS, ids=["t1", "t0.7-k5-p0.9"])
def test_sampled_sequences_follow_the_same_distribution_as_generate(small_vocab_model, config):
    config = GenerationConfig(**{**config.__dict__, "num_samples": SAMPLES})
    ours = engine_samples(small_vocab_model, config, seeds=[11, 12])
    for i, prompt in enumerate(PROMPTS):
        cells = [sequence_cell(s.token_ids) for s in ours[i]]
        theirs = plain_cells(small_vocab_model, prompt, config, SAMPLES, seed=100 + i)
        dist = exact_distribution(small_vocab_model, prompt, config)
        assert sum(p > 0.02 for p in dist.values()) >= 4  # worth testing: not one near-certain sequence
        assert goodness_of_fit(cells, dist) > ALPHA
        assert goodness_of_fit(theirs, dist) > ALPHA
        assert homogeneity(cells, theirs) > ALPHA


def test_goodness_of_fit_rejects_a_wrong_temperature(small_vocab_model):
    """The test has power: samples at temperature 1 are rejected against the temperature-0.7 distribution."""
    config = GenerationConfig(max_new_tokens=2, num_samples=SAMPLES)
    cells = [sequence_cell(s.token_ids) for s in engine_samples(small_vocab_model, config, seeds=[11, 12])[0]]
    colder = exact_distribution(small_vocab_model, PROMPTS[0], GenerationConfig(max_new_tokens=2, temperature=0.7))
    assert goodness_of_fit(cells, colder) < ALPHA


def test_greedy_matches_generate_token_for_token(small_vocab_model):
    config = GenerationConfig(max_new_tokens=12, temperature=0)
    ours = engine_samples(small_vocab_model, config, seeds=None)
    for prompt, [sample] in zip(PROMPTS, ours, strict=True):
        out = small_vocab_model.generate(input_ids=torch.tensor([prompt]), do_sample=False, max_new_tokens=12,
                                         eos_token_id=EOS, pad_token_id=0)  # fmt: skip
        assert sample.token_ids == list(sequence_cell(out[0, len(prompt) :].tolist()))


def test_inverse_cdf_never_draws_a_zero_probability_token():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5], [0.0, 0.0, 1.0, 0.0]])
    edges = torch.tensor([0.0, 0.4999999, 0.5, 0.9999999])
    draws = [engine.inverse_cdf(probs, torch.full((2,), u)).tolist() for u in edges.tolist()]
    assert draws == [[1, 2], [1, 2], [3, 2], [3, 2]]


@pytest.mark.parametrize(
    ("lengths", "k", "budget", "max_prompts", "expected"),
    [
        ([5, 30, 10, 12], 2, 200, 8, [[1, 3], [2, 0]]),  # 2 * 2 * (30 + 10) = 160 fits; 3 * 2 * 40 does not
        ([5, 30, 10, 12], 2, 10, 8, [[1], [3], [2], [0]]),  # over the budget alone: one prompt per batch
        ([5, 5, 5, 5, 5], 1, 10**6, 2, [[0, 1], [2, 3], [4]]),  # max_prompts caps a batch
    ],
)
def test_token_budget_batches_longest_first_within_the_budget(lengths, k, budget, max_prompts, expected):
    batches = engine.plan_batches(lengths, k, 10, budget, max_prompts)
    assert batches == expected
    assert sorted(itertools.chain(*batches)) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * k * (max(lengths[i] for i in batch) + 10) <= budget
