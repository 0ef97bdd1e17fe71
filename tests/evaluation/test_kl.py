"""The sampled KL estimate: zero for identical models, and the exact KL in expectation."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from directalign.evaluation.kl import prompt_ids, sampled_kl
from directalign.models.logprobs import ResponseLogProbs
from directalign.models.reference import FrozenReference

PROMPTS = [[{"role": "user", "content": "What is 2 + 2?"}], [{"role": "user", "content": "Name a fruit."}]]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def perturbed(model, scale, seed=1):
    other = copy.deepcopy(model)
    torch.manual_seed(seed)
    with torch.no_grad():
        head = other.get_output_embeddings().weight
        head.add_(scale * torch.randn_like(head))
    return other


def test_identical_models_have_zero_kl(tiny):
    model, tokenizer = tiny
    result = sampled_kl(ResponseLogProbs(model), FrozenReference.copy_of(model), tokenizer, PROMPTS,
                        num_samples=3, max_new_tokens=8, seed=0)
    assert len(result.completions) == 2 and all(len(group) == 3 for group in result.completions)
    assert result.kl == 0.0 and all(r == 0.0 for group in result.log_ratios for r in group)
    assert 1 <= result.mean_length <= 8


def test_one_token_estimate_matches_the_exact_kl(tiny):
    model, tokenizer = tiny
    reference_model = perturbed(model, 0.5)
    n = 600
    result = sampled_kl(ResponseLogProbs(model), FrozenReference(reference_model), tokenizer, PROMPTS[:1],
                        num_samples=n, max_new_tokens=1, seed=0, batch_size=1)
    ids = torch.tensor([prompt_ids(tokenizer, PROMPTS[0])])
    with torch.no_grad():
        log_p = model(ids).logits[0, -1].log_softmax(-1)
        log_q = reference_model(ids).logits[0, -1].log_softmax(-1)
    exact = (log_p.exp() * (log_p - log_q)).sum().item()
    assert exact > 0.1
    assert abs(result.kl - exact) < 4 * result.kl_std_error + 1e-3
    assert result.kl_std_error < 0.25 * exact


def test_same_seed_same_estimate(tiny):
    model, tokenizer = tiny
    reference = FrozenReference(perturbed(model, 0.3))
    runs = [sampled_kl(ResponseLogProbs(model), reference, tokenizer, PROMPTS, max_new_tokens=6, seed=7)
            for _ in range(2)]
    assert runs[0].kl == runs[1].kl and runs[0].kl != 0.0
