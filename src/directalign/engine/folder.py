"""The output folder of a run: one owner at a time, and what a rerun into it may do.

- One process owns a folder (a lock file with its pid and host). A lock whose process is gone is taken over
  with a message; a live one is an error.
- Staging leftovers of killed writes are removed on opening.
- A finished run (finished.json) is never replaced without overwrite_output_dir.
- An unfinished run resumes only with the same configuration: every key that can change the result (all but
  logging, checkpoint cadence and the like: `key(result=False)`) must match config.json, unless it is listed in
  resume_allow_changes. config.json is written once, when the run starts, and never overwritten.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import time
from pathlib import Path

from directalign.config.keys import default_of
from directalign.engine.files import atomic_write_json, remove_staging, sha256_file
from directalign.errors import ConfigError
from directalign.secrets import redact

LOCK_FILE = ".directalign.lock"
CONFIG_FILE = "config.json"
FINISHED_FILE = "finished.json"
# What a run writes into its folder, and so what overwrite_output_dir may remove (nothing else is touched).
RUN_OUTPUTS = (
    CONFIG_FILE, FINISHED_FILE, "metrics.jsonl", "generations.jsonl", "eval_samples", "adapter", "model", "merged",
    "reward_model", "README.md", "report.html",
)
RUN_OUTPUT_PATTERNS = ("checkpoint-*", "round_*")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def result_changes(cfg, stored: dict, allowed: list[str]) -> list[str]:
    """'key: stored -> new' for every result key whose value differs from the stored config's."""
    changes = []
    for f in dataclasses.fields(cfg):
        if not f.metadata.get("result", True) or f.name in allowed:
            continue
        new = redact(getattr(cfg, f.name))  # compared as stored: credentials masked
        old = stored.get(f.name, default_of(f))  # a key newer than the stored run had its default there
        if json.loads(json.dumps(new)) != old:
            changes.append(f"{f.name}: {old!r} -> {new!r}")
    return changes


