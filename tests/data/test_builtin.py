"""The built-in verifiable preference set: determinism, disjoint splits, and a verifier that ranks chosen first."""

from __future__ import annotations

import argparse
import random
import re

import pytest

from directalign.cli import eval as eval_cli
from directalign.config import TrainConfig
from directalign.data import builtin
from directalign.data.builtin import (
    BUILTIN_EVAL_PAIRS,
    CATEGORIES,
    FACTS,
    builtin_held_out,
    builtin_records,
    builtin_split,
    builtin_tasks,
    task_from_prompt,
    verify,
)
from directalign.data.pipeline import training_records
from directalign.errors import ConfigError
from directalign.evaluation.heldout import held_out_records

KINDS = {"arithmetic", "capitals", "json", "one_word", "numbered_list", "word_count", "yes_no"}


def test_same_seed_same_records_regardless_of_global_rng():
    random.seed(1)
    first = builtin_records(60, seed=3)
    random.seed(2)
    state = random.getstate()
    assert builtin_records(60, seed=3) == first
    assert random.getstate() == state, "the global RNG must not be consumed"
    assert builtin_records(60, seed=4) != first


def test_a_longer_set_extends_a_shorter_one():
    assert builtin_tasks(70, seed=5)[:30] == builtin_tasks(30, seed=5)


def test_record_layout():
    records = builtin_records(14)
    for i, record in enumerate(records):
        assert record.source == f"builtin:{i}"
        assert [m["role"] for m in record.prompt] == ["user"]
        assert [[m["role"] for m in r] for r in record.responses] == [["assistant"], ["assistant"]]
        assert record.pairs == [(0, 1)]
        assert record.chosen[0]["content"] != record.rejected[0]["content"]
        assert record.labels is None


def test_all_kinds_mixed_and_prompts_distinct():
    tasks = builtin_tasks(700)
    assert {t.kind for t in tasks[:7]} == KINDS
    assert len({t.prompt for t in tasks}) == len(tasks)


def test_responses_and_prompts_are_short():
    for task in builtin_tasks(700):
        assert len(task.prompt.split()) <= 20
        for text in (task.chosen, task.rejected):
            assert len(text.split()) <= 20 and len(text) <= 120, text


@pytest.mark.parametrize("seed", [0, 1])
def test_chosen_scores_one_and_rejected_lower(seed):
    for task in builtin_tasks(700, seed=seed):
        assert task.chosen != task.rejected
        assert verify(task, task.chosen) == 1.0, task
        assert verify(task, task.rejected) in (0.0, 0.5), task


def test_verify_accepts_records_and_prompt_text():
    train, held_out = builtin_split(35, 35)
    for record in train + held_out:
        chosen, rejected = record.chosen[0]["content"], record.rejected[0]["content"]
        assert verify(record, chosen) == 1.0
        assert verify(record.prompt[0]["content"], rejected) < 1.0


def test_task_from_prompt_rebuilds_the_task():
    for task in builtin_tasks(300, seed=2):
        rebuilt = task_from_prompt(task.prompt)
        assert (rebuilt.kind, rebuilt.answer, rebuilt.count, rebuilt.key) == (
            task.kind,
            task.answer,
            task.count,
            task.key,
        )


@pytest.mark.parametrize(
    "prompt",
    [
        "Write a poem about the sea.",
        "What is the capital of Atlantis? Answer in one word.",
        "Name seven fruits as a numbered list.",
        "Name three dinosaurs, in exactly three words.",
    ],
)
def test_unknown_prompts_are_rejected(prompt):
    with pytest.raises(ValueError, match="not a built-in task"):
        task_from_prompt(prompt)


