"""Read preference data files, detect their schema and parse each row into a PreferenceRecord.

Schemas, by the name `load_records` reports:
- conversational: TRL's conversational preference form, `{prompt, chosen, rejected}` message lists, or its
  implicit-prompt form `{chosen, rejected}` whose message lists share every turn but the last assistant turn
  (UltraFeedback-binarized); the shared turns become the prompt.
- text: TRL's standard form, `{prompt, chosen, rejected}` strings; the prompt becomes one user message.
- hh-rlhf: Anthropic's `{chosen, rejected}` transcripts "\\n\\nHuman: ...\\n\\nAssistant: ..." that share
  every turn but the last; the shared turns become the prompt.
- sharegpt: LLaMA-Factory's ranking form `{conversations: [{from, value}], chosen: {from, value}, rejected}`.
- unpaired: KTO data, one completion with a thumbs-up/down `label` (see directalign.data.unpaired for the
  spellings): TRL's `{prompt, completion, label}` (strings or message lists) or LLaMA-Factory's
  `{messages, label}`, whose last assistant turn is the completion. Records have one response, no pairs and
  `labels=[bool]`; unrated rows are skipped and counted.

Files: .jsonl, .json (a list of rows, or {"train" | "data": [...]}), .csv, .parquet, the text formats also
gzip-compressed (.jsonl.gz, .json.gz, .csv.gz), and folders written by `datasets`' save_to_disk. A row that
cannot be used is skipped and counted by reason; its place is "file:N", N the 1-based line for .jsonl and .csv
files and the 1-based row elsewhere.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from directalign.data.types import Message, PreferenceRecord
from directalign.data.unpaired import UnratedLabel, parse_label
from directalign.errors import DataError

CONVERSATIONAL = "conversational"
TEXT = "text"
HH_RLHF = "hh-rlhf"
SHAREGPT = "sharegpt"
UNPAIRED = "unpaired"
RANKED = "ranked"

SCHEMAS = {
    CONVERSATIONAL: "prompt/chosen/rejected message lists, or chosen/rejected message lists sharing a prefix",
    TEXT: "prompt/chosen/rejected strings",
    HH_RLHF: "chosen/rejected '\\n\\nHuman: ... \\n\\nAssistant: ...' transcripts",
    SHAREGPT: "conversations [{from, value}] with chosen/rejected {from, value}",
    UNPAIRED: "prompt/completion/label or messages/label (KTO thumbs up/down)",
    RANKED: "prompt + k responses with scores (higher is better), ranks (0 = best) or pairs [[better, worse], ...]",
}

MAX_SKIPPED_EXAMPLES = 5

_HH_TURN = re.compile(r"(?:\A\s*|\n\n)(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}
_SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
}


@dataclass
class LoadResult:
    """The records parsed from one file, its detected schema and what was skipped and why."""

    records: list[PreferenceRecord]
    schema: str
    path: str
    num_rows: int
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_examples: list[str] = field(default_factory=list)


class _SkipRow(Exception):
    def __init__(self, reason: str, field_name: str):
        super().__init__(reason)
        self.reason = reason
        self.field_name = field_name


def load_records(path: str | Path, *, split: str | None = None) -> LoadResult:
    """Read a preference data file (or a save_to_disk folder), detect its schema and parse every row.

    split picks the split of a DatasetDict folder or the key of a JSON object (default "train", then "data").
    Raises DataError for a missing or unreadable file, a malformed JSON line, or a file where no row parses.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    return _parse_rows(read_rows(path, split), str(path))


def records_from_rows(rows: Iterable[Any], source_name: str) -> LoadResult:
    """Parse in-memory rows (dicts in any supported schema); places are "source_name:N", N the 1-based row."""
    return _parse_rows(list(enumerate(rows, start=1)), source_name)


def detect_schema(row: Any) -> str | None:
    """The schema a row looks like from its field names and types, or None; it may still fail to parse."""
    if not isinstance(row, Mapping):
        return None
    if "label" in row and ("completion" in row or "messages" in row) and "chosen" not in row:
        return UNPAIRED
    if isinstance(row.get("responses"), list) and any(k in row for k in ("scores", "ranks", "pairs")):
        return RANKED
    if row.get("chosen") is None or row.get("rejected") is None:
        return None
    chosen, prompt = row["chosen"], row.get("prompt")
    if isinstance(row.get("conversations"), list):
        return SHAREGPT
    if isinstance(prompt, list) or (prompt is None and isinstance(chosen, list)):
        return CONVERSATIONAL
    if isinstance(prompt, str):
        return TEXT
    if isinstance(chosen, str) and _HH_TURN.search(chosen):
        return HH_RLHF
    return None


