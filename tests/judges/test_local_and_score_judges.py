"""The local log-prob judge on a tiny random Llama with the real SmolLM2 tokenizer, and score-based judges."""

import math

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from directalign.errors import ConfigError
from directalign.judges.backends import LocalModelJudge, ScoreJudge, reward_function_judge
from directalign.judges.base import LETTER_ANSWER, judge_messages
from directalign.judges.pairwise import judge_pairs

PROMPTS = ["Say hi.", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count to three."}]]
A = ["Hi there, how can I help you today?", "1 2 3"]
B = ["Hello.", "one, two, three, and that is all I will count"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return LlamaForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def manual_prob_a(model, tokenizer, prompt, a, b):
    text = tokenizer.apply_chat_template(
        judge_messages(prompt, a, b, LETTER_ANSWER), add_generation_prompt=True, tokenize=False
    )
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logp = model(ids).logits[0, -1].log_softmax(-1)
    # "A" and " A" are single tokens in SmolLM2's vocabulary (49 and 330; "B" 50 and 389)
    return torch.sigmoid(logp[[49, 330]].logsumexp(-1) - logp[[50, 389]].logsumexp(-1)).item()


def test_prob_a_is_the_verdict_token_probability_whatever_the_batch(tiny):
    model, tokenizer = tiny
    judge = LocalModelJudge(model, tokenizer, batch_size=2)
    assert judge.letter_ids == {"A": [49, 330], "B": [50, 389]}
    verdicts = judge.judge(PROMPTS, A, B)  # one right-padded batch of two different lengths
    expected = [manual_prob_a(model, tokenizer, p, a, b) for p, a, b in zip(PROMPTS, A, B, strict=True)]
    assert [v.prob_a for v in verdicts] == pytest.approx(expected, abs=1e-5)
    assert [v.winner for v in verdicts] == ["A" if p > 0.5 else "B" for p in expected]
    assert verdicts[0].rationale == f"P(A) = {expected[0]:.3f}"


def test_swapped_probabilities_are_averaged_and_wide_margins_make_ties(tiny):
    model, tokenizer = tiny
    forward = [
        manual_prob_a(model, tokenizer, PROMPTS[0], A[0], B[0]),
        manual_prob_a(model, tokenizer, PROMPTS[0], B[0], A[0]),
    ]
    (judgement,) = judge_pairs(LocalModelJudge(model, tokenizer), PROMPTS[:1], A[:1], B[:1])
    assert judgement.prob_a == pytest.approx((forward[0] + 1 - forward[1]) / 2, abs=1e-5)
    (wide,) = LocalModelJudge(model, tokenizer, tie_margin=0.4999).judge(PROMPTS[:1], A[:1], B[:1])
    assert wide.winner == "tie"


def test_long_responses_are_cut_so_the_question_stays(tiny):
    model, tokenizer = tiny
    judge = LocalModelJudge(model, tokenizer, max_response_tokens=5)
    cut = judge._cut("word " * 50)
    assert (
        cut.endswith(" [...]")
        and len(tokenizer(cut.removesuffix(" [...]"), add_special_tokens=False)["input_ids"]) == 5
    )
    assert judge._cut("short") == "short"


def test_local_judge_needs_a_chat_template(tiny):
    model, tokenizer = tiny
    plain = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    plain.chat_template = None
    with pytest.raises(ConfigError, match="chat template"):
        LocalModelJudge(model, plain)


def longer(prompts, completions, **columns):
    return [float(len(c.split())) for c in completions]


def test_reward_function_judge_picks_the_higher_score_with_a_tie_margin():
    judge = reward_function_judge(longer, tie_margin=1.0)
    assert judge.name == "reward:longer" and judge.order_invariant
    verdicts = judge.judge(["p"] * 3, ["a b c", "a b", "a"], ["a", "a", "a b c d"])
    assert [v.winner for v in verdicts] == ["A", "tie", "B"]
    assert verdicts[0].prob_a == pytest.approx(1 / (1 + math.exp(-2)))
    assert verdicts[0].rationale == "score A 3 vs B 1"


def test_score_judge_reads_a_reward_model_like_object_and_flags_bad_scores():
    class Scorer:
        def score(self, prompts, responses):
            return [float("nan") if r == "?" else float(len(r)) for r in responses]

    judge = ScoreJudge(Scorer().score, name="rm")
    out = judge_pairs(judge, ["p", "p"], ["long one", "?"], ["short", "x"])
    assert [j.winner for j in out] == ["A", None]
    with pytest.raises(ConfigError, match="tie_margin >= 0"):
        ScoreJudge(Scorer().score, tie_margin=-1)
