"""Rows through the `datasets` library: save_to_disk folders, folders in Hub layout and Hub dataset ids.

A Hub id ("owner/name") goes through `datasets.load_dataset(id, name=config, split=split)`, as TRL's scripts
load theirs; a folder written by `save_to_disk` through `load_from_disk`. A local folder of data files is laid
out as on the Hub (a README's `configs`, or split names in file names), so `datasets` resolves which files make
which split, and directalign.data.readers reads them: each row's place is then its own file and line, and
pyarrow's JSON reader, which crashes the process on some inputs (a JSON-lines file that starts with `null`,
pyarrow 26), never sees a local file. A DatasetDict or a folder gives the split asked for, else "train", else
an error listing its splits.

Offline, `datasets` serves a Hub id from its cache or fails; with no network and offline mode unset it would
retry for about 25 s first. So the Hub's endpoint is probed once with a short TCP connect before loading, and
an unreachable Hub is one DataError naming the id and the ways to a local copy.
"""

from __future__ import annotations

import re
import socket
import threading
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from directalign.data.readers import DATA_SUFFIXES, read_file_rows
from directalign.errors import DataError

Part = tuple[list[tuple[int, Any]], str]  # numbered rows, and the source name their places start with

CONNECT_TIMEOUT_S = 3.0
DEFAULT_SPLIT = "train"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_SAVED_MARKERS = ("state.json", "dataset_dict.json")  # what save_to_disk writes for a Dataset / DatasetDict
_LOCAL_COPY = (
    "pass a local copy instead: a folder written by datasets' save_to_disk, or data files (.jsonl, .json, "
    ".csv, .parquet)"
)


def looks_like_hub_id(text: str) -> bool:
    """Whether text reads as a Hub dataset id "owner/name" rather than a relative path to a data file."""
    name = text.lower().removesuffix(".gz")
    return _HUB_ID.fullmatch(text) is not None and ".." not in text and not name.endswith(DATA_SUFFIXES)


def read_folder(path: Path, split: str | None, config: str | None) -> list[Part]:
    """The rows of a save_to_disk folder, or of each data file of the split of a folder in Hub layout."""
    if any((path / marker).is_file() for marker in _SAVED_MARKERS):
        return [_numbered(_load_from_disk(path), split, str(path))]
    if not any(p.is_file() for p in path.rglob("*")):
        raise DataError(f"{path}: an empty folder; expected data files or a folder written by save_to_disk")
    return [(read_file_rows(Path(file)), str(file)) for file in _split_files(path, split, config)]


def _split_files(path: Path, split: str | None, config: str | None) -> list[str]:
    import datasets

    try:
        data_files = datasets.load_dataset_builder(str(path), name=config).config.data_files or {}
    except Exception as err:  # see _load_from_disk
        raise DataError(f"{path}: datasets cannot tell which files are its data ({_describe(err)})") from err
    splits = {str(name): list(files) for name, files in data_files.items()}
    return splits[_pick(list(splits), split, str(path))]


def read_hub(name: str, split: str | None, config: str | None) -> Part:
    """Numbered rows and their source name of a Hub dataset; a DataError when the Hub cannot serve it."""
    import datasets

    if not datasets.config.HF_HUB_OFFLINE and (reason := _hub_unreachable()):
        raise DataError(
            f"{name}: not a local file or folder, and the Hub cannot be reached ({reason}); set "
            f"HF_HUB_OFFLINE=1 to use a copy in the datasets cache, or {_LOCAL_COPY}"
        )
    return _numbered(_load_dataset(name, split, config, name), split, _named(name, split))


def _load_from_disk(path: Path) -> Any:
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    # datasets reads these user files with no error contract of its own: whatever it raises is the folder's fault.
    except Exception as err:
        raise DataError(f"{path}: not a readable save_to_disk folder ({_describe(err)})") from err


def _load_dataset(name: str, split: str | None, config: str | None, source: str) -> Any:
    import datasets

    try:
        return datasets.load_dataset(name, name=config, split=split)
    except ConnectionError as err:  # offline with no cached copy, or the network failed after the probe
        if datasets.config.HF_HUB_OFFLINE:
            raise DataError(
                f"{source}: not a local file or folder, and the Hub is offline (HF_HUB_OFFLINE) with no cached "
                f"copy of it; {_LOCAL_COPY}"
            ) from err
        raise DataError(
            f"{source}: the Hub did not answer ({_describe(err)}); set HF_HUB_OFFLINE=1 to use a copy in the "
            f"datasets cache, or {_LOCAL_COPY}"
        ) from err
    except FileNotFoundError as err:  # datasets' DatasetNotFoundError among them
        raise DataError(f"{source}: no such file or folder, nor a dataset on the Hub ({_describe(err)})") from err
    except ValueError as err:
        if split and "Unknown split" in str(err):
            raise DataError(f"{source}: no split {split!r} ({_describe(err)}); {_CHOOSE}") from err
        raise DataError(f"{source}: datasets.load_dataset cannot read it ({_describe(err)})") from err
    except Exception as err:  # see _load_from_disk
        raise DataError(f"{source}: datasets.load_dataset cannot read it ({_describe(err)})") from err


_CHOOSE = "choose one with --data-split (--eval-data-split for eval_data; data inspect: --split)"


def _pick(splits: list[str], split: str | None, source: str) -> str:
    """The split asked for, else "train"; a DataError listing the splits when that one is not there."""
    name = split or DEFAULT_SPLIT
    if name not in splits:
        hint = _CHOOSE if split else f"there is no {DEFAULT_SPLIT!r} split; {_CHOOSE}"
        raise DataError(f"{source}: no split {name!r}; it has {', '.join(splits) or 'none'} ({hint})")
    return name


def _numbered(dataset: Any, split: str | None, source: str) -> Part:
    """Rows of a Dataset, or of the split of a DatasetDict that split (default "train") names."""
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        name = _pick(list(dataset), split, source)
        dataset, source = dataset[name], _named(source, name)
    try:
        rows = dataset.to_list()
    except Exception as err:  # see _load_from_disk
        raise DataError(f"{source}: cannot read its rows ({_describe(err)})") from err
    return list(enumerate(rows, start=1)), source


def _named(source: str, split: str | None) -> str:
    """The source name of one split: "owner/name[train]"; rows are then "owner/name[train]:N"."""
    return f"{source}[{split}]" if split else source


def _hub_unreachable() -> str | None:
    """Why the Hub's endpoint (HF_ENDPOINT) takes no TCP connection within CONNECT_TIMEOUT_S, or None.

    Behind a proxy a direct connect proves nothing, so then datasets is left to find out itself.
    """
    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    if not url.hostname or urllib.request.getproxies():
        return None
    port = url.port or (443 if url.scheme == "https" else 80)
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((url.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(f"{url.hostname}:{port}: {err.strerror or err}")

    # A thread bounds the name lookup too, which create_connection's timeout does not cover.
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(CONNECT_TIMEOUT_S + 1)
    return outcome[0] if outcome else f"{url.hostname}:{port}: no answer within {CONNECT_TIMEOUT_S:.0f} s"


def _describe(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:300]}" if lines else type(err).__name__
