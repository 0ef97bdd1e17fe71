"""`--adapter` folders: what is not an adapter says what it is; a damaged adapter is refused before loading."""

import pytest

from directalign.errors import ConfigError
from directalign.models.loading import load_adapter
from tests.conftest import tiny_llama


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such folder"),
        (lambda p: p.mkdir(), "a LoRA adapter folder holds adapter_config.json"),
        (lambda p: (p.mkdir(), (p / "config.json").write_text("{}")), "it is a model folder: pass it as --model"),
        (lambda p: ((p / "adapter").mkdir(parents=True), (p / "adapter" / "adapter_config.json").write_text("{}")),
         "it is a run folder; its adapter is"),
        (lambda p: (p.mkdir(), (p / "manifest.json").write_text("{}"), (p / "trainable.safetensors").write_text("")),
         "it is a checkpoint"),
    ],
)
def test_a_folder_that_is_not_an_adapter_says_what_it_is(tmp_path, make, message):
    make(tmp_path / "x")
    with pytest.raises(ConfigError, match=message):
        load_adapter(tiny_llama(), str(tmp_path / "x"))


def test_an_adapter_that_does_not_fit_the_model_is_one_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_config.json").write_text('{"peft_type": "LORA", "target_modules": ["no_such"]}')
    with pytest.raises(ConfigError, match="cannot be loaded onto this model"):
        load_adapter(tiny_llama(), str(tmp_path / "a"))


def test_a_pickled_adapter_is_refused_unread(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (tmp_path / "a" / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ConfigError, match=r"holds its weights as a pickle \(adapter_model.bin\)"):
        load_adapter(tiny_llama(), str(tmp_path / "a"))
