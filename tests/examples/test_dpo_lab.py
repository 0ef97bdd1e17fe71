"""examples/dpo_lab.py: the loss part as a unit test, the whole lab on the embedded model as an integration test."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[2] / "examples" / "dpo_lab.py"


def _lab():
    spec = importlib.util.spec_from_file_location("dpo_lab", LAB)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_hand_written_loss_is_directaligns(capsys):
    lab = _lab()
    lab.part_1_the_loss()  # asserts value and gradient to 1e-12 itself
    printed = capsys.readouterr().out
    assert "h = 2, beta*h = 0.2: my loss 0.5981388694, directalign's 0.5981388694" in printed
    assert lab.my_dpo_loss(0.0, 0.0, 0.0, 0.0, 0.1) == pytest.approx(0.6931471805599453)  # log 2 at a tie


@pytest.mark.integration
def test_the_lab_runs_on_the_embedded_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _lab().part_2_and_3_train_and_evaluate()  # asserts train's and evaluate's held-out accuracy agree
    printed = capsys.readouterr().out
    assert "held-out implicit accuracy on 20 pairs: 0.500 before" in printed
    config = json.loads((tmp_path / "runs" / "dpo-lab" / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