# Rows to records.


def _parse_rows(numbered_rows: list[tuple[int, Any]], source: str) -> LoadResult:
    if not numbered_rows:
        raise DataError(f"{source}: no rows")
    schema = next((s for _, row in numbered_rows if (s := detect_schema(row))), None)
    if schema is None:
        raise DataError(_no_schema_message(source, *numbered_rows[0]))
    parse = _PARSERS[schema]
    records, skipped, examples = [], Counter(), []
    for number, row in numbered_rows:
        place = f"{source}:{number}"
        try:
            if not isinstance(row, Mapping):
                raise _SkipRow("row is not an object", "row")
            prompt, responses = parse(row)
            if schema == UNPAIRED:
                labels, pairs = [_label(row)], []
                _check_responses(prompt, responses, ["completion"])
            elif schema == RANKED:
                labels, pairs = None, _ranked_pairs(row, len(responses))
                _check_responses(prompt, responses, [f"responses[{i}]" for i in range(len(responses))])
            else:
                labels, pairs = None, [(0, 1)]
                _check_pair(prompt, responses)
        except _SkipRow as skip:
            skipped[skip.reason] += 1
            if len(examples) < MAX_SKIPPED_EXAMPLES:
                examples.append(f"{place}: {skip.reason} ({skip.field_name})")
            continue
        records.append(PreferenceRecord(prompt, responses, pairs=pairs, source=place, labels=labels))
    if not records:
        reasons = ", ".join(f"{reason} {count}" for reason, count in skipped.most_common())
        raise DataError(
            f"{source}: none of {len(numbered_rows)} rows is usable as {schema} ({reasons}); "
            f"first: {examples[0]}"
        )
    return LoadResult(records, schema, source, len(numbered_rows), dict(skipped.most_common()), examples)


def _no_schema_message(source: str, number: int, row: Any) -> str:
    if isinstance(row, Mapping):
        found = ", ".join(f"{key} ({type(value).__name__})" for key, value in row.items()) or "none"
    else:
        found = f"none, it is a {type(row).__name__}"
    expected = "; ".join(f"{name}: {description}" for name, description in SCHEMAS.items())
    return f"{source}: no row matches a preference schema ({expected}); fields of row {number}: {found}"


def _check_responses(prompt: list[Message], responses: list[list[Message]], names: list[str]) -> None:
    if not prompt:
        raise _SkipRow("empty prompt", "prompt")
    for response, name in zip(responses, names, strict=True):
        if not any(message["content"].strip() for message in response):
            raise _SkipRow("empty response", name)


def _check_pair(prompt: list[Message], responses: list[list[Message]]) -> None:
    _check_responses(prompt, responses, ["chosen", "rejected"])
    if responses[0] == responses[1]:
        raise _SkipRow("chosen == rejected", "rejected")


def _required(row: Mapping, name: str) -> Any:
    value = row.get(name)
    if value is None:
        raise _SkipRow("missing field", name)
    return value


def _string(row: Mapping, name: str) -> str:
    value = _required(row, name)
    if not isinstance(value, str):
        raise _SkipRow("not a string", name)
    return value


def _messages(row: Mapping, name: str) -> list[Message]:
    return _message_list(_required(row, name), name)


def _message_list(value: Any, name: str) -> list[Message]:
    if not isinstance(value, list) or not all(
        isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in value
    ):
        raise _SkipRow("not a list of {role, content} messages", name)
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _split_shared_prefix(
    chosen: list[Message], rejected: list[Message]
) -> tuple[list[Message], list[list[Message]]]:
    """Shared leading turns -> prompt; each side must then end in exactly one assistant turn."""
    if chosen == rejected:
        raise _SkipRow("chosen == rejected", "rejected")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    responses = [chosen[shared:], rejected[shared:]]
    for response, name in zip(responses, ("chosen", "rejected"), strict=True):
        if not response:
            raise _SkipRow("empty response", name)
        if len(response) > 1 or response[0]["role"] != "assistant":
            raise _SkipRow("chosen and rejected differ before the last assistant turn", name)
    return chosen[:shared], responses


