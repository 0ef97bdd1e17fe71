"""Online DPO and the on-policy pieces it shares: config, prompts, sampling, best-vs-worst pairs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from directalign.config import load_config
from directalign.data.prompts import builtin_prompt_sets, load_prompts
from directalign.engine.metrics import read_metrics
from directalign.errors import ConfigError
from directalign.generation.base import Completion
from directalign.generation.rewards import builtin_content, reward_from_specs
from directalign.training.online import online_dpo
from directalign.training.rollout import Group, best_worst_pairs, completion_ids, sampling_metrics


def onpolicy_config(tiny_model_dir, out, command="online-dpo", **kw):
    base = dict(
        model=str(tiny_model_dir), output_dir=str(out), max_steps=2, per_device_train_batch_size=2,
        builtin_train_prompts=4, builtin_eval_prompts=2, max_new_tokens=5, num_generations=3, kl_prompts=1,
        kl_samples=1, eval_max_new_tokens=5, learning_rate=1e-2, seed=0, logging_steps=1,
    )
    return load_config(command, overrides={**base, **kw})


def length_reward(prompts, completions, **columns):
    return [float(len(c)) for c in completions]


def group(rewards, finish=None) -> Group:
    n = len(rewards)
    finish = finish or ["stop"] * n
    completions = [Completion(f"c{k}", [10 + k, 2], finish[k]) for k in range(n)]
    return Group([{"role": "user", "content": "q"}], [1, 5], completions, [[10 + k, 2] for k in range(n)],
                 list(rewards), {"r": list(rewards)})


def test_best_worst_pairs_skip_ties_and_keep_sampled_ids():
    records, ties = best_worst_pairs([group([0.2, 0.9, 0.1]), group([0.5, 0.5, 0.5]), group([1.0, 0.0, 1.0])])
    assert ties == 1
    assert [r.response_ids for r in records] == [[[11, 2], [12, 2]], [[10, 2], [11, 2]]]
    assert all(r.pairs == [(0, 1)] and r.prompt_ids == [1, 5] for r in records)


def test_sampling_metrics():
    metrics = sampling_metrics([group([0.0, 1.0], ["stop", "length"]), group([0.5, 0.5])])
    assert metrics["reward"] == pytest.approx(0.5)
    assert metrics["reward_std"] == pytest.approx(torch.tensor([0.0, 1.0, 0.5, 0.5]).std().item())
    assert metrics["frac_reward_zero_std"] == 0.5
    assert metrics["completions/clipped_ratio"] == 0.25 and metrics["completions/mean_length"] == 2.0
    assert metrics["rewards/r/mean"] == pytest.approx(0.5)


def test_completion_ids_fall_back_to_encoding_the_text(smollm2_tokenizer):
    assert completion_ids(Completion("hi", [7, 8], "stop"), smollm2_tokenizer) == [7, 8]
    encoded = smollm2_tokenizer("Paris", add_special_tokens=False)["input_ids"]
    assert completion_ids(Completion("Paris", None, "stop"), smollm2_tokenizer) == encoded + [
        smollm2_tokenizer.eos_token_id
    ]
    assert completion_ids(Completion("Paris", None, "length"), smollm2_tokenizer) == encoded


def test_builtin_prompt_sets_filter_kinds_and_keep_held_out_apart():
    train, held = builtin_prompt_sets(12, 6, ["yes_no", "one_word"], seed=0)
    assert len(train) == 12 and len(held) == 6
    assert set(train.columns["kind"]) == set(held.columns["kind"]) == {"yes_no", "one_word"}
    assert not {p[-1]["content"] for p in train.prompts} & {p[-1]["content"] for p in held.prompts}
    with pytest.raises(ConfigError, match="unknown poems"):
        builtin_prompt_sets(4, 2, ["poems"], seed=0)


def test_load_prompts_keeps_columns_and_reads_preference_files(tmp_path):
    rows = [{"prompt": "2+2?", "answer": 4}, {"messages": [{"role": "user", "content": "3+3?"},
                                                           {"role": "assistant", "content": "6"}], "answer": 6}]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts = load_prompts(str(path))
    assert prompts.prompts == [[{"role": "user", "content": "2+2?"}], [{"role": "user", "content": "3+3?"}]]
    assert prompts.columns == {"answer": [4, 6]}
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    assert load_prompts(str(pairs)).prompts == [[{"role": "user", "content": "q"}]]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_generations": "1"}, "num_generations must be >= 2; got 1"),
        ({"loss_type": "kto"}, "online-dpo: loss_type must be one of sigmoid, robust"),
        ({"beta": "0"}, "beta must be > 0"),
        ({"reward_funcs": "builtin,builtin", "reward_weights": "1"}, "reward_weights has 1 values for 2"),
        ({"temperature": "-1"}, "temperature must be > 0"),
        ({"top_p": "0"}, r"top_p must be in \(0, 1\]"),
        ({"builtin_kinds": "poems"}, "builtin_kinds must be one of arithmetic, .*; got 'poems'"),
    ],
)
def test_bad_onpolicy_settings(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        online_dpo(load_config("online-dpo", overrides={"output_dir": str(tmp_path / "run"), **overrides}))


def test_online_dpo_steps_on_fresh_pairs(tiny_model_dir, tmp_path):
    seen = []
    cfg = onpolicy_config(tiny_model_dir, tmp_path / "run")
    result = online_dpo(cfg, length_reward, on_step=lambda step, metrics: seen.append(step))
    assert seen == [1, 2]
    events = read_metrics(tmp_path / "run" / "metrics.jsonl")
    train = [e for e in events if e["split"] == "train"]
    assert [e["step"] for e in train] == [1, 2]
    for key in ("reward", "reward_std", "frac_reward_zero_std", "pairs", "loss", "rewards/margins", "grad_norm",
                "completions/mean_length", "completions/clipped_ratio", "rewards/length_reward/mean"):
        assert key in train[0], key
    # Step 1: LoRA B is zero, so the policy is its reference and the DPO loss of every pair is log 2.
    assert train[0]["pairs"] == 2 and train[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert [e["tag"] for e in events if e["split"] == "eval"] == ["before", "after"]
    assert result.eval_before["kl"] == pytest.approx(0.0, abs=1e-6)  # untouched policy: its own reference
    assert math.isfinite(result.eval_after["kl"]) and result.eval_after["reward"] > 0
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()


def test_all_ties_give_no_pairs_and_no_update(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    def constant(prompts, completions, **columns):
        return [1.0] * len(completions)

    online_dpo(onpolicy_config(tiny_model_dir, tmp_path / "run", eval_before_training=False, kl_prompts=0), constant)
    train = [e for e in read_metrics(tmp_path / "run" / "metrics.jsonl") if e["split"] == "train"]
    assert [e["pairs"] for e in train] == [0, 0] and all("loss" not in e for e in train)
    assert all(e["frac_reward_zero_std"] == 1.0 for e in train)
    weights = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    assert all(not w.any() for name, w in weights.items() if "lora_B" in name)  # never stepped


def test_builtin_rewards_and_the_content_format_breakdown():
    from directalign.training.rollout import builtin_breakdown

    prompt = "What is the capital of Japan? Answer in one word."
    answers = ["Tokyo", "The capital of Japan is Tokyo.", "Nagoya", "I am not sure about that one."]
    assert builtin_content([prompt] * 4, answers) == [1.0, 1.0, 0.0, 0.0]
    reward = reward_from_specs(["builtin", "builtin_content"], [1, 1])
    assert reward([prompt] * 4, answers) == [2.0, 1.5, 0.5, 0.0]  # verifier + content
    groups = []
    for text in answers:
        g = group([0.0])
        g.prompt = [{"role": "user", "content": prompt}]
        g.completions = [Completion(text, None, "stop")]
        g.rewards = [float(text == "Tokyo")]
        groups.append(g)
    breakdown = builtin_breakdown(groups, ["one_word"] * 4)
    assert breakdown == {"content": 0.5, "format": 0.5, "reward/one_word": 0.25}


def test_a_reward_model_folder_is_a_reward_function(tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=1, pad_token_id=tokenizer.eos_token_id
    )
    torch.nn.init.normal_(model.score.weight, std=1.0)
    model.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    scores = reward_from_specs([f"reward_model:{tmp_path / 'rm'}"])(["Name a colour."] * 2,
                                                                   ["Red.", "I would rather not say anything at all."])
    assert len(scores) == 2 and scores[0] != scores[1]


def test_heldout_checks_and_the_paired_change_interval(tmp_path):
    from directalign.training.rollout import heldout_checks, paired_change, write_samples

    prompt = [{"role": "user", "content": "What is the capital of Japan? Answer in one word."}]
    groups = []
    for text in ("Tokyo", "The capital of Japan is Tokyo.", "Nagoya"):
        g = group([0.0])
        g.prompt, g.completions = prompt, [Completion(text, None, "stop")]
        groups.append(g)
    write_samples(tmp_path / "round_0.jsonl", groups)
    assert heldout_checks(tmp_path / "round_0.jsonl") == [(True, True), (True, False), (False, True)]
    change, low, high = paired_change([0, 0, 1, 1], [1, 1, 1, 1], n_boot=500)
    assert change == 0.5 and 0 <= low <= 0.5 <= high <= 1
    assert paired_change([1, 0], [1, 0]) == (0.0, 0.0, 0.0)  # no item changed: no spread
