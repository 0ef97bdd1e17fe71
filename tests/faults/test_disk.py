"""A full disk: one clear line, the last good checkpoint still usable, and once there is space again the rerun
resumes to the uninterrupted run's weights.

With root, a real 1 MB tmpfs (checkpoints fit, the final adapter with its tokenizer does not); without it the
tmpfs test is skipped, and ENOSPC is simulated in-process by making the writer raise it (the final save's
tokenizer write, or one JSON file of a checkpoint), which runs everywhere.
"""

from __future__ import annotations

import errno
import subprocess

import pytest
from transformers import PreTrainedTokenizerBase

from directalign.cli.main import main
from directalign.engine import checkpoint as checkpoint_module
from directalign.engine.checkpoint import list_checkpoints, verify
from directalign.engine.files import STAGING_PREFIX
from tests.distributed.conftest import max_difference
from tests.faults.conftest import as_args, run_library, values


@pytest.fixture(scope="module")
def full_run(tiny_model_dir, tmp_path_factory, reward_file):
    out = tmp_path_factory.mktemp("full")
    run_library("dpo", values("dpo", tiny_model_dir, out, reward_file))
    return out


def _train(found: dict) -> int:
    return main(["train", *as_args(found)])


def _no_space_said(err: str, what: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: no space left on the device writing ") and what in lines[-1], lines[-3:]
    assert "Traceback" not in err


def _last_good_checkpoint_usable(run) -> None:
    found = list_checkpoints(run)
    assert found and all(verify(c) is None for c in found)
    assert not list(run.glob(f"{STAGING_PREFIX}*")), "a failed write left its staging behind"


@pytest.fixture
def tmpfs(tmp_path):
    target = tmp_path / "run"
    target.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the simulated ENOSPC tests run instead")
    yield target
    subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_a_real_full_disk(tmpfs, tiny_model_dir, reward_file, full_run, capsys):
    found = values("dpo", tiny_model_dir, tmpfs, reward_file)
    assert _train(found) == 1
    _no_space_said(capsys.readouterr().err, "adapter")
    _last_good_checkpoint_usable(tmpfs)
    subprocess.run(["mount", "-o", "remount,size=64m", str(tmpfs)], check=True)
    assert _train(found) == 0
    assert "resuming from" in capsys.readouterr().out
    assert max_difference(full_run, tmpfs) == 0.0


def test_no_space_for_the_final_save(tiny_model_dir, tmp_path, reward_file, full_run, capsys, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    found = values("dpo", tiny_model_dir, tmp_path / "run", reward_file)
    with monkeypatch.context() as patch:
        patch.setattr(PreTrainedTokenizerBase, "save_pretrained", full)
        assert _train(found) == 1
    _no_space_said(capsys.readouterr().err, "adapter")
    _last_good_checkpoint_usable(tmp_path / "run")
    assert not (tmp_path / "run" / "adapter").exists()
    assert _train(found) == 0
    assert max_difference(full_run, tmp_path / "run") == 0.0


def test_no_space_inside_a_checkpoint_write(tiny_model_dir, tmp_path, reward_file, full_run, capsys, monkeypatch):
    real, calls = checkpoint_module._write_json, {"n": 0}

    def fills_up(path, value):
        calls["n"] += 1
        if calls["n"] == 8:  # the second checkpoint's third JSON file
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, value)

    found = values("dpo", tiny_model_dir, tmp_path / "run", reward_file)
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_module, "_write_json", fills_up)
        assert _train(found) == 1
    _no_space_said(capsys.readouterr().err, "checkpoint-2")
    _last_good_checkpoint_usable(tmp_path / "run")
    assert [c.name for c in list_checkpoints(tmp_path / "run")] == ["checkpoint-1"]
    assert _train(found) == 0
    assert max_difference(full_run, tmp_path / "run") == 0.0