def _parse_conversational(row: Mapping) -> tuple[list[Message], list[list[Message]]]:
    chosen, rejected = _messages(row, "chosen"), _messages(row, "rejected")
    if row.get("prompt") is None:
        return _split_shared_prefix(chosen, rejected)
    return _messages(row, "prompt"), [chosen, rejected]


def _parse_text(row: Mapping) -> tuple[list[Message], list[list[Message]]]:
    prompt = [{"role": "user", "content": _string(row, "prompt")}]
    return prompt, [[{"role": "assistant", "content": _string(row, name)}] for name in ("chosen", "rejected")]


def _parse_transcript(text: str, name: str) -> list[Message]:
    parts = _HH_TURN.split(text)
    if parts[0] or len(parts) < 3:
        raise _SkipRow("not a Human/Assistant transcript", name)
    # parts = ["", role, content, role, content, ...]; "Assistant: text" puts one space before the text.
    return [
        {"role": _HH_ROLES[role], "content": content.removeprefix(" ")}
        for role, content in zip(parts[1::2], parts[2::2], strict=True)
    ]


def _parse_hh_rlhf(row: Mapping) -> tuple[list[Message], list[list[Message]]]:
    chosen, rejected = (_parse_transcript(_string(row, name), name) for name in ("chosen", "rejected"))
    return _split_shared_prefix(chosen, rejected)


def _sharegpt_message(value: Any, name: str) -> Message:
    if not (isinstance(value, Mapping) and isinstance(value.get("value"), str)):
        raise _SkipRow("not a {from, value} message", name)
    role = _SHAREGPT_ROLES.get(value.get("from"))
    if role is None:
        raise _SkipRow("unknown role", name)
    return {"role": role, "content": value["value"]}


def _parse_sharegpt(row: Mapping) -> tuple[list[Message], list[list[Message]]]:
    conversation = _required(row, "conversations")
    if not isinstance(conversation, list):
        raise _SkipRow("not a list of {from, value} messages", "conversations")
    prompt = [_sharegpt_message(message, "conversations") for message in conversation]
    responses = []
    for name in ("chosen", "rejected"):
        value = _required(row, name)
        # A response is the assistant's whatever its "from" says; some exports give it as a bare string.
        content = value if isinstance(value, str) else _sharegpt_message(value, name)["content"]
        responses.append([{"role": "assistant", "content": content}])
    return prompt, responses


def _label(row: Mapping) -> bool:
    try:
        return parse_label(row.get("label"))
    except UnratedLabel as unrated:
        raise _SkipRow("unrated", "label") from unrated
    except ValueError as unknown:
        raise _SkipRow("unrecognised label", "label") from unknown


def _parse_unpaired(row: Mapping) -> tuple[list[Message], list[list[Message]]]:
    if row.get("messages") is not None and row.get("completion") is None:
        messages = _messages(row, "messages")
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise _SkipRow("messages do not end with an assistant turn after a prompt", "messages")
        return messages[:-1], [messages[-1:]]
    prompt, completion = _required(row, "prompt"), _required(row, "completion")
    if isinstance(prompt, str) and isinstance(completion, str):
        return [{"role": "user", "content": prompt}], [[{"role": "assistant", "content": completion}]]
    return _messages(row, "prompt"), [_messages(row, "completion")]


def _parse_ranked(row: Mapping) -> tuple[list[Message], list[list[Message]]]:
    if isinstance(row.get("prompt"), list):
        prompt = _messages(row, "prompt")
    else:
        prompt = [{"role": "user", "content": _string(row, "prompt")}]
    raw = row["responses"]
    if len(raw) < 2:
        raise _SkipRow("fewer than 2 responses", "responses")
    responses = [
        [{"role": "assistant", "content": r}] if isinstance(r, str) else _message_list(r, f"responses[{i}]")
        for i, r in enumerate(raw)
    ]
    return prompt, responses


def _ranked_pairs(row: Mapping, k: int) -> list[tuple[int, int]]:
    """(better, worse) index pairs: the row's own `pairs`, or every pair that its scores or ranks order
    (equal scores give no pair; a null score or rank leaves that response out of every pair)."""
    if row.get("pairs") is not None:
        pairs = row["pairs"]
        valid = isinstance(pairs, list) and all(
            isinstance(p, list | tuple) and len(p) == 2 and all(isinstance(i, int) and 0 <= i < k for i in p)
            and p[0] != p[1]
            for p in pairs
        )
        if not valid or not pairs:
            raise _SkipRow(f"not a list of [better, worse] indices below {k}", "pairs")
        return [(p[0], p[1]) for p in pairs]
    name = "scores" if "scores" in row else "ranks"
    values = row[name]
    if not isinstance(values, list) or len(values) != k or not all(
        v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values
    ):
        raise _SkipRow(f"not a list of {k} numbers (one per response; null for unrated)", name)
    scores = {i: (v if name == "scores" else -v) for i, v in enumerate(values) if v is not None}
    pairs = [(i, j) for i in scores for j in scores if scores[i] > scores[j]]
    if not pairs:
        raise _SkipRow("no two responses are ordered", name)
    return sorted(pairs, key=lambda p: (-scores[p[0]], scores[p[1]]))


