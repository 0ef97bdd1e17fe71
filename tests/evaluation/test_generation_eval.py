"""The held-out table on a tiny model: perplexity, the model beside its reference, and `directalign eval`."""

import copy
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from directalign.cli.main import main
from directalign.config import load_config
from directalign.data.builtin import builtin_split
from directalign.data.tokenize import tokenize_records
from directalign.evaluation.generation_eval import evaluate_model, format_table, perplexity
from directalign.generation.rewards import builtin_reward
from directalign.models.logprobs import ResponseLogProbs
from directalign.models.reference import FrozenReference
from directalign.training.dpo import train


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def held_out(tiny):
    records = builtin_split(0, 4)[1]
    return records, tokenize_records(records, tiny[1], max_length=256, max_prompt_length=128).records


def test_perplexity_is_exp_of_the_mean_token_nll_of_chosen(tiny, held_out):
    model, tokenizer = tiny
    _, tokenized = held_out
    nll, tokens = 0.0, 0
    with torch.no_grad():
        for r in tokenized:
            response = r.response_ids[r.pairs[0][0]]
            ids = torch.tensor([r.prompt_ids + response])
            logp = model(ids).logits[0, :-1].log_softmax(-1)
            targets = ids[0, 1:]
            token_logp = logp.gather(1, targets[:, None]).squeeze(1)[len(r.prompt_ids) - 1 :]
            nll -= token_logp.sum().item()
            tokens += len(response)
    expected = math.exp(nll / tokens)
    got = perplexity(ResponseLogProbs(model), tokenized, pad_token_id=tokenizer.pad_token_id, batch_size=3)
    assert got == pytest.approx(expected, rel=1e-4)


def test_builtin_reward_verifies_chosen_over_rejected():
    records = builtin_split(0, 6)[1]
    prompts = [r.prompt for r in records]
    chosen = builtin_reward(prompts, [r.chosen[0]["content"] for r in records])
    rejected = builtin_reward(prompts, [r.rejected[0]["content"] for r in records])
    assert chosen == [1.0] * 6 and all(r < 1.0 for r in rejected)


def test_model_beside_its_reference_in_one_table(tiny, held_out):
    model, tokenizer = tiny
    records, tokenized = held_out
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.get_output_embeddings().weight.mul_(3.0)

    def prefer_short(prompt, a, b):
        return "a" if len(a) < len(b) else "b" if len(b) < len(a) else "tie"

    result = evaluate_model(ResponseLogProbs(other), FrozenReference(model), tokenizer, records, tokenized, beta=0.1,
                            reward_fn=builtin_reward, judge=prefer_short, num_samples=2, max_new_tokens=6, seed=0)
    assert result["n_pairs"] == 4 and result["reference/implicit_accuracy"] == 0.5
    assert result["perplexity"] != result["reference/perplexity"] > 1
    assert result["kl"] != 0.0 and result["reference/kl"] == 0.0
    assert 1 <= result["lengths/generated"] <= 6 and 1 <= result["reference/lengths/generated"] <= 6
    assert result["win_rate/n"] + result["win_rate/unparseable"] == 8 and result["win_rate/judge"] == "prefer_short"
    assert 0 <= result["win_rate/ci_low"] <= result["win_rate/win_rate"] <= result["win_rate/ci_high"] <= 1
    assert len(result["samples"]) == 8 and {"prompt", "model", "reference"} <= result["samples"][0].keys()
    table = format_table(result)
    for label in ("implicit preference accuracy", "perplexity", "KL to reference", "generated length",
                  "mean reward", "win rate vs reference", "length-controlled win rate"):
        assert label in table, label


def test_model_alone_without_generation(tiny, held_out):
    model, tokenizer = tiny
    records, tokenized = held_out
    result = evaluate_model(ResponseLogProbs(model), None, tokenizer, records, tokenized, beta=0.1, generate=False)
    assert "implicit_accuracy" not in result and "reference/perplexity" not in result
    assert result["perplexity"] > 1 and "logp_accuracy" in result


def test_eval_command_on_a_trained_adapter(tiny_model_dir, tmp_path, capsys):
    cfg = load_config("train", overrides=dict(model=str(tiny_model_dir), output_dir=str(tmp_path / "run"), max_steps=2,
                                     builtin_train_pairs=8, builtin_eval_pairs=2, per_device_train_batch_size=4,
                                     learning_rate=5e-2, save_steps=0, kl_prompts=0, warmup_ratio=0.0))
    train(cfg)
    capsys.readouterr()
    samples = tmp_path / "samples.jsonl"
    args = ["eval", "--model", str(tiny_model_dir), "--adapter", str(tmp_path / "run" / "adapter"), "--data",
            "builtin", "--limit", "4", "--generate", "--samples", "2", "--max-new-tokens", "6", "--ci", "bootstrap",
            "--save-samples", str(samples)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "win rate vs reference" in table and "(judge: builtin_reward)" in table and "bootstrap" in table
    assert len(samples.read_text().splitlines()) == 8
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n_pairs"] == 4 and result["win_rate/n"] == 8 and "samples" not in result
    assert result["mean_margin"] != 0.0 and "reward" in result and "reference/reward" in result
