"""The model card written beside every saved adapter or model (README.md in the Hub's format)."""

from __future__ import annotations

import yaml

from directalign import __version__
from directalign.config import load_config
from directalign.engine.model_card import model_card
from directalign.engine.save import base_model_id


def _card(**overrides) -> tuple[dict, str]:
    cfg = load_config("train", overrides={"data": "HuggingFaceH4/ultrafeedback_binarized", "data_split": "train_prefs",
                                          "beta": 0.2, "loss_type": "ipo", **overrides})
    text = model_card(
        cfg, base_model=base_model_id(cfg.model), adapter=True, steps=40,
        data="HuggingFaceH4/ultrafeedback_binarized (schema conversational; 900 train / 100 held-out records)",
        eval_before={"implicit_accuracy": 0.5, "mean_margin": 0.0, "eval_time_s": 3.0},
        eval_after={"implicit_accuracy": 0.81, "mean_margin": 0.734, "eval_time_s": 3.1},
        warnings=["kl grows faster than the reward margin (step 30): lower learning_rate"],
    )
    front = yaml.safe_load(text.split("---\n")[1])
    return front, text


def test_the_embedded_model_is_named_by_its_hub_id_and_the_data_by_its_id():
    front, text = _card()
    assert front == {"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "library_name": "peft",
                     "tags": ["directalign", "train", "ipo", "lora"], "pipeline_tag": "text-generation",
                     "datasets": ["HuggingFaceH4/ultrafeedback_binarized"]}
    assert ("- data: HuggingFaceH4/ultrafeedback_binarized (schema conversational; 900 train / 100 held-out "
            "records), data_split `train_prefs`") in text
    assert f"- directalign {__version__}" in text and "- method: `train` with `ipo`, 40 optimizer steps" in text


def test_metrics_before_and_after_hyperparameters_and_health_warnings():
    _, text = _card()
    assert "| implicit_accuracy | 0.5 | 0.81 |" in text and "| mean_margin | 0 | 0.734 |" in text
    assert "eval_time_s" not in text  # timings are not results
    assert "| beta | 0.2 |" in text and "| loss_type | ipo |" in text and "| output_dir |" not in text
    assert "- kl grows faster than the reward margin (step 30): lower learning_rate" in text
    assert 'AutoPeftModelForCausalLM.from_pretrained("PATH")' in text


def test_a_local_data_file_is_not_a_hub_dataset(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("{}\n")
    front, _ = _card(data=str(data), data_split=None)
    assert "datasets" not in front
