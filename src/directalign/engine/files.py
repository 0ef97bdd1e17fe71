"""Writing outputs so that nothing is ever half there: every file and folder is built under a `.staging-*` name
beside its target and renamed into place, so a run killed at any moment leaves either the whole new output or
the old one. Leftover staging entries (from a kill) are removed when the next run opens the folder.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from safetensors.torch import save_file

from directalign.errors import TrainingError

STAGING_PREFIX = ".staging-"
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def os_error_of(err: BaseException) -> OSError | None:
    """The OSError a failed write is: itself, or the one the Rust writers (safetensors, tokenizers) report only
    in their message ("... No space left on device (os error 28)"); None for any other error."""
    if isinstance(err, OSError):
        return err
    found = _RUST_OS_ERROR.search(str(err))
    return OSError(int(found[1]), os.strerror(int(found[1]))) if found else None


def write_error(err: OSError, what: Path) -> TrainingError:
    """A one-line error for a failed write; a full disk says so."""
    if err.errno == errno.ENOSPC:
        return TrainingError(f"no space left on the device writing {what}; free space and rerun to resume")
    return TrainingError(f"cannot write {what}: {err.strerror or err}")


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f"{STAGING_PREFIX}{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(staging, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise write_error(err, path) from err
    _fsync_dir(path.parent)


def atomic_save_tensors(path: Path, tensors: dict) -> None:
    """A safetensors file written under a staging name and renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f"{STAGING_PREFIX}{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, staging)
        os.replace(staging, path)
    except Exception as err:
        with contextlib.suppress(OSError):
            os.unlink(staging)
        if (os_error := os_error_of(err)) is None:
            raise
        raise write_error(os_error, path) from err


def atomic_write_json(path: Path, value: object) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces `target` (an old target is moved aside first, since
    a folder cannot be renamed over another), on any error it is removed and `target` is untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{target.name}.", dir=target.parent))
    try:
        yield staging
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}old-{target.name}.", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
        _fsync_dir(target.parent)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if (os_error := os_error_of(err)) is None:
            raise
        raise write_error(os_error, target) from err


def remove_staging(folder: Path) -> list[str]:
    """Remove staging leftovers of killed writes in folder (and its round_* subfolders); return their names."""
    removed = []
    for parent in [Path(folder), *Path(folder).glob("round_*")]:
        for entry in parent.glob(f"{STAGING_PREFIX}*"):
            removed.append(str(entry.relative_to(folder)))
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
    return removed
