from __future__ import annotations

import re
import textwrap

import pytest

from directalign.errors import ConfigError, DataError
from directalign.generation.rewards import (
    combine,
    exact_number,
    last_number,
    load_reward_function,
    regex_match,
    reward_breakdown,
    target_length,
    valid_json,
)

PROMPTS = [[{"role": "user", "content": "q"}]] * 4


def test_target_length_in_words_falls_linearly_to_zero():
    reward = target_length(10, unit="words", tolerance=5)
    completions = ["w " * 10, "w " * 12, "w " * 7, "w " * 30]
    assert reward(PROMPTS, completions) == pytest.approx([1.0, 0.6, 0.4, 0.0])
    assert reward.__name__ == "target_length"


def test_target_length_in_chars_with_default_tolerance():
    reward = target_length(4, unit="chars")  # tolerance = target: 0 at 0 and at 8 characters
    assert reward(["p"] * 4, ["abcd", "ab", "", "abcdefgh"]) == pytest.approx([1.0, 0.5, 0.0, 0.0])


def test_target_length_in_tokens(smollm2_tokenizer):
    text = "Hello world, how are you?"
    n = len(smollm2_tokenizer(text, add_special_tokens=False)["input_ids"])
    reward = target_length(n + 2, unit="tokens", tolerance=4, tokenizer=smollm2_tokenizer)
    assert reward(["p"], [text]) == pytest.approx([0.5])


def test_target_length_scores_the_last_message_of_a_conversational_completion():
    reward = target_length(2, unit="words", tolerance=2)
    assert reward(PROMPTS[:1], [[{"role": "assistant", "content": "two words"}]]) == [1.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"unit": "lines"}, "unit must be one of words, chars, tokens"),
        ({"unit": "tokens"}, "needs a tokenizer"),
        ({"tolerance": 0}, "tolerance > 0"),
    ],
)
def test_target_length_rejects_bad_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        target_length(10, **kwargs)


def test_regex_match_search_and_full():
    completions = ["<think>a</think> <answer>4</answer>", "answer: <answer>4</answer>", "no tags"]
    anywhere = regex_match(r"<answer>\d+</answer>")
    full = regex_match(r"<think>.*</think>\s*<answer>.*</answer>", full=True)
    assert anywhere(PROMPTS[:3], completions) == [1.0, 1.0, 0.0]
    assert full(PROMPTS[:3], completions) == [1.0, 0.0, 0.0]


def test_regex_match_flags():
    completion = ["<think>line one\nline two</think>"]
    assert regex_match(r"<think>.*</think>", full=True)(["p"], completion) == [0.0]
    assert regex_match(r"<think>.*</think>", full=True, flags=re.DOTALL)(["p"], completion) == [1.0]


def test_regex_match_rejects_invalid_pattern():
    with pytest.raises(ConfigError, match=r"invalid pattern '\(unclosed'"):
        regex_match("(unclosed")


def test_valid_json():
    completions = ['{"name": "a", "age": 3}', '```json\n{"name": "b"}\n```', "{name: 'c'}", "[1, 2]", ""]
    assert valid_json()(["p"] * 5, completions) == [1.0, 1.0, 0.0, 1.0, 0.0]
    assert valid_json(required_keys=["name", "age"])(["p"] * 5, completions) == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert valid_json(required_keys=["name"])(["p"] * 5, completions) == [1.0, 1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("The answer is 42.", 42.0),
        ("1,234.5 then -7", -7.0),
        ("costs $1,234.50", 1234.5),
        ("1,2,3", 3.0),
        ("none", None),
    ],
)
def test_last_number(text, number):
    assert last_number(text) == number


def test_exact_number_compares_the_last_number_with_the_answer_column():
    reward = exact_number()
    completions = ["2 + 2 = 4, so 4", "it is 5", "I think 72", "no idea"]
    answers = ["#### 4", 4, "Natalia sold 48/2 = 24 clips ... #### 72", "3"]
    assert reward(PROMPTS, completions, answer=answers) == [1.0, 0.0, 1.0, 0.0]


def test_exact_number_tolerance_and_column_name():
    reward = exact_number(answer_column="solution", tol=0.01)
    assert reward(PROMPTS[:3], ["3.14", "3.16", "3.149"], solution=[3.14159] * 3) == [1.0, 0.0, 1.0]


def test_exact_number_names_missing_column_and_bad_row():
    with pytest.raises(ConfigError, match="needs the column 'answer'; the batch has label"):
        exact_number()(PROMPTS[:1], ["4"], label=["4"])
    with pytest.raises(DataError, match="row 1: column 'answer' holds no number: 'four'"):
        exact_number()(PROMPTS[:2], ["4", "4"], answer=["4", "four"])