class RunFolder:
    """Opened by the main process before anything is written; `state` says what the run does with the folder:
    "fresh" (a new run), "resume" (continue the unfinished run in it)."""

    def __init__(self, path: str | Path, log=print):
        self.path = Path(path)
        self.log = log
        self.state = "fresh"
        self._locked = False

    def open(self, cfg) -> str:
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"output_dir {self.path} is a file, not a folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"output_dir {self.path}: cannot create it ({err.strerror})") from err
        self._lock()
        removed = remove_staging(self.path)
        if removed:
            self.log(f"removed {len(removed)} unfinished write(s) left by an interrupted run: {', '.join(removed)}")
        self.state = self._decide(cfg)
        if self.state == "fresh":
            atomic_write_json(self.path / CONFIG_FILE, redact({"command": cfg.command, **cfg.to_dict()}))
        return self.state

    def _decide(self, cfg) -> str:
        stored_path = self.path / CONFIG_FILE
        outputs = self._outputs()
        if not outputs:
            return "fresh"
        where = f"output_dir {self.path}"
        if cfg.overwrite_output_dir:
            self._remove(outputs)
            self.log(f"{where}: removed the previous run's outputs (overwrite_output_dir)")
            return "fresh"
        if (self.path / FINISHED_FILE).is_file():
            finished = _read_json(self.path / FINISHED_FILE)
            when = f"{finished.get('steps', '?')} steps, {finished.get('finished_at', '')}"
            raise ConfigError(
                f"{where} holds a finished run ({when}); "
                "pass --overwrite-output-dir true to replace it, or choose another --output-dir"
            )
        if not stored_path.is_file():
            raise ConfigError(
                f"{where} holds files of another run ({', '.join(sorted(p.name for p in outputs)[:4])}) but no "
                f"{CONFIG_FILE}; pass --overwrite-output-dir true to replace them, or choose another --output-dir"
            )
        if not self._progress():
            self._remove(outputs)
            self.log(f"{where}: the previous run there stopped before its first checkpoint; starting over")
            return "fresh"
        stored = _read_json(stored_path)
        if stored.get("command", cfg.command) != cfg.command:
            raise ConfigError(
                f"{where} holds an unfinished {stored.get('command')} run, not {cfg.command}; choose another "
                "--output-dir, or pass --overwrite-output-dir true to replace it"
            )
        if not cfg.resume:
            raise ConfigError(
                f"{where} holds an unfinished run; --resume true continues it, --overwrite-output-dir true "
                "replaces it"
            )
        changes = result_changes(cfg, stored, cfg.resume_allow_changes)
        if changes:
            raise ConfigError(
                f"{where} holds an unfinished run with another configuration ({'; '.join(changes)}). Resuming "
                "would mix the two. Rerun with its configuration, list the keys you mean to change in "
                "--resume-allow-changes, or pass --overwrite-output-dir true to start over"
            )
        return "resume"

    def _progress(self) -> bool:
        """Whether the folder holds anything a resume would continue from (a checkpoint, a finished round)."""
        checkpoints = [p for p in self.path.glob("**/checkpoint-*") if (p / "manifest.json").is_file()]
        return bool(checkpoints) or any(self.path.glob("round_*/round.json"))

    def _outputs(self) -> list[Path]:
        found = [self.path / name for name in RUN_OUTPUTS if (self.path / name).exists()]
        for pattern in RUN_OUTPUT_PATTERNS:
            found += sorted(self.path.glob(pattern))
        return found

    def _remove(self, outputs: list[Path]) -> None:
        for entry in outputs:
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def _lock(self) -> None:
        lock = self.path / LOCK_FILE
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _read_json(lock)
                pid, host = owner.get("pid"), owner.get("host")
                if isinstance(pid, int) and host == mine["host"] and pid != mine["pid"] and _pid_alive(pid):
                    raise ConfigError(
                        f"output_dir {self.path} is in use by another run (pid {pid}, started "
                        f"{owner.get('started', '?')}); wait for it to end or choose another --output-dir"
                    ) from None
                if host not in (None, mine["host"]):
                    raise ConfigError(
                        f"output_dir {self.path} is locked by a run on host {host} (pid {pid}); if that run is "
                        f"over, remove {lock}"
                    ) from None
                self.log(f"output_dir {self.path}: taking over the lock of a run that is no longer running (pid {pid})")
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(mine, f)
            self._locked = True
            return
        raise ConfigError(f"output_dir {self.path}: could not take the lock {lock}")

    def release(self) -> None:
        if self._locked:
            with contextlib.suppress(FileNotFoundError):
                (self.path / LOCK_FILE).unlink()
            self._locked = False

    def finish(self, steps: int, outputs: dict[str, str]) -> None:
        """Mark the run finished; `outputs` maps each final output file to its sha256."""
        atomic_write_json(
            self.path / FINISHED_FILE,
            {"steps": steps, "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"), "outputs": outputs},
        )


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def verify_recorded(folder: str | Path) -> None:
    """Before a final output (adapter/, model/, reward_model/, merged/) is loaded: when its run folder's
    finished.json records checksums for it, every recorded file must be there and match, else ConfigError."""
    folder = Path(folder).expanduser()
    finished = folder.parent / FINISHED_FILE
    if not folder.is_dir() or not finished.is_file():
        return
    recorded = _read_json(finished).get("outputs", {})
    prefix = f"{folder.name}/"
    for name, digest in recorded.items() if isinstance(recorded, dict) else ():
        if not name.startswith(prefix):
            continue
        path = folder.parent / name
        if not path.is_file():
            raise ConfigError(f"{path} is missing: {finished} records it as part of this output")
        if sha256_file(path) != digest:
            raise ConfigError(f"{path} does not match the checksum {finished} recorded when the run wrote it: the "
                              "file is damaged (or was changed); rerun the training, or restore the file")
