"""The Python API (directalign.api): configs, keys and in-memory data in, a result with metrics and paths out."""

from __future__ import annotations

import json
import subprocess
import sys

import datasets
import pytest

import directalign
from directalign import TrainConfig
from directalign.api import make_config
from directalign.errors import ConfigError, DataError

ROWS = [
    {"prompt": f"What is {a} plus {b}?", "chosen": f"{a + b}.", "rejected": f"It is {a + b + 3}, I think."}
    for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (2, 9), (4, 4), (6, 1), (8, 3), (9, 9), (5, 5)]
]


def _keys(tiny_model_dir, out, **kw):
    return dict(model=str(tiny_model_dir), output_dir=str(out), max_steps=2, logging_steps=1,
                per_device_train_batch_size=2, learning_rate=1e-2, eval_split=0.2, kl_prompts=0, seed=0, **kw)


def test_import_is_fast_and_loads_no_torch():
    code = ("import sys, directalign; from directalign import TrainConfig, train, evaluate; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert set(directalign.__all__) >= {"TrainConfig", "train", "evaluate", "grpo", "online_dpo", "iterative_dpo",
                                        "load_data", "inspect_data", "diagnose_data", "train_reward_model"}


def test_a_list_a_dataset_and_a_dataframe_of_the_same_rows_name_the_same_file(monkeypatch, tmp_path):
    monkeypatch.setenv("DIRECTALIGN_HOME", str(tmp_path / "home"))
    from_list = make_config(TrainConfig, None, {"data": ROWS}).data
    from_dataset = make_config(TrainConfig, TrainConfig(data=datasets.Dataset.from_list(ROWS)), {}).data
    pandas = pytest.importorskip("pandas")
    from_frame = make_config(TrainConfig, {"data": pandas.DataFrame(ROWS)}).data
    assert from_list == from_dataset == from_frame  # content-addressed: a resumed run finds the same data
    assert [json.loads(line) for line in open(from_list)] == ROWS
    other = make_config(TrainConfig, None, {"data": ROWS[:5]}).data
    assert other != from_list


def test_configs_yaml_and_keys_combine_as_on_the_command_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("loss_type: ipo\nbeta: 0.5\n")
    cfg = make_config(TrainConfig, str(path), {"beta": "0.25", "max_steps": 3})
    assert (cfg.loss_type, cfg.beta, cfg.max_steps) == ("ipo", 0.25, 3)
    base = TrainConfig(loss_type="simpo")
    cfg = make_config(TrainConfig, base, {"simpo_gamma": 1.0})
    assert (cfg.loss_type, cfg.simpo_gamma, base.simpo_gamma) == ("simpo", 1.0, 0.5)  # the given config is kept
    with pytest.raises(ConfigError, match="unknown key 'lerning_rate' for train; did you mean 'learning_rate'"):
        make_config(TrainConfig, None, {"lerning_rate": 1e-5})
    with pytest.raises(ConfigError, match="does not read simpo_gamma"):
        make_config(TrainConfig, None, {"simpo_gamma": 1.0})


def test_in_memory_data_errors_name_the_row():
    with pytest.raises(DataError, match="data: row 1 is a str"):
        make_config(TrainConfig, None, {"data": [ROWS[0], "not a row"]})
    splits = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS)})
    with pytest.raises(DataError, match=r"a DatasetDict has several splits \(train, test\); pass one"):
        make_config(TrainConfig, None, {"data": splits})


def test_train_on_a_dataset_returns_metrics_paths_and_a_model_card(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DIRECTALIGN_HOME", str(tmp_path / "home"))
    steps = []
    result = directalign.train(**_keys(tiny_model_dir, tmp_path / "run", data=datasets.Dataset.from_list(ROWS)),
                               on_step=lambda step, metrics: steps.append(step))
    assert steps == [1, 2] and result.steps == 2
    assert result.metrics["n_pairs"] == 2 and 0 <= result.metrics["implicit_accuracy"] <= 1
    assert result.eval_before["implicit_accuracy"] == 0.5  # policy == reference before training
    assert set(result.outputs) == {"adapter"} and result.adapter_dir == tmp_path / "run" / "adapter"
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    card = result.model_card.read_text()
    assert card.startswith("---\nlibrary_name: peft\n")  # a local base model is named in the text only
    assert f"- base model: `{tiny_model_dir}`" in card
    assert "(schema text; 8 train / 2 held-out records)" in card and "| implicit_accuracy | 0.5 |" in card
    assert [e["step"] for e in result.events if e["split"] == "train"] == [1, 2]
    assert result.metrics_file.is_file()

    scores = directalign.evaluate(str(tiny_model_dir), adapter=str(result.adapter_dir), data=ROWS[:4])
    assert scores["n_pairs"] == 4 and 0 <= scores["implicit_accuracy"] <= 1
    assert scores["reference/implicit_accuracy"] == 0.5


def test_data_tools_read_in_memory_rows(tiny_model_dir):
    loaded = directalign.load_data(ROWS)
    assert loaded.num_rows == 10 and len(loaded.records) == 10
    summary = directalign.inspect_data(ROWS, model=str(tiny_model_dir))
    assert (summary["schema"], summary["rows"], summary["records"]) == ("text", 10, 10)
    report = directalign.diagnose_data(ROWS)
    assert report["n_pairs"] == 10
    assert report["length_bias_chars"]["count"] == 0  # every chosen answer is the shorter one


def test_grpo_from_python_with_a_reward_callable(tiny_model_dir, tmp_path):
    def brevity(prompts, completions, **columns):
        return [-float(len(c)) for c in completions]

    prompts = [{"prompt": f"Say a number above {n}."} for n in range(6)]
    result = directalign.grpo(
        model=str(tiny_model_dir), output_dir=str(tmp_path / "grpo"), prompts=prompts, eval_split=0.34,
        max_steps=1, per_device_train_batch_size=2, num_generations=2, max_new_tokens=4, kl_prompts=0,
        eval_max_new_tokens=4, reward_fn=brevity,
    )
    assert result.steps == 1 and result.adapter_dir.is_dir()
    train_events = [e for e in result.events if e["split"] == "train"]
    assert train_events and train_events[0]["reward"] <= 0