_PARSERS = {
    CONVERSATIONAL: _parse_conversational,
    TEXT: _parse_text,
    HH_RLHF: _parse_hh_rlhf,
    SHAREGPT: _parse_sharegpt,
    UNPAIRED: _parse_unpaired,
    RANKED: _parse_ranked,
}


# Files to rows.


def read_rows(path: Path, split: str | None) -> list[tuple[int, Any]]:
    """Raw rows of a file or saved dataset with their 1-based line (JSONL, CSV) or row number."""
    if path.is_dir():
        return _read_saved_dataset(path, split)
    name = path.name.lower()
    compressed = name.endswith(".gz")
    suffix = Path(name.removesuffix(".gz")).suffix
    readers = {".jsonl": _read_jsonl, ".ndjson": _read_jsonl, ".json": _read_json, ".csv": _read_csv}
    if suffix in readers:
        try:
            with _open_text(path, compressed) as f:
                return readers[suffix](f, path, split)
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{path}: cannot read the file ({err})") from err
    if suffix == ".parquet" and not compressed:
        return _read_parquet(path)
    raise DataError(
        f"{path}: unsupported file type; expected .jsonl, .json, .csv (each optionally .gz), .parquet "
        "or a folder written by datasets' save_to_disk"
    )


def _open_text(path: Path, compressed: bool) -> TextIO:
    if compressed:
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _read_jsonl(lines: Iterable[str], path: Path, split: str | None = None) -> list[tuple[int, Any]]:
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not valid JSON ({err.msg}, column {err.colno})") from err
    return rows


def _read_json(f: TextIO, path: Path, split: str | None) -> list[tuple[int, Any]]:
    text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # JSON lines under a .json name, as datasets' to_json writes them
            return _read_jsonl(text.splitlines(keepends=True), path)
        raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno})") from err
    if isinstance(data, dict):
        keys = [split] if split else ["train", "data"]
        key = next((k for k in keys if isinstance(data.get(k), list)), None)
        if key is None:
            raise DataError(
                f"{path}: expected a list of rows or an object with a list under "
                f"{' or '.join(map(repr, keys))}; found keys: {', '.join(data) or 'none'}"
            )
        data = data[key]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of rows, found a {type(data).__name__}")
    return list(enumerate(data, start=1))


def _read_csv(f: TextIO, path: Path, split: str | None = None) -> list[tuple[int, Any]]:
    csv.field_size_limit(2**31 - 1)  # the default, 128 KiB a cell, is shorter than some long responses
    reader = csv.DictReader(f)
    rows, line = [], 1
    try:
        for row in reader:
            rows.append((line + 1, {key: _csv_cell(value) for key, value in row.items() if key is not None}))
            line = reader.line_num
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({err})") from err
    return rows


def _csv_cell(value: str | None) -> Any:
    """CSV has only strings: a cell holding a JSON list or object (message lists) is decoded."""
    if value and value.lstrip()[:1] in ("[", "{"):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return value
        if isinstance(decoded, list | dict):
            return decoded
    return value


def _read_parquet(path: Path) -> list[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"{path}: cannot read the Parquet file ({err})") from err
    return list(enumerate(table.to_pylist(), start=1))


def _read_saved_dataset(path: Path, split: str | None) -> list[tuple[int, Any]]:
    import datasets

    try:
        dataset = datasets.load_from_disk(str(path))
    except FileNotFoundError as err:
        raise DataError(f"{path}: a folder, but not one written by datasets' save_to_disk ({err})") from err
    if isinstance(dataset, datasets.DatasetDict):
        name = split or "train"
        if name not in dataset:
            raise DataError(f"{path}: no split {name!r}; it has {', '.join(dataset)} (choose one with split)")
        dataset = dataset[name]
    return list(enumerate(dataset.to_list(), start=1))
