"""Data given in memory (a `datasets.Dataset`, a list of dicts, a pandas DataFrame) as a file the trainers read.

A config names its data by a string (a file, a folder, a Hub id), which config.json records and a resumed run
compares. Rows given in memory are written once as JSON lines under the cache folder, named by the sha256 of
their content: the same rows give the same file (so a resumed run matches), and the run's data is on disk for
`report` and the model card like any other.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from directalign.errors import DataError

INPUTS_FOLDER = "inputs"


def _rows(data: Any, what: str) -> list[dict] | None:
    """The rows of in-memory data, or None when `data` names data (a path or an id)."""
    if data is None or isinstance(data, str | os.PathLike):
        return None
    if type(data).__name__ == "DatasetDict" or (isinstance(data, dict) and data and all(
            type(v).__name__ == "Dataset" for v in data.values())):
        raise DataError(f"{what}: a DatasetDict has several splits ({', '.join(map(str, data))}); pass one, "
                        f"e.g. {what}=dataset['train']")
    if hasattr(data, "to_list") and hasattr(data, "column_names"):  # datasets.Dataset
        return data.to_list()
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # pandas.DataFrame
        return data.to_dict(orient="records")
    if isinstance(data, list | tuple):
        bad = next((i for i, row in enumerate(data) if not isinstance(row, dict)), None)
        if bad is not None:
            raise DataError(f"{what}: row {bad} is a {type(data[bad]).__name__}; each row is a dict such as "
                            '{"prompt": ..., "chosen": ..., "rejected": ...}')
        return list(data)
    raise DataError(f"{what}: cannot read a {type(data).__name__}; give a path, a Hub id, a datasets.Dataset, "
                    "a pandas DataFrame or a list of dicts")


def as_data_name(data: Any, what: str = "data") -> str | None:
    """`data` as the string a config holds: a path or id as it is, in-memory rows as the path of their file."""
    rows = _rows(data, what)
    if rows is None:
        return None if data is None else os.fspath(data)
    if not rows:
        raise DataError(f"{what}: no rows")
    lines = []
    for i, row in enumerate(rows):
        try:
            lines.append(json.dumps(row, ensure_ascii=False, sort_keys=True))
        except (TypeError, ValueError) as err:
            raise DataError(f"{what}: row {i} cannot be written as JSON: {err}") from err
    text = "\n".join(lines) + "\n"
    from directalign.models.loading import directalign_home

    folder = directalign_home() / INPUTS_FOLDER
    path = folder / f"{hashlib.sha256(text.encode()).hexdigest()[:20]}.jsonl"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return str(path)


DATA_KEYS = ("data", "eval_data", "prompts", "eval_prompts")


def materialise(values: dict) -> dict:
    """Config values with in-memory data (DATA_KEYS) replaced by the paths of their files."""
    return {k: (as_data_name(v, k) if k in DATA_KEYS else v) for k, v in values.items()}

