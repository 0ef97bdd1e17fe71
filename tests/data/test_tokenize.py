from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest

from directalign.data import tokenize as tokenize_module
from directalign.data.formats import load_records, records_from_rows
from directalign.data.tokenize import tokenize_records
from directalign.data.types import PreferenceRecord
from directalign.errors import ConfigError


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def template_ids(tokenizer, messages, **kwargs):
    return list(
        tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"]
    )


SINGLE = PreferenceRecord(
    prompt=[user("What colour is the sky?")],
    responses=[[assistant("Blue.")], [assistant("It is green, mostly.")]],
    source="mem:1",
)
MULTI = PreferenceRecord(
    prompt=[user("Hi"), assistant("Hello! How can I help?"), user("What is 2+2?")],
    responses=[[assistant("4")], [assistant("22")]],
    source="mem:2",
)
UNLIMITED = {"max_length": None, "max_prompt_length": None}


@pytest.mark.parametrize("record", [SINGLE, MULTI], ids=["single-turn", "multi-turn"])
def test_prompt_then_response_is_the_full_chat_template(smollm2_tokenizer, record):
    tok = smollm2_tokenizer
    (out,) = tokenize_records([record], tok, **UNLIMITED).records
    assert out.prompt_ids == template_ids(tok, record.prompt, add_generation_prompt=True)
    for response, response_ids in zip(record.responses, out.response_ids, strict=True):
        assert out.prompt_ids + response_ids == template_ids(tok, record.prompt + response)
    assert out.pairs == [(0, 1)] and out.source == record.source


