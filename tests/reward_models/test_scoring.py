"""Scoring with a reward model: the chat template, padding, batching and the reward-function interface."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from directalign.data.batching import build_batch
from directalign.data.types import TokenizedRecord
from directalign.errors import ConfigError
from directalign.reward_models.bradley_terry import ResponseRewards, record_rewards
from directalign.reward_models.scoring import RewardModel, encode, sequence_rewards


@pytest.fixture(scope="module")
def tiny_reward_model(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=1, pad_token_id=tokenizer.eos_token_id
    )
    torch.nn.init.normal_(model.score.weight, std=1.0)  # a visible spread of scores
    return model.eval(), tokenizer


PROMPTS = ["Hi!", [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Name a colour."}], "Why?"]
RESPONSES = ["Hello, how can I help you today?", [{"role": "assistant", "content": "Red."}], "Because."]


def test_tokens_are_the_chat_template_of_prompt_and_response(tiny_reward_model):
    _, tokenizer = tiny_reward_model
    (ids,) = encode(tokenizer, ["Hi!"], ["Hello."])
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."}], tokenize=False
    )
    assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    (cut,) = encode(tokenizer, ["Hi! " * 100], ["Hello."], max_length=40, max_prompt_length=30)
    assert len(cut) <= 40


def test_scores_match_one_at_a_time_forward_passes_whatever_the_batch(tiny_reward_model):
    model, tokenizer = tiny_reward_model
    expected = []
    for prompt, response in zip(PROMPTS, RESPONSES, strict=True):
        (ids,) = encode(tokenizer, [prompt], [response])
        with torch.no_grad():
            expected.append(model(input_ids=torch.tensor([ids])).logits[0, 0].item())
    for batch_size in (1, 2, 8):
        scores = RewardModel(model, tokenizer, batch_size=batch_size).score(PROMPTS, RESPONSES)
        assert scores == pytest.approx(expected, abs=1e-4)
    assert len(set(round(s, 3) for s in expected)) == 3


def test_reward_function_interface_and_pairs(tiny_reward_model):
    from directalign.data.types import PreferenceRecord
    from directalign.generation.rewards import reward_breakdown

    model, tokenizer = tiny_reward_model
    reward_model = RewardModel(model, tokenizer)
    fn = reward_model.as_reward_function("helpfulness")
    total, parts = reward_breakdown(fn, PROMPTS, RESPONSES, answer=[1, 2, 3])
    assert fn.__name__ == "helpfulness" and total == pytest.approx(reward_model.score(PROMPTS, RESPONSES))
    assert list(parts) == ["helpfulness"]
    record = PreferenceRecord(
        [{"role": "user", "content": "Hi!"}],
        [[{"role": "assistant", "content": "Hello."}], [{"role": "assistant", "content": "Go away."}]],
    )
    chosen, rejected = reward_model.score_records([record])
    assert [chosen[0], rejected[0]] == pytest.approx(reward_model.score(["Hi!", "Hi!"], ["Hello.", "Go away."]))


def test_a_model_without_pad_token_id_or_folder_is_a_config_error(tiny_reward_model, tmp_path):
    model, tokenizer = tiny_reward_model
    pad = model.config.pad_token_id
    model.config.pad_token_id = None
    try:
        with pytest.raises(ConfigError, match="no pad_token_id"):
            RewardModel(model, tokenizer)
    finally:
        model.config.pad_token_id = pad
    with pytest.raises(ConfigError, match="not a reward model folder"):
        RewardModel.load(tmp_path)



@pytest.mark.parametrize("layout", ["padded", "shared", "packed"])
def test_every_layout_gives_the_sequence_classifiers_own_rewards_and_gradients(tiny_reward_model, layout):
    """ResponseRewards reads each response's last token that is not padding, in any layout: the rewards and the
    gradients of transformers' own right-padded forward pass (a response ending in the pad token included, which
    the classifier skips over), with each prompt computed once for its responses in the shared and packed layouts."""
    model, tokenizer = tiny_reward_model
    pad = model.config.pad_token_id
    ids = encode(tokenizer, PROMPTS, RESPONSES)
    cut = [len(encode(tokenizer, [p], [""])[0]) - 3 for p in PROMPTS]  # the prompt/response split inside the template
    records = [TokenizedRecord(prompt_ids=s[:c], response_ids=[s[c:], s[c:-2], s[c:] + [pad]], pairs=[(0, 1), (2, 1)])
               for s, c in zip(ids, cut, strict=True)]
    weights = torch.randn(9, generator=torch.Generator().manual_seed(0))

    def rewards_and_grads(forward):
        model.zero_grad()
        rewards = forward()
        (rewards * weights).sum().backward()
        watched = (model.score.weight, model.model.layers[0].mlp.up_proj.weight)
        return rewards.detach(), [p.grad.clone() for p in watched]

    sequences = [r.prompt_ids + response for r in records for response in r.response_ids]
    expected, expected_grads = rewards_and_grads(lambda: sequence_rewards(model, sequences, pad))
    batch = build_batch(records, pad, layout, 4096)
    ours, our_grads = rewards_and_grads(lambda: ResponseRewards(model)(batch))
    model.zero_grad()
    assert torch.allclose(ours, expected, atol=1e-5)
    assert torch.allclose(ours[0::3], ours[2::3], atol=1e-6)  # a trailing pad token changes nothing
    for a, b in zip(our_grads, expected_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    chosen, rejected = record_rewards(ResponseRewards(model), records, pad, layout, 4096)
    assert torch.allclose(chosen, expected[[0, 2, 3, 5, 6, 8]], atol=1e-5)
    assert torch.allclose(rejected, expected[[1, 1, 4, 4, 7, 7]], atol=1e-5)
