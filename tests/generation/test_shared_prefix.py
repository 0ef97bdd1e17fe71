"""TransformersGenerator's shared-prefix engine: per-prompt seeds, log-probs, per-row eos, prefill once, budgets."""

from __future__ import annotations

import copy

import pytest
import torch

from directalign.data.batching import build_batch
from directalign.data.types import TokenizedRecord
from directalign.errors import ConfigError
from directalign.generation.base import GenerationConfig
from directalign.generation.transformers_backend import TransformersGenerator
from directalign.models.logprobs import ResponseLogProbs

PROMPTS = [
    [{"role": "user", "content": "Name a colour."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count to three, please, slowly."}],
    [{"role": "user", "content": "x"}],
    [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
]
SAMPLED = GenerationConfig(max_new_tokens=8, num_samples=3, temperature=1.0)
SEEDS = [101, 202, 303, 404]


def token_ids(completions):
    return [[c.token_ids for c in samples] for samples in completions]


def forward_batch_sizes(model):
    """Record (rows, new tokens) of every forward pass, from the embedding layer's output."""
    shapes = []
    handle = model.model.embed_tokens.register_forward_hook(lambda m, args, out: shapes.append(tuple(out.shape[:2])))
    return shapes, handle


def test_prompt_seeds_make_samples_independent_of_the_batch(tiny_policy, smollm2_tokenizer):
    together = TransformersGenerator(tiny_policy, smollm2_tokenizer).generate(PROMPTS, SAMPLED, prompt_seeds=SEEDS)
    # One prompt per batch, by the token budget and by batch_size, and the prompts in another order.
    by_budget = TransformersGenerator(tiny_policy, smollm2_tokenizer, token_budget=1)
    alone = by_budget.generate(PROMPTS, SAMPLED, prompt_seeds=SEEDS)
    order = [2, 0, 3, 1]
    shuffled = TransformersGenerator(tiny_policy, smollm2_tokenizer, batch_size=2).generate(
        [PROMPTS[i] for i in order], SAMPLED, prompt_seeds=[SEEDS[i] for i in order]
    )
    assert token_ids(alone) == token_ids(together)
    assert token_ids([shuffled[order.index(i)] for i in range(4)]) == token_ids(together)
    # Two processes sampling half of the prompts each get what one process sampling all of them gets.
    first = by_budget.generate(PROMPTS[:2], SAMPLED, prompt_seeds=SEEDS[:2])
    second = by_budget.generate(PROMPTS[2:], SAMPLED, prompt_seeds=SEEDS[2:])
    assert token_ids(first + second) == token_ids(together)
    for a, b in zip(alone, together, strict=True):
        for x, y in zip(a, b, strict=True):  # log-probs agree up to batch-shape rounding
            assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-5, rtol=0)
    assert len({tuple(c.token_ids) for c in together[0]}) == 3  # the k samples of a prompt differ


def test_a_prompts_seed_sets_its_samples_only(tiny_policy, smollm2_tokenizer):
    generator = TransformersGenerator(tiny_policy, smollm2_tokenizer)
    base = token_ids(generator.generate(PROMPTS, SAMPLED, prompt_seeds=SEEDS))
    changed = token_ids(generator.generate(PROMPTS, SAMPLED, prompt_seeds=[SEEDS[0], 7, SEEDS[2], SEEDS[3]]))
    assert changed[0] == base[0] and changed[2:] == base[2:]
    assert changed[1] != base[1]


def test_config_seed_is_independent_of_batch_size(tiny_policy, smollm2_tokenizer):
    config = GenerationConfig(max_new_tokens=6, num_samples=2, seed=5)
    big = TransformersGenerator(tiny_policy, smollm2_tokenizer, batch_size=8).generate(PROMPTS, config)
    small = TransformersGenerator(tiny_policy, smollm2_tokenizer, batch_size=1).generate(PROMPTS, config)
    assert token_ids(big) == token_ids(small)


def test_unseeded_sampling_follows_torch_manual_seed(tiny_policy, smollm2_tokenizer):
    generator = TransformersGenerator(tiny_policy, smollm2_tokenizer)
    torch.manual_seed(3)
    first = token_ids(generator.generate(PROMPTS[:2], SAMPLED))
    torch.manual_seed(3)
    assert token_ids(generator.generate(PROMPTS[:2], SAMPLED)) == first


def test_plain_engine_honours_prompt_seeds(tiny_policy, smollm2_tokenizer):
    plain = TransformersGenerator(tiny_policy, smollm2_tokenizer, engine="generate")
    together = plain.generate(PROMPTS, SAMPLED, prompt_seeds=SEEDS)
    alone = plain.generate(PROMPTS[1:2], SAMPLED, prompt_seeds=SEEDS[1:2])
    assert token_ids(alone) == token_ids(together[1:2])
    assert all(c.logprobs is None for samples in together for c in samples)


@pytest.mark.parametrize("layout", ["shared", "padded"])
def test_logprobs_match_the_training_forward(tiny_policy, smollm2_tokenizer, layout):
    generator = TransformersGenerator(tiny_policy, smollm2_tokenizer)
    completions = generator.generate(PROMPTS, SAMPLED, prompt_seeds=SEEDS)
    records = [
        TokenizedRecord(prompt_ids=generator._encode(prompt), response_ids=[c.token_ids for c in samples], pairs=[])
        for prompt, samples in zip(PROMPTS, completions, strict=True)
    ]
    batch = build_batch(records, pad_token_id=generator.pad_token_id, layout=layout)
    with torch.no_grad():
        training = ResponseLogProbs(tiny_policy)(batch)
    sampled = torch.tensor([lp for samples in completions for c in samples for lp in c.logprobs])
    assert sampled.shape == training.shape
    assert (sampled - training).abs().max().item() < 1e-5
    assert sampled.std().item() > 0.1  # real log-probs, not a constant


def test_each_row_stops_at_its_own_eos_and_leaves_the_batch(tiny_policy, smollm2_tokenizer, monkeypatch):
    # Declare a token the policy often samples an eos, so that some samples stop early and others run on.
    probe = TransformersGenerator(tiny_policy, smollm2_tokenizer).generate(
        PROMPTS[:2], GenerationConfig(max_new_tokens=12, num_samples=8), prompt_seeds=SEEDS[:2]
    )
    counts = torch.bincount(torch.tensor([t for samples in probe for c in samples for t in c.token_ids]))
    frequent = int(counts.argmax())
    monkeypatch.setattr(tiny_policy.generation_config, "eos_token_id", [2, frequent])
    generator = TransformersGenerator(tiny_policy, smollm2_tokenizer)
    shapes, handle = forward_batch_sizes(tiny_policy)
    out = generator.generate(PROMPTS[:2], GenerationConfig(max_new_tokens=12, num_samples=8), prompt_seeds=SEEDS[:2])
    handle.remove()
    flat = [c for samples in out for c in samples]
    for c in flat:
        assert all(t not in (2, frequent) for t in c.token_ids[:-1])
        assert c.finish_reason == ("stop" if c.token_ids[-1] in (2, frequent) else "length")
        assert c.finish_reason == "stop" or len(c.token_ids) == 12
    lengths = sorted(len(c.token_ids) for c in flat)
    assert lengths[0] < 12 and lengths[-1] == 12  # some stopped early, others ran to the end
    # After the prefill (2 prompts), each decode step runs only the rows still live, one token each.
    assert shapes[0][0] == 2 and shapes[0][1] > 1
    decode_rows = [rows for rows, width in shapes[1:]]
    assert all(width == 1 for _, width in shapes[1:])
    assert decode_rows == [sum(len(c.token_ids) > step for c in flat) for step in range(1, len(decode_rows) + 1)]


def test_each_prompt_is_prefilled_once_in_batches_within_the_budget(tiny_policy, smollm2_tokenizer):
    config = GenerationConfig(max_new_tokens=4, num_samples=4)
    lengths = [len(TransformersGenerator(tiny_policy, smollm2_tokenizer)._encode(p)) for p in PROMPTS]
    budget = 2 * 4 * (max(lengths) + 4)  # room for two prompts of the longest length
    generator = TransformersGenerator(tiny_policy, smollm2_tokenizer, token_budget=budget)
    shapes, handle = forward_batch_sizes(tiny_policy)
    generator.generate(PROMPTS, config, prompt_seeds=SEEDS)
    handle.remove()
    prefills = [(rows, width) for rows, width in shapes if width > 1]
    assert sum(rows for rows, _ in prefills) == len(PROMPTS)  # one row per prompt, not one per sample
    assert len(prefills) == 2
    assert all(rows * 4 * (width + 4) <= budget for rows, width in prefills)


def test_engines_agree_greedily_and_plain_generate_stays_reachable(tiny_policy, smollm2_tokenizer):
    greedy = GenerationConfig(max_new_tokens=10, temperature=0, num_samples=2)
    fast = TransformersGenerator(tiny_policy, smollm2_tokenizer, token_budget=64)
    plain = TransformersGenerator(tiny_policy, smollm2_tokenizer, engine="generate")
    assert (fast.engine, plain.engine) == ("shared-prefix", "generate")
    assert token_ids(fast.generate(PROMPTS, greedy)) == token_ids(plain.generate(PROMPTS, greedy))


def test_auto_engine_falls_back_where_the_model_adds_logits_processors(tiny_policy, smollm2_tokenizer):
    model = copy.deepcopy(tiny_policy)
    model.generation_config.repetition_penalty = 1.3
    assert TransformersGenerator(model, smollm2_tokenizer).engine == "generate"
    with pytest.raises(ConfigError, match="sets repetition_penalty, which the shared-prefix engine does not apply"):
        TransformersGenerator(model, smollm2_tokenizer, engine="shared-prefix")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"engine": "fast"}, "engine must be one of auto, shared-prefix, generate, got 'fast'"),
        ({"token_budget": 0}, "token_budget must be >= 1, got 0"),
    ],
)
def test_rejects_bad_options(tiny_policy, smollm2_tokenizer, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TransformersGenerator(tiny_policy, smollm2_tokenizer, **kwargs)


def test_rejects_prompt_seeds_of_the_wrong_length(tiny_policy, smollm2_tokenizer):
    with pytest.raises(ConfigError, match=r"prompt_seeds must be one integer per prompt \(4\)"):
        TransformersGenerator(tiny_policy, smollm2_tokenizer).generate(PROMPTS, SAMPLED, prompt_seeds=[1, 2])
