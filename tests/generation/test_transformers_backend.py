from __future__ import annotations

import copy
import types

import pytest
import torch
from peft import LoraConfig, get_peft_model

from directalign.errors import ConfigError, DataError
from directalign.generation.base import Completion, GenerationConfig, Generator, make_generator
from directalign.generation.transformers_backend import TransformersGenerator

PROMPTS = [
    [{"role": "user", "content": "Name a colour."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count to three, please, slowly."}],
    [{"role": "user", "content": "x"}],
]
GREEDY = GenerationConfig(max_new_tokens=10, temperature=0)


def token_ids(completions: list[list[Completion]]) -> list[list[list[int]]]:
    return [[c.token_ids for c in samples] for samples in completions]


def test_factory_builds_transformers_backend_by_default(tiny_policy, smollm2_tokenizer):
    generator = make_generator(model=tiny_policy, tokenizer=smollm2_tokenizer)
    assert isinstance(generator, TransformersGenerator)
    assert isinstance(generator, Generator)
    # SmolLM2 ends a turn with <|im_end|>, which is both its eos and its pad token.
    assert generator.eos_token_ids == [2]
    assert smollm2_tokenizer.convert_ids_to_tokens(2) == "<|im_end|>"


def test_n_samples_per_prompt_within_max_new_tokens(tiny_policy, smollm2_tokenizer):
    generator = TransformersGenerator(tiny_policy, smollm2_tokenizer, batch_size=2)
    out = generator.generate(PROMPTS, GenerationConfig(max_new_tokens=6, num_samples=3, seed=0))
    assert [len(samples) for samples in out] == [3, 3, 3]
    for samples in out:
        assert len({tuple(c.token_ids) for c in samples}) == 3  # sampled, not copies
        for c in samples:
            assert len(c.token_ids) == 6
            assert c.finish_reason == "length"
            assert c.text == smollm2_tokenizer.decode(c.token_ids, skip_special_tokens=True)


def test_same_seed_same_samples_other_seed_other_samples(tiny_policy, smollm2_tokenizer):
    generator = TransformersGenerator(tiny_policy, smollm2_tokenizer)
    config = GenerationConfig(max_new_tokens=8, num_samples=2, temperature=1.0, seed=123)
    first = token_ids(generator.generate(PROMPTS, config))
    assert token_ids(generator.generate(PROMPTS, config)) == first
    other = token_ids(generator.generate(PROMPTS, GenerationConfig(max_new_tokens=8, num_samples=2, seed=124)))
    assert all(a != b for a, b in zip(first, other, strict=True))


def test_seed_leaves_callers_random_state_alone(tiny_policy, smollm2_tokenizer):
    generator = TransformersGenerator(tiny_policy, smollm2_tokenizer)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    generator.generate(PROMPTS[:1], GenerationConfig(max_new_tokens=3, seed=0))
    assert torch.equal(torch.rand(3), expected)


def test_greedy_copies_are_identical_and_match_a_manual_argmax_loop(tiny_policy, smollm2_tokenizer):
    generator = TransformersGenerator(tiny_policy, smollm2_tokenizer)
    out = generator.generate(PROMPTS[:1], GenerationConfig(max_new_tokens=5, temperature=0, num_samples=2))
    assert out[0][0] == out[0][1]
    text = smollm2_tokenizer.apply_chat_template(PROMPTS[0], add_generation_prompt=True, tokenize=False)
    ids = smollm2_tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        for _ in range(5):
            next_id = tiny_policy(ids).logits[0, -1].argmax()
            ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
    assert out[0][0].token_ids == ids[0, -5:].tolist()


def test_top_k_and_top_p_reach_the_sampler(tiny_policy, smollm2_tokenizer):
    generator = TransformersGenerator(tiny_policy, smollm2_tokenizer)
    greedy = token_ids(generator.generate(PROMPTS, GREEDY))
    # Keeping only the most likely token makes sampling greedy, whatever the seed.
    for filters in ({"top_k": 1}, {"top_p": 1e-6}):
        sampled = generator.generate(PROMPTS, GenerationConfig(max_new_tokens=10, num_samples=2, seed=9, **filters))
        assert token_ids(sampled) == [samples * 2 for samples in greedy]


def test_left_padded_batches_match_one_prompt_at_a_time(tiny_policy, smollm2_tokenizer):
    batched = TransformersGenerator(tiny_policy, smollm2_tokenizer, batch_size=3).generate(PROMPTS, GREEDY)
    single = TransformersGenerator(tiny_policy, smollm2_tokenizer, batch_size=1).generate(PROMPTS, GREEDY)
    assert token_ids(batched) == token_ids(single)
    assert len({tuple(samples[0].token_ids) for samples in single}) == 3  # the prompts really differ


def test_stops_at_eos_and_reports_stop(tiny_policy, smollm2_tokenizer, monkeypatch):
    reference = TransformersGenerator(tiny_policy, smollm2_tokenizer).generate(PROMPTS[:1], GREEDY)[0][0].token_ids
    k = next(i for i in range(2, 10) if reference[i] not in reference[:i])
    # Declare the k-th greedy token an eos of the model: generation must end there, keeping the eos token.
    monkeypatch.setattr(tiny_policy.generation_config, "eos_token_id", [2, reference[k]])
    generator = TransformersGenerator(tiny_policy, smollm2_tokenizer)
    assert generator.eos_token_ids == [2, reference[k]]
    completion = generator.generate(PROMPTS[:1], GREEDY)[0][0]
    assert completion.token_ids == reference[: k + 1]
    assert completion.finish_reason == "stop"
    assert completion.text == smollm2_tokenizer.decode(reference[:k], skip_special_tokens=True)


def test_stop_string_cuts_text_and_tokens(tiny_policy, smollm2_tokenizer):
    generator = TransformersGenerator(tiny_policy, smollm2_tokenizer)
    reference = generator.generate(PROMPTS, GREEDY)
    ids, text = reference[1][0].token_ids, reference[1][0].text
    stop = smollm2_tokenizer.decode(ids[4:6]).strip()
    assert stop and stop not in smollm2_tokenizer.decode(ids[:5])  # the stop string is completed by token 5
    # The other prompts keep generating, so the stopped row is padded after its stop string.
    out = generator.generate(PROMPTS, GenerationConfig(max_new_tokens=10, temperature=0, stop=[stop]))
    assert out[1][0] == Completion(text[: text.index(stop)], ids[:6], "stop")
    assert text[: text.index(stop)].startswith(smollm2_tokenizer.decode(ids[:4]))
    assert [samples[0].finish_reason for samples in out] == ["length", "stop", "length"]


def test_peft_adapter_is_used_and_training_mode_restored(tiny_policy, smollm2_tokenizer):
    base_out = TransformersGenerator(tiny_policy, smollm2_tokenizer).generate(PROMPTS, GREEDY)
    lora = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(copy.deepcopy(tiny_policy), lora)
    peft_model.train()
    peft_model.base_model.model.lm_head.eval()  # a part the caller keeps in eval mode stays so
    modes = []
    layer = peft_model.base_model.model.model.layers[0]
    handle = layer.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    peft_out = TransformersGenerator(peft_model, smollm2_tokenizer).generate(PROMPTS, GREEDY)
    handle.remove()
    assert modes and not any(modes)  # eval mode (no dropout) while sampling
    assert peft_model.training and layer.training
    assert not peft_model.base_model.model.lm_head.training
    assert token_ids(peft_out) != token_ids(base_out)
    merged = peft_model.merge_and_unload().eval()
    assert token_ids(TransformersGenerator(merged, smollm2_tokenizer).generate(PROMPTS, GREEDY)) == token_ids(peft_out)


def test_rejects_prompts_that_are_not_chat_messages(tiny_policy, smollm2_tokenizer):
    generator = TransformersGenerator(tiny_policy, smollm2_tokenizer)
    with pytest.raises(DataError, match="prompt 1"):
        generator.generate([PROMPTS[0], "just a string"], GREEDY)


def test_needs_a_chat_template(tiny_policy):
    with pytest.raises(ConfigError, match="chat template"):
        TransformersGenerator(tiny_policy, types.SimpleNamespace(chat_template=None))
