"""Scoring with a reward model: the chat template, padding, batching and the reward-function interface."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from directalign.errors import ConfigError
from directalign.reward_models.scoring import RewardModel, encode


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
