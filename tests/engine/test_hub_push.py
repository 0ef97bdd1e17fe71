"""push_to_hub: the final adapter and merged model uploaded to a local stand-in of the Hub's API."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load

from directalign.config import load_config
from directalign.errors import ConfigError
from directalign.training.dpo import train
from tests.engine.hub_upload_server import HubUploadServer
from tests.local_server import serving

TOKEN = "hf_" + "s3cr3tT0kenValue" * 2


def _cfg(tiny_model_dir, out, **kw):
    return load_config("train", overrides=dict(
        model=str(tiny_model_dir), output_dir=str(out), max_steps=2, builtin_train_pairs=8, builtin_eval_pairs=4,
        per_device_train_batch_size=2, learning_rate=1e-2, kl_prompts=0, push_to_hub=True, **kw))


@pytest.fixture
def hub_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no token saved by `hf auth login`
    return monkeypatch


def test_adapter_and_merged_model_are_pushed_with_their_card(tiny_model_dir, tmp_path, hub_env, capsys):
    with serving(HubUploadServer()) as server:
        hub_env.setenv("HF_ENDPOINT", server.endpoint)
        train(_cfg(tiny_model_dir, tmp_path / "run", merge=True, hub_model_id="tester/tiny-dpo",
                   hub_private_repo=True))
    files = server.repos["tester/tiny-dpo"]
    adapter = tmp_path / "run" / "adapter"
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer.json"):
        assert files[name] == (adapter / name).read_bytes(), name
    assert files["merged/README.md"] == (tmp_path / "run" / "merged" / "README.md").read_bytes()
    merged = load(files["merged/model.safetensors"])
    assert merged.keys() == load((tmp_path / "run" / "merged" / "model.safetensors").read_bytes()).keys()
    assert server.private["tester/tiny-dpo"] == "private"
    assert [summary for _, summary in server.commits] == ["directalign train: adapter/", "directalign train: merged/"]
    assert set(server.authorizations) == {f"Bearer {TOKEN}"}
    printed = capsys.readouterr()
    assert f"pushed {adapter} to {server.endpoint}/tester/tiny-dpo (commit " in printed.err + printed.out
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path  # never written
    assert TOKEN not in printed.err + printed.out


def test_the_repository_defaults_to_the_output_folders_name(tiny_model_dir, tmp_path, hub_env):
    with serving(HubUploadServer()) as server:
        hub_env.setenv("HF_ENDPOINT", server.endpoint)
        train(_cfg(tiny_model_dir, tmp_path / "my-run"))
    assert "adapter_model.safetensors" in server.repos["tester/my-run"]
    assert server.private["tester/my-run"] is None  # the Hub's default visibility


def test_offline_or_without_a_token_the_push_is_refused_before_training(tiny_model_dir, tmp_path, hub_env):
    hub_env.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"^push_to_hub: HF_HUB_OFFLINE is set, so nothing can be uploaded"):
        train(_cfg(tiny_model_dir, tmp_path / "run"))
    hub_env.delenv("HF_HUB_OFFLINE")
    hub_env.delenv("HF_TOKEN")
    with pytest.raises(ConfigError, match=r"^push_to_hub needs a Hub token: set HF_TOKEN"):
        train(_cfg(tiny_model_dir, tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_an_unreachable_hub_keeps_the_run_and_names_the_upload_command(tiny_model_dir, tmp_path, hub_env):
    with serving(HubUploadServer()) as server:
        endpoint = server.endpoint
    hub_env.setenv("HF_ENDPOINT", endpoint)  # nothing listens there any more
    with pytest.raises(ConfigError) as err:
        train(_cfg(tiny_model_dir, tmp_path / "run", hub_model_id="tester/x"))
    message = str(err.value)
    assert message.startswith("push_to_hub tester/x: ") and "\n" not in message
    assert message.endswith(f"the outputs are saved in {tmp_path / 'run'}: upload them later with "
                            f"`hf upload tester/x {tmp_path / 'run' / 'adapter'}`")
    assert json.loads((tmp_path / "run" / "finished.json").read_text())["steps"] == 2
    assert TOKEN not in message
