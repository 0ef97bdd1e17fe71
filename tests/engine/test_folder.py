"""The output folder: one owner, stale locks taken over, finished runs kept, resumes only with the same config,
overwrite touching only what a run writes, staging leftovers removed."""

import json
import os
import subprocess
import sys

import pytest

from directalign.config import load_config
from directalign.engine.folder import LOCK_FILE, RunFolder
from directalign.errors import ConfigError


def _cfg(out, **kw):
    return load_config("train", overrides={"output_dir": str(out), **kw})


def _open(out, **kw) -> tuple[RunFolder, str, list[str]]:
    messages = []
    folder = RunFolder(out, log=messages.append)
    state = folder.open(_cfg(out, **kw))
    return folder, state, messages


def test_a_fresh_folder_writes_its_config_once(tmp_path):
    folder, state, _ = _open(tmp_path / "run", beta=0.2)
    assert state == "fresh" and json.loads((tmp_path / "run" / "config.json").read_text())["beta"] == 0.2
    folder.release()
    (tmp_path / "run" / "checkpoint-2").mkdir()
    (tmp_path / "run" / "checkpoint-2" / "manifest.json").write_text("{}")
    folder, state, _ = _open(tmp_path / "run", beta=0.2, logging_steps=1, save_steps=3)  # cadence may change
    assert state == "resume"
    folder.release()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["logging_steps"] == 5  # never overwritten


def test_a_live_owner_keeps_the_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (out / LOCK_FILE).write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename, "started": "t"}))
        with pytest.raises(ConfigError, match=f"in use by another run .pid {sleeper.pid}"):
            _open(out)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_dead_owner_s_lock_is_taken_over_with_a_message(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK_FILE).write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename}))
    folder, state, messages = _open(out)
    assert state == "fresh" and any("no longer running" in m for m in messages)
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    folder.release()
    assert not (out / LOCK_FILE).exists()


def test_a_finished_run_is_not_replaced_without_overwrite(tmp_path):
    out = tmp_path / "run"
    folder, _, _ = _open(out)
    (out / "adapter").mkdir()
    (out / "adapter" / "weights").write_text("trained")
    (out / "notes.txt").write_text("mine")  # not a run output: overwrite must leave it
    folder.finish(25, {})
    folder.release()
    with pytest.raises(ConfigError, match="holds a finished run .25 steps.*--overwrite-output-dir"):
        _open(out)
    folder, state, messages = _open(out, overwrite_output_dir=True)
    assert state == "fresh" and not (out / "adapter").exists() and (out / "notes.txt").read_text() == "mine"
    assert any("removed the previous run's outputs" in m for m in messages)


def test_a_resume_with_another_result_changing_config_is_refused(tmp_path):
    out = tmp_path / "run"
    _open(out, learning_rate=1e-4)[0].release()
    (out / "checkpoint-2").mkdir()
    (out / "checkpoint-2" / "manifest.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"another configuration \(learning_rate: 0.0001 -> 0.001; loss_type"):
        _open(out, learning_rate=1e-3, loss_type="ipo")
    with pytest.raises(ConfigError, match="holds an unfinished run; --resume true continues it"):
        _open(out, learning_rate=1e-4, resume=False)
    folder, state, _ = _open(out, learning_rate=1e-3, resume_allow_changes="learning_rate")
    assert state == "resume"
    folder.release()


def test_a_run_that_never_checkpointed_is_started_over(tmp_path):
    out = tmp_path / "run"
    _open(out, model="a-typo")[0].release()  # failed at start-up: config.json, no checkpoint
    folder, state, messages = _open(out, learning_rate=1e-3)
    assert state == "fresh" and "stopped before its first checkpoint" in messages[-1]
    assert json.loads((out / "config.json").read_text())["learning_rate"] == 1e-3
    folder.release()


def test_another_command_s_run_is_refused(tmp_path):
    out = tmp_path / "run"
    _open(out)[0].release()
    (out / "checkpoint-1").mkdir()
    (out / "checkpoint-1" / "manifest.json").write_text("{}")
    messages = []
    with pytest.raises(ConfigError, match="holds an unfinished train run, not grpo"):
        RunFolder(out, messages.append).open(load_config("grpo", overrides={"output_dir": str(out)}))


def test_files_of_an_unknown_run_need_overwrite(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match="holds files of another run .metrics.jsonl. but no config.json"):
        _open(out)


def test_staging_leftovers_are_removed_on_open(tmp_path):
    out = tmp_path / "run"
    (out / ".staging-checkpoint-4.abc").mkdir(parents=True)
    (out / ".staging-metrics.jsonl.xyz").write_text("half")
    folder, _, messages = _open(out)
    assert not list(out.glob(".staging-*")) and "removed 2 unfinished write(s)" in messages[0]
    folder.release()


def test_an_output_dir_that_is_a_file_is_one_error(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ConfigError, match="output_dir .*file is a file, not a folder"):
        _open(path)


def test_a_final_output_is_checked_against_the_checksums_its_run_recorded(tmp_path):
    from directalign.engine.files import sha256_file
    from directalign.engine.folder import verify_recorded

    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    weights = run / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(b"weights")
    folder = RunFolder(run)
    folder.finish(3, {"adapter/adapter_model.safetensors": sha256_file(weights)})
    verify_recorded(run / "adapter")  # whole: no error
    weights.write_bytes(b"weightz")
    with pytest.raises(ConfigError, match="adapter_model.safetensors does not match the checksum"):
        verify_recorded(run / "adapter")
    weights.unlink()
    with pytest.raises(ConfigError, match="adapter_model.safetensors is missing"):
        verify_recorded(run / "adapter")
    verify_recorded(tmp_path / "elsewhere")  # a folder no run recorded: nothing to check
