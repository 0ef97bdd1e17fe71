"""The files the hostile-input probe (benchmarks/probe.py) feeds the commands: a tiny random model built from a
config, small valid data files of every schema, and the bad variants of them.

Everything here is written once per probe into its work folder by `prepare` (in a worker process, which has
torch and transformers imported anyway); the cases refer to the files by name.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
from pathlib import Path

PROMPTS = [f"What is {i} + {i + 1}?" for i in range(12)]


def _jsonl(rows: list) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def text_rows() -> list[dict]:
    return [{"prompt": p, "chosen": str(2 * i + 1), "rejected": "I do not know."} for i, p in enumerate(PROMPTS)]


def conversational_rows() -> list[dict]:
    return [
        {"prompt": [{"role": "user", "content": r["prompt"]}],
         "chosen": [{"role": "assistant", "content": r["chosen"]}],
         "rejected": [{"role": "assistant", "content": r["rejected"]}]}
        for r in text_rows()
    ]


def hh_rows() -> list[dict]:
    return [{"chosen": f"\n\nHuman: {r['prompt']}\n\nAssistant: {r['chosen']}",
             "rejected": f"\n\nHuman: {r['prompt']}\n\nAssistant: {r['rejected']}"} for r in text_rows()]


def sharegpt_rows() -> list[dict]:
    return [{"conversations": [{"from": "human", "value": r["prompt"]}],
             "chosen": {"from": "gpt", "value": r["chosen"]}, "rejected": {"from": "gpt", "value": r["rejected"]}}
            for r in text_rows()]


def unpaired_rows() -> list[dict]:
    rows = []
    for r in text_rows():
        rows.append({"prompt": r["prompt"], "completion": r["chosen"], "label": True})
        rows.append({"prompt": r["prompt"], "completion": r["rejected"], "label": False})
    return rows


def ranked_rows() -> list[dict]:
    return [{"prompt": r["prompt"], "responses": [r["chosen"], "maybe 3", r["rejected"]], "scores": [3.0, 2.0, 1.0]}
            for r in text_rows()]


def csv_text(rows: list[dict]) -> str:
    import csv

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["prompt", "chosen", "rejected"])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


# A pickle whose loading creates a marker file: what a crafted optimizer.pt in a shared run folder would do.
class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def hostile_pickle(marker: Path) -> bytes:
    return pickle.dumps({"state": _Payload(str(marker))})


def hostile_torch_file(path: Path, marker: Path) -> None:
    """A torch.save-format zip whose data.pkl opens `marker` when unpickled (torch.load(weights_only=False))."""
    import torch

    torch.save({"state": _Payload(str(marker))}, path)


REWARD_PY = '''
import math

def length(prompts, completions, **columns):
    return [float(len(c)) for c in completions]

def nan(prompts, completions, **columns):
    return [math.nan for _ in completions]

def short(prompts, completions, **columns):
    return [1.0]

def boom(prompts, completions, **columns):
    raise ValueError("the reward server is down")

def text(prompts, completions, **columns):
    return ["high" for _ in completions]

def judge(prompt, first, second):
    return float(len(first) - len(second))

not_callable = 3
'''


def write_data(d: Path) -> None:
    """Valid files of every schema and layout, then the bad variants (names in BAD_DATA)."""
    d.mkdir(parents=True, exist_ok=True)
    rows = text_rows()
    (d / "text.jsonl").write_text(_jsonl(rows))
    (d / "conv.jsonl").write_text(_jsonl(conversational_rows()))
    (d / "hh.jsonl").write_text(_jsonl(hh_rows()))
    (d / "sharegpt.json").write_text(json.dumps(sharegpt_rows()))
    (d / "kto.jsonl").write_text(_jsonl(unpaired_rows()))
    (d / "ranked.jsonl").write_text(_jsonl(ranked_rows()))
    (d / "pairs.csv").write_text(csv_text(rows))
    (d / "text.json").write_text(json.dumps(rows))
    (d / "text.jsonl.gz").write_bytes(gzip.compress(_jsonl(rows).encode()))
    (d / "prompts.jsonl").write_text(_jsonl([{"prompt": p} for p in PROMPTS]))
    (d / "rewards.py").write_text(REWARD_PY)
    (d / "broken_rewards.py").write_text("def length(prompts, completions:\n")
    (d / "annotations.csv").write_text(
        "item,annotator,label\n" + "".join(f"{i},{a},{(i + a) % 2}\n" for i in range(8) for a in range(3)))
    (d / "gold.csv").write_text("item,label\n" + "".join(f"{i},{i % 2}\n" for i in range(8)))
    import pandas as pd

    pd.DataFrame(rows).to_parquet(d / "pairs.parquet")
    write_bad_data(d, rows)


def write_bad_data(d: Path, rows: list[dict]) -> None:
    good = _jsonl(rows).encode()
    packed = gzip.compress(good * 4)
    bad = {
        "truncated.jsonl.gz": packed[: len(packed) // 2],
        "not_gzip.jsonl.gz": good,
        "empty.jsonl": b"",
        "blank.jsonl": b"\n  \n\t\n",
        "garbage.jsonl": bytes(range(256)) * 4,
        "latin1.jsonl": "".join(json.dumps({**r, "chosen": "caf\u00e9"}, ensure_ascii=False) + "\n"
                                for r in rows).encode("latin-1"),
        "utf16.jsonl": _jsonl(rows).encode("utf-16"),
        "bad_json_all.jsonl": b"{not json\n" * 6,
        "scalars.jsonl": b"1\n2\n3\n",
        "list_rows.jsonl": b"[1, 2]\n[3, 4]\n",
        "truncated.json": json.dumps(rows).encode()[:-40],
        "wrong_types.jsonl": _jsonl([{"prompt": 1, "chosen": 2, "rejected": 3}] * 4).encode(),
        "null_fields.jsonl": _jsonl([{"prompt": None, "chosen": None, "rejected": None}] * 4).encode(),
        "dict_fields.jsonl": _jsonl([{"prompt": {"a": 1}, "chosen": {"b": 2}, "rejected": [3]}] * 4).encode(),
        "unknown_role.jsonl": _jsonl([
            {"prompt": [{"role": "user", "content": r["prompt"]}],
             "chosen": [{"role": "tool", "content": r["chosen"]}],
             "rejected": [{"role": "wizard", "content": r["rejected"]}]} for r in rows]).encode(),
        "no_schema.jsonl": _jsonl([{"question": r["prompt"], "answer": r["chosen"]} for r in rows]).encode(),
        "empty_responses.jsonl": _jsonl([{**r, "chosen": "", "rejected": ""} for r in rows]).encode(),
        "identical_responses.jsonl": _jsonl([{**r, "rejected": r["chosen"]} for r in rows]).encode(),
        "hh_no_assistant.jsonl": _jsonl([{"chosen": f"\n\nHuman: {r['prompt']}", "rejected": "no turns"}
                                         for r in rows]).encode(),
        "ranked_nan.jsonl": _jsonl([{"prompt": r["prompt"], "responses": ["a", "b"], "scores": ["nan", 1.0]}
                                    for r in rows]).encode(),
        "ranked_bad_pairs.jsonl": _jsonl([{"prompt": r["prompt"], "responses": ["a", "b"], "pairs": [[0, 7]]}
                                          for r in rows]).encode(),
        "kto_bad_labels.jsonl": _jsonl([{"prompt": r["prompt"], "completion": r["chosen"], "label": "maybe"}
                                        for r in rows]).encode(),
        "bad_quoting.csv": ("prompt,chosen,rejected\n" + "".join(
            f'{r["prompt"]},{r["chosen"]}, then more,{r["rejected"]}\n' for r in rows)).encode(),
        "unclosed_quote.csv": ("prompt,chosen,rejected\n" + "".join(
            f'"{r["prompt"]},{r["chosen"]},{r["rejected"]}\n' for r in rows)).encode(),
        "missing_column.csv": ("prompt,chosen\n" + "".join(f'{r["prompt"]},{r["chosen"]}\n' for r in rows)).encode(),
        "header_only.csv": b"prompt,chosen,rejected\n",
        "truncated.parquet": (d / "pairs.parquet").read_bytes()[:200],
        "unknown_format.txt": good,
        "duplicate_keys.jsonl": b'{"prompt": "a", "chosen": "b", "rejected": "c", "chosen": "d"}\n' * 4,
        "deep_nesting.jsonl": (b"[" * 100000 + b"]" * 100000 + b"\n"),
        "huge_number.jsonl": b'{"prompt": "p", "responses": ["a", "b"], "scores": [1e400, 0]}\n' * 4,
    }
    for name, content in bad.items():
        (d / name).write_bytes(content)
    (d / "empty_folder").mkdir(exist_ok=True)
    (d / "ds_broken").mkdir(exist_ok=True)
    (d / "ds_broken" / "dataset_info.json").write_text("{")
    (d / "ds_broken" / "state.json").write_text('{"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}')
    (d / "ds_broken" / "data-00000-of-00001.arrow").write_bytes(b"ARROW1" + bytes(50))
    (d / "bad_annotations.csv").write_text("item,annotator\n1,2\n")


# Bad data every command that reads preference data is given: file name -> what the error must name.
BAD_DATA = [
    "truncated.jsonl.gz", "not_gzip.jsonl.gz", "empty.jsonl", "blank.jsonl", "garbage.jsonl", "latin1.jsonl",
    "utf16.jsonl", "bad_json_all.jsonl", "scalars.jsonl", "list_rows.jsonl", "truncated.json", "wrong_types.jsonl",
    "null_fields.jsonl", "dict_fields.jsonl", "unknown_role.jsonl", "no_schema.jsonl", "hh_no_assistant.jsonl",
    "ranked_bad_pairs.jsonl", "bad_quoting.csv", "unclosed_quote.csv", "missing_column.csv", "header_only.csv",
    "truncated.parquet", "unknown_format.txt", "duplicate_keys.jsonl", "deep_nesting.jsonl", "empty_folder",
    "ds_broken", "missing.jsonl",
]


def write_model(d: Path) -> None:
    """A 2-layer random Llama with the embedded model's tokenizer (its chat template), like tests' tiny_model_dir;
    and the not-a-model folders."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from directalign.models.loading import DEFAULT_MODEL, EMBEDDED_MODELS, _gguf_path

    gguf = _gguf_path(EMBEDDED_MODELS[DEFAULT_MODEL])
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id)
    model_dir = d / "model"
    LlamaForCausalLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    (d / "not_a_model").mkdir(exist_ok=True)
    (d / "not_a_model" / "notes.txt").write_text("nothing here")
    (d / "bad_config_model").mkdir(exist_ok=True)
    (d / "bad_config_model" / "config.json").write_text("{ this is not json")
    (d / "a_file").write_text("a file, not a folder\n")