@pytest.mark.parametrize(
    "prompt,completion,score",
    [
        ("What is 37 + 48? Reply with just the number.", "85", 1.0),
        ("What is 37 + 48? Reply with just the number.", "The answer is 85.", 0.5),
        ("What is 37 + 48? Reply with just the number.", "75", 0.5),
        ("What is 37 + 48? Reply with just the number.", "It is 75.", 0.0),
        ("What is 91 - 47? Reply with just the number.", "44", 1.0),
        ("What is 23 * 7? Reply with just the number.", "161", 1.0),
        ("What is the capital of France? Answer in all capital letters.", "PARIS", 1.0),
        ("What is the capital of France? Answer in all capital letters.", "THE CAPITAL IS PARIS.", 1.0),
        ("What is the capital of France? Answer in all capital letters.", "Paris", 0.5),
        ("What is the capital of France? Answer in all capital letters.", "LYON", 0.5),
        ('What is the capital of France? Reply in JSON with the key "answer".', '{"answer": "Paris"}', 1.0),
        ('What is the capital of France? Reply in JSON with the key "answer".', '{"result": "Paris"}', 0.5),
        ('What is the capital of France? Reply in JSON with the key "answer".', '{"answer": "Lyon"}', 0.5),
        ('What is the capital of France? Reply in JSON with the key "answer".', "Paris", 0.5),
        ("What is the opposite of hot? Answer in one word.", "cold.", 1.0),
        ("What is the opposite of hot? Answer in one word.", "It is cold.", 0.5),
        ("What is the opposite of hot? Answer in one word.", "Warm", 0.5),
        ("Name three fruits as a numbered list.", "1. Apples\n2. Cherries\n3. Peach", 1.0),
        ("Name three fruits as a numbered list.", "1. Apple\n2. Pear", 0.5),
        ("Name three fruits as a numbered list.", "apple, pear, plum", 0.5),
        ("Name three fruits as a numbered list.", "1. Apple\n3. Pear\n2. Plum", 0.5),
        ("Name two colors, in exactly two words.", "Red, blue.", 1.0),
        ("Name two colors, in exactly two words.", "Red and blue.", 0.5),
        ("Name two colors, in exactly two words.", "Sky, ocean.", 0.5),
        ("Is 14 an even number? Answer yes or no.", "Yes.", 1.0),
        ("Is 14 an even number? Answer yes or no.", "No", 0.5),
        ("Is 14 an even number? Answer yes or no.", "Yes, it is.", 0.5),
        ("Is 15 an even number? Answer yes or no.", "Yes, it is.", 0.0),
        ("Is 30 greater than 120? Answer yes or no.", "no", 1.0),
    ],
)
def test_verify_scores_hand_written_completions(prompt, completion, score):
    assert verify(prompt, completion) == score


def _subjects(records) -> tuple[set[int], set[str], set[str]]:
    """Numbers of two or more digits, facts and list categories that the records' prompts use."""
    prompts = [r.prompt[0]["content"] for r in records]
    tasks = [task_from_prompt(p) for p in prompts]
    numbers = {int(n) for p in prompts for n in re.findall(r"\d+", p) if int(n) >= 10}
    facts = {t.answer for t in tasks if t.kind in ("capitals", "json", "one_word")}
    categories = {t.answer for t in tasks if t.kind in ("numbered_list", "word_count")}
    return numbers, facts, categories


@pytest.mark.parametrize("train_seed,eval_seed", [(7, 7), (1, 0)])
def test_split_holds_out_numbers_facts_and_categories(train_seed, eval_seed):
    # The held-out subjects are fixed, so even sets drawn with different seeds stay disjoint.
    train, _ = builtin_split(400, 0, seed=train_seed)
    _, held_out = builtin_split(0, 140, seed=eval_seed)
    assert len(train) == 400 and len(held_out) == 140
    assert not {r.prompt[0]["content"] for r in train} & {r.prompt[0]["content"] for r in held_out}
    for train_subjects, eval_subjects in zip(_subjects(train), _subjects(held_out), strict=True):
        assert eval_subjects and train_subjects
        assert not train_subjects & eval_subjects
    kinds = [{task_from_prompt(r.prompt[0]["content"]).kind for r in rs} for rs in (train, held_out)]
    assert kinds == [KINDS, KINDS]
    assert _subjects(held_out)[1] <= set(FACTS.values()) and _subjects(held_out)[2] <= set(CATEGORIES)
    assert [r.source for r in held_out[:2]] == ["builtin:eval:0", "builtin:eval:1"]
    assert train[0].source == "builtin:train:0"


def test_split_seeds_give_different_examples():
    assert builtin_split(20, 20, seed=0) != builtin_split(20, 20, seed=1)


def test_zero_negative_and_too_many(monkeypatch):
    assert builtin_records(0) == []
    with pytest.raises(ConfigError):
        builtin_records(-1)
    # With the capital-letters family alone there are exactly len(FACTS) distinct prompts.
    monkeypatch.setattr(builtin, "_FAMILIES", (builtin._draw_fact("capitals"),))
    assert len(builtin_tasks(len(FACTS))) == len(FACTS)
    with pytest.raises(ConfigError, match="distinct"):
        builtin_tasks(len(FACTS) + 1)


def _eval_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    eval_cli.register(parser.add_subparsers())
    return parser.parse_args(["eval", *argv])


def test_train_and_eval_builtin_score_the_same_held_out_pairs():
    """`train` without data holds out exactly the pairs `eval --data builtin` scores, whatever the seed."""
    train, held, _, _ = training_records(TrainConfig())
    assert len(held) == BUILTIN_EVAL_PAIRS == TrainConfig().builtin_eval_pairs
    assert _held(_eval_args("--data", "builtin")) == held
    other_train, other_held, _, _ = training_records(TrainConfig(seed=7))
    assert other_held == held and other_train != train
    assert _held(_eval_args("--data", "builtin", "--limit", "10")) == held[:10]
    assert builtin_held_out(100)[:BUILTIN_EVAL_PAIRS] == held


def _held(args):
    """The records `eval` scores for these parsed arguments."""
    return held_out_records(args.data, args.data_split, args.data_config, args.limit)