def test_combine_is_the_weighted_sum_and_breakdown_keeps_each_function():
    has_answer = regex_match(r"<answer>")
    correct = exact_number()
    reward = combine([(has_answer, 0.5), (correct, 2.0)])
    completions = ["<answer>4</answer>", "<answer>5</answer>", "4", "nothing"]
    answers = [4, 4, 4, 4]
    assert reward(PROMPTS, completions, answer=answers) == [2.5, 0.5, 2.0, 0.0]
    total, per_function = reward_breakdown(reward, PROMPTS, completions, answer=answers)
    assert total == [2.5, 0.5, 2.0, 0.0]
    assert per_function == {"regex_match": [1.0, 1.0, 0.0, 0.0], "exact_number": [1.0, 0.0, 1.0, 0.0]}


def test_breakdown_of_a_plain_function_and_repeated_names():
    def brevity(prompts, completions, **columns):
        return [-len(c) for c in completions]

    assert reward_breakdown(brevity, ["p", "p"], ["ab", "abc"]) == ([-2.0, -3.0], {"brevity": [-2.0, -3.0]})
    twice = combine([(regex_match("a"), 1.0), (regex_match("b"), -1.0)])
    total, per_function = reward_breakdown(twice, ["p", "p"], ["a", "ab"])
    assert total == [1.0, 0.0]
    assert list(per_function) == ["regex_match", "regex_match_2"]


def test_breakdown_checks_what_reward_functions_return():
    def short(prompts, completions, **columns):
        return [1.0]

    def not_numbers(prompts, completions, **columns):
        return ["good", "bad"]

    with pytest.raises(ConfigError, match="short returned 1 scores for 2 completions"):
        reward_breakdown(short, ["p", "p"], ["a", "b"])
    with pytest.raises(ConfigError, match="not_numbers returned a score that is not a number"):
        reward_breakdown(not_numbers, ["p", "p"], ["a", "b"])


def test_combine_rejects_bare_functions():
    with pytest.raises(ConfigError, match="expected \\(reward function, weight\\) pairs"):
        combine([regex_match("a")])


USER_MODULE = textwrap.dedent(
    """
    def shout(prompts, completions, **columns):
        return [float(c.isupper()) for c in completions]

    THRESHOLD = 3
    """
)


def test_load_reward_function_from_module_and_from_file(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    for spec in ("my_rewards:shout", f"{tmp_path / 'my_rewards.py'}:shout"):
        shout = load_reward_function(spec)
        assert shout(["p", "p"], ["LOUD", "quiet"]) == [1.0, 0.0]
        assert shout.__name__ == "shout"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("my_rewards", 'must be "module:function"'),
        ("my_rewards:shuot", r"has no 'shuot' \(did you mean 'shout'\?\)"),
        ("my_rewards:THRESHOLD", "is a int, not a function"),
        ("no_such_module_xyz:f", "cannot import 'no_such_module_xyz'"),
        ("missing/file.py:f", "missing/file.py does not exist"),
    ],
)
def test_load_reward_function_errors(tmp_path, monkeypatch, spec, message):
    (tmp_path / "my_rewards.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=message):
        load_reward_function(spec)


# A reward function that fails is one line naming it (the trainers' loop shows it; --debug the traceback).


def test_a_reward_file_with_a_syntax_error_names_its_line(tmp_path):
    path = tmp_path / "rewards.py"
    path.write_text("def length(prompts, completions:\n    return []\n")
    with pytest.raises(ConfigError, match=r"rewards\.py:1: '\(' was never closed"):
        load_reward_function(f"{path}:length")


def test_a_reward_file_that_fails_at_import_says_so(tmp_path):
    path = tmp_path / "rewards.py"
    path.write_text("raise RuntimeError('no GPU here')\n")
    with pytest.raises(ConfigError, match="failed to import: RuntimeError: no GPU here"):
        load_reward_function(f"{path}:length")


def test_a_reward_function_that_raises_is_one_error_naming_it():
    def flaky(prompts, completions, **columns):
        raise ValueError("the reward server is down")

    with pytest.raises(ConfigError, match="reward function flaky raised ValueError: the reward server is down"):
        reward_breakdown(flaky, ["p"], ["c"])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_reward_is_refused(bad):
    def scores(prompts, completions, **columns):
        return [1.0, bad]

    with pytest.raises(ConfigError, match=f"returned {bad} for completion 1"):
        reward_breakdown(scores, ["p", "p"], ["a", "b"])


def test_the_builtin_reward_refuses_prompts_it_cannot_score_before_any_sampling():
    from directalign.data.builtin import builtin_tasks
    from directalign.generation.rewards import reward_from_specs

    builtin = [[{"role": "user", "content": t.prompt}] for t in builtin_tasks(3)]
    assert reward_from_specs(["builtin"], prompts=builtin) is not None
    with pytest.raises(ConfigError, match="reward_funcs: the builtin reward scores only the built-in tasks"):
        reward_from_specs(["builtin"], prompts=[*builtin, [{"role": "user", "content": "Write a poem."}]])
    assert reward_from_specs(["builtin"]) is not None  # without prompts (a library caller): not checked