def test_multi_turn_boundary_is_exact(smollm2_tokenizer):
    tok = smollm2_tokenizer
    (out,) = tokenize_records([MULTI], tok, **UNLIMITED).records
    prompt_text = tok.decode(out.prompt_ids)
    assert prompt_text.endswith(
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert [tok.decode(ids) for ids in out.response_ids] == ["4<|im_end|>\n", "22<|im_end|>\n"]


def test_template_that_renders_the_prompt_differently_moves_the_boundary(smollm2_tokenizer):
    # Like Gemma's empty thought block: the generation prompt alone is not a prefix of prompt + response.
    tok = copy.deepcopy(smollm2_tokenizer)
    tok.chat_template = tok.chat_template.replace(
        "'<|im_start|>assistant\n'", "'<|im_start|>assistant\n<think></think>'"
    )
    result = tokenize_records([SINGLE], tok, **UNLIMITED)
    (out,) = result.records
    full = template_ids(tok, SINGLE.prompt + SINGLE.chosen)
    assert result.stats.prompt_boundary_mismatches == 1
    assert tok.decode(out.prompt_ids).endswith("<|im_start|>assistant\n")
    assert out.prompt_ids + out.response_ids[0] == full


def test_prompt_keeps_its_end_and_responses_their_start(smollm2_tokenizer):
    tok = smollm2_tokenizer
    long_prompt = PreferenceRecord(
        prompt=[user(" ".join(f"word{i}" for i in range(200)))],
        responses=[[assistant("short")], [assistant(" ".join(f"reply{i}" for i in range(100)))]],
    )
    (full,) = tokenize_records([long_prompt], tok, **UNLIMITED).records
    result = tokenize_records([long_prompt, SINGLE], tok, max_length=60, max_prompt_length=40)
    out = result.records[0]
    assert out.prompt_ids == full.prompt_ids[-40:]
    assert tok.decode(out.prompt_ids).endswith("word199<|im_end|>\n<|im_start|>assistant\n")
    assert out.response_ids[0] == full.response_ids[0]  # fits: untouched
    assert out.response_ids[1] == full.response_ids[1][:20]
    assert (out.prompt_truncated, out.response_truncated) == (True, True)
    untouched = result.records[1]
    assert (untouched.prompt_truncated, untouched.response_truncated) == (False, False)
    stats = result.stats
    assert (stats.prompts_truncated, stats.responses_truncated, stats.num_responses) == (1, 1, 4)
    # Lengths are recorded before truncation, so that they can guide the choice of max_length.
    assert stats.prompt_lengths[0] == len(full.prompt_ids) > 40
    assert stats.rejected_lengths[0] == len(full.response_ids[1]) > 20
    assert stats.chosen_lengths == [
        len(full.response_ids[0]),
        len(tokenize_records([SINGLE], tok).records[0].response_ids[0]),
    ]


def test_both_responses_truncated_count_twice(smollm2_tokenizer):
    long = " ".join(f"reply{i}" for i in range(50))
    record = PreferenceRecord(prompt=[user("q")], responses=[[assistant(long)], [assistant(long + " more")]])
    result = tokenize_records([record], smollm2_tokenizer, max_length=40, max_prompt_length=30)
    assert result.stats.responses_truncated == 2
    assert all(len(result.records[0].prompt_ids) + len(r) == 40 for r in result.records[0].response_ids)


def test_prompt_limit_must_leave_room_for_responses(smollm2_tokenizer):
    with pytest.raises(ConfigError, match="max_prompt_length"):
        tokenize_records([SINGLE], smollm2_tokenizer, max_length=512, max_prompt_length=512)


def test_batches_split_records_at_the_right_places(smollm2_tokenizer, monkeypatch):
    three = PreferenceRecord(
        prompt=[user("Pick")], responses=[[assistant("a")], [assistant("bb")], [assistant("c")]]
    )
    records = [SINGLE, three, MULTI, SINGLE, three]
    whole = tokenize_records(records, smollm2_tokenizer).records
    monkeypatch.setattr(tokenize_module, "BATCH_SIZE", 2)
    assert tokenize_records(records, smollm2_tokenizer).records == whole
    assert len(whole[1].response_ids) == 3
    assert smollm2_tokenizer.decode(whole[1].response_ids[1]) == "bb<|im_end|>\n"


def test_plain_text_without_chat_template(smollm2_tokenizer):
    tok = smollm2_tokenizer
    (single, multi) = tokenize_records([SINGLE, MULTI], tok, use_chat_template=False).records
    # TRL's standard form: the prompt string, then the response string and eos.
    assert single.prompt_ids == tok("What colour is the sky?")["input_ids"]
    assert tok.decode(single.response_ids[0]) == "Blue.<|im_end|>"
    # Multi-turn prompts become the Anthropic transcript.
    assert (
        tok.decode(multi.prompt_ids)
        == "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: What is 2+2?\n\nAssistant:"
    )
    assert tok.decode(multi.response_ids[1]) == " 22<|im_end|>"


def _trl_prepare(tokenizer, rows):
    """Run TRL 1.16's own DPOTrainer._prepare_dataset (no truncation) on rows."""
    datasets = pytest.importorskip("datasets")
    dpo_trainer = pytest.importorskip("trl.trainer.dpo_trainer")
    args = SimpleNamespace(dataset_num_proc=None, max_length=None, truncation_mode="keep_start")
    trainer = SimpleNamespace(_tokenizer=tokenizer)
    dataset = datasets.Dataset.from_list(rows)
    return list(dpo_trainer.DPOTrainer._prepare_dataset(trainer, dataset, tokenizer, args, "train"))


def _assert_same_as_trl(ours, theirs):
    assert len(ours) == len(theirs)
    for record, row in zip(ours, theirs, strict=True):
        assert record.prompt_ids == row["prompt_ids"]
        assert record.response_ids == [row["chosen_ids"], row["rejected_ids"]]


@pytest.mark.shared_data
def test_same_ids_as_trl_on_hh_rlhf_rows(smollm2_tokenizer, hh_rlhf_file):
    records = load_records(hh_rlhf_file).records[:24]
    rows = [{"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected} for r in records]
    ours = tokenize_records(records, smollm2_tokenizer, **UNLIMITED).records
    assert sum(len(r.prompt) > 1 for r in records) >= 10  # multi-turn prompts are covered
    _assert_same_as_trl(ours, _trl_prepare(smollm2_tokenizer, rows))


def test_same_ids_as_trl_on_text_rows(smollm2_tokenizer):
    rows = [
        {"prompt": "The capital of France is", "chosen": " Paris.", "rejected": " Lyon."},
        {"prompt": "2 + 2 =", "chosen": " 4", "rejected": " 5, or so"},
    ]
    records = records_from_rows(rows, "mem").records
    ours = tokenize_records(records, smollm2_tokenizer, use_chat_template=False, **UNLIMITED).records
    _assert_same_as_trl(ours, _trl_prepare(smollm2_tokenizer, rows))


def test_long_tokenisation_shows_a_progress_bar_with_rate(smollm2_tokenizer, monkeypatch, capsys):
    # The bar waits PROGRESS_DELAY_S before it appears, so short jobs print nothing; here it appears at once.
    monkeypatch.setattr(tokenize_module, "PROGRESS_DELAY_S", 0)
    rows = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(300)]
    tokenize_records(records_from_rows(rows, "mem").records, smollm2_tokenizer)
    err = capsys.readouterr().err
    assert "tokenising" in err and "/300 " in err and "records/s" in err
