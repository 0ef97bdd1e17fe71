"""The synthetic preference builder: sampling at several temperatures, judging, pairing, and a file the
trainer reads as it is."""

import json

import pytest
from transformers import AutoTokenizer, LlamaForCausalLM

from directalign.config import load_config
from directalign.data.formats import CONVERSATIONAL, load_records
from directalign.engine.metrics import read_metrics
from directalign.errors import ConfigError
from directalign.generation.base import Completion, make_generator
from directalign.judges.backends import reward_function_judge
from directalign.judges.synthetic import build_preferences, write_jsonl
from directalign.training.dpo import train


class ScriptedGenerator:
    """Completions from a table keyed by (prompt text, temperature); records the configs it was given."""

    def __init__(self, table):
        self.table, self.configs = table, []

    def generate(self, prompts, config=None):
        self.configs.append(config)
        return [
            [Completion(text, None, "stop") for text in self.table[(p[-1]["content"], config.temperature)]]
            for p in prompts
        ]


def words(prompts, completions, **columns):
    return [float(len(c.split())) for c in completions]


TABLE = {
    ("q1", 0.5): ["one", "one two three"],
    ("q1", 1.0): ["one two", "one"],  # a duplicate
    ("q2", 0.5): ["same", "   "],
    ("q2", 1.0): ["same", "same"],  # one response left: no pair
}


def test_all_pairs_and_best_vs_worst_with_counts():
    generator = ScriptedGenerator(TABLE)
    judge = reward_function_judge(words)
    result = build_preferences(
        ["q1", "q2"],
        generator,
        judge,
        temperatures=(0.5, 1.0),
        samples_per_temperature=2,
        max_new_tokens=7,
        pairing="all-pairs",
        seed=3,
    )
    assert [(c.temperature, c.num_samples, c.max_new_tokens, c.seed) for c in generator.configs] == [
        (0.5, 2, 7, 3),
        (1.0, 2, 7, 5),
    ]  # a new seed per temperature: seed + k * number of prompts
    rows = result.rows
    # q1 keeps "one", "one two three", "one two": 3 pairs, each decided by length.
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [
        ("one two three", "one"),
        ("one two", "one"),
        ("one two three", "one two"),
    ]
    assert rows[0]["prompt"] == [{"role": "user", "content": "q1"}]
    assert (rows[0]["chosen_temperature"], rows[0]["rejected_temperature"]) == (0.5, 0.5)
    assert rows[1]["judge_chosen_position"] == "B" and rows[1]["judge_rationale"] == "score A 1 vs B 2"
    assert rows[0]["judge"] == "reward:words" and 0.5 < rows[0]["judge_confidence"] < 1
    stats = result.stats
    assert (stats.prompts, stats.responses, stats.duplicates_dropped, stats.empty_dropped) == (2, 4, 3, 1)
    assert (stats.pairs_judged, stats.rows, stats.prompts_without_pair, stats.ties) == (3, 3, 1, 0)

    best = build_preferences(["q1", "q2"], ScriptedGenerator(TABLE), judge, temperatures=(0.5, 1.0))
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in best.rows] == [("one two three", "one")]


def test_unknown_pairing_is_a_config_error():
    with pytest.raises(ConfigError, match="pairing must be one of best-vs-worst, all-pairs"):
        build_preferences(["q"], ScriptedGenerator({}), reward_function_judge(words), pairing="best")


def test_sampled_dataset_trains_unchanged(tiny_model_dir, tmp_path):
    model = LlamaForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    generator = make_generator("transformers", model=model, tokenizer=tokenizer)
    prompts = ["Write a haiku about rain.", "Name three colours.", "What is 7 times 6?", "Say something kind."]
    result = build_preferences(
        prompts,
        generator,
        reward_function_judge(words),
        temperatures=(0.3, 0.5, 0.7, 1.0),
        max_new_tokens=12,
        pairing="all-pairs",
        seed=0,
    )
    assert result.stats.responses == 16 and result.stats.pairs_judged == 24
    assert len(result.rows) == 24 - result.stats.ties > 0
    path = write_jsonl(result.rows, tmp_path / "synthetic.jsonl")
    first = json.loads(path.read_text().splitlines()[0])
    assert {"prompt", "chosen", "rejected", "judge_rationale", "judge_confidence"} <= first.keys()

    loaded = load_records(path)
    assert loaded.schema == CONVERSATIONAL and len(loaded.records) == len(result.rows) and not loaded.skipped

    out = tmp_path / "run"
    cfg = load_config(
        "train",
        overrides=dict(
            model=str(tiny_model_dir),
            data=str(path),
            output_dir=str(out),
            max_steps=2,
            per_device_train_batch_size=2,
            logging_steps=1,
            eval_split=0.2,
            save_steps=0,
            kl_prompts=0,
            max_length=128,
            max_prompt_length=64,
        )
    )
    trained = train(cfg)
    assert trained.steps == 2
    assert len([e for e in read_metrics(out / "metrics.jsonl") if e["split"] == "train"]) == 2


def test_prompts_without_two_distinct_responses_give_no_rows():
    result = build_preferences(["q2"], ScriptedGenerator(TABLE), reward_function_judge(words), temperatures=(0.5, 1.0))
    assert (result.rows, result.stats.pairs_judged, result.stats.prompts_without_pair) == ([], 0, 1)
