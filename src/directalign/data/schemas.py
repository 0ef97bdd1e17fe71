"""Preference data schemas: detect the one a row is in and parse the row into a prompt and responses.

Schemas, by the name `load_records` reports:
- conversational: TRL's conversational preference form, `{prompt, chosen, rejected}` message lists, or its
  implicit-prompt form `{chosen, rejected}` whose message lists share every turn but the last assistant turn;
  the shared turns become the prompt. A string `prompt` beside message lists that repeat it
  (HuggingFaceH4/ultrafeedback_binarized) is read as TRL's `maybe_extract_prompt` reads it: the prompt is
  taken from the shared turns; message lists that do not repeat it get it as one user turn.
- text: TRL's standard form, `{prompt, chosen, rejected}` strings; the prompt becomes one user message.
- hh-rlhf: Anthropic's `{chosen, rejected}` transcripts "\\n\\nHuman: ...\\n\\nAssistant: ..." that share
  every turn but the last; the shared turns become the prompt.
- sharegpt: LLaMA-Factory's ranking form `{conversations: [{from, value}], chosen: {from, value}, rejected}`.
- unpaired: KTO data, one completion with a thumbs-up/down `label` (see directalign.data.unpaired for the
  spellings): TRL's `{prompt, completion, label}` (strings or message lists) or LLaMA-Factory's
  `{messages, label}`, whose last assistant turn is the completion. Records have one response, no pairs and
  `labels=[bool]`; unrated rows are skipped and counted.
- ranked: a prompt with k responses and `scores` (higher is better, finite), `ranks` (whole numbers, 0 = best)
  or `pairs` ([better, worse] indices).

Message roles are system, user and assistant, and a response is assistant turns only: any other role makes a
skipped row (`SkipRow`, counted by reason and named by field), never something to train on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from directalign.data.readers import BadRow
from directalign.data.types import Message
from directalign.data.unpaired import UnratedLabel, parse_label

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

ROLES = ("system", "user", "assistant")

_HH_TURN = re.compile(r"(?:\A\s*|\n\n)(Human|Assistant):")
# The same turns for splitting, with leading whitespace stripped and "\n\n" put first instead of the \A\s*
# alternative: a pattern that starts with a literal lets re skip ahead, 4x faster on hh-rlhf.
_HH_SPLIT = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}
_SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
}


class SkipRow(Exception):
    """A row that cannot be used: counted under `reason`, shown as "place: reason (field: detail)"."""

    def __init__(self, reason: str, field_name: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.field_name = field_name
        self.detail = detail

    def describe(self, place: str) -> str:
        where = f"{self.field_name}: {self.detail}" if self.detail else self.field_name
        return f"{place}: {self.reason} ({where})"


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
    if isinstance(prompt, list) or (isinstance(chosen, list) and (prompt is None or isinstance(prompt, str))):
        return CONVERSATIONAL
    if isinstance(prompt, str):
        return TEXT
    if isinstance(chosen, str) and _HH_TURN.search(chosen):
        return HH_RLHF
    return None


def parse_row(
    schema: str, row: Any
) -> tuple[list[Message], list[list[Message]], list[tuple[int, int]], list[bool] | None]:
    """(prompt, responses, pairs, labels) of a row in schema; raises SkipRow naming why and which field."""
    if isinstance(row, BadRow):
        raise SkipRow(row.reason, row.field, row.detail)
    if not isinstance(row, Mapping):
        raise SkipRow("row is not an object", "row")
    prompt, responses = _PARSERS[schema](row)
    if schema == UNPAIRED:
        _check_responses(prompt, responses, ["completion"])
        return prompt, responses, [], [_label(row)]
    if schema == RANKED:
        pairs = _ranked_pairs(row, len(responses))
        _check_responses(prompt, responses, [f"responses[{i}]" for i in range(len(responses))])
        return prompt, responses, pairs, None
    _check_pair(prompt, responses)
    return prompt, responses, [(0, 1)], None


def _check_responses(prompt: list[Message], responses: list[list[Message]], names: list[str]) -> None:
    if not any(message["content"].strip() for message in prompt):
        raise SkipRow("empty prompt", "prompt")
    for response, name in zip(responses, names, strict=True):
        if not any(message["content"].strip() for message in response):
            raise SkipRow("empty response", name)
        # A response is what the policy says: a user or system turn in it would be trained as the model's.
        role = next((m["role"] for m in response if m["role"] != "assistant"), None)
        if role is not None:
            raise SkipRow("response is not an assistant turn", name, f"role {role!r}")


def _check_pair(prompt: list[Message], responses: list[list[Message]]) -> None:
    _check_responses(prompt, responses, ["chosen", "rejected"])
    if responses[0] == responses[1]:
        raise SkipRow("chosen == rejected", "rejected")


def _required(row: Mapping, name: str) -> Any:
    value = row.get(name)
    if value is None:
        raise SkipRow("missing field", name)
    return value


def _string(row: Mapping, name: str) -> str:
    value = _required(row, name)
    if not isinstance(value, str):
        raise SkipRow("not a string", name)
    return value


def _messages(row: Mapping, name: str) -> list[Message]:
    return _message_list(_required(row, name), name)


def _message_list(value: Any, name: str) -> list[Message]:
    if not isinstance(value, list) or not all(
        isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in value
    ):
        raise SkipRow("not a list of {role, content} messages", name)
    for i, m in enumerate(value):
        if m["role"] not in ROLES:
            raise SkipRow("unknown role", f"{name}[{i}].role", f"{m['role'][:40]!r}, not one of {', '.join(ROLES)}")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _split_shared_prefix(
    chosen: list[Message], rejected: list[Message]
) -> tuple[list[Message], list[list[Message]]]:
    """Shared leading turns -> prompt; each side must then end in exactly one assistant turn."""
    if chosen == rejected:
        raise SkipRow("chosen == rejected", "rejected")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    responses = [chosen[shared:], rejected[shared:]]
    for response, name in zip(responses, ("chosen", "rejected"), strict=True):
        if not response:
            raise SkipRow("empty response", name)
        if len(response) > 1 or response[0]["role"] != "assistant":
            raise SkipRow("chosen and rejected differ before the last assistant turn", name)
    return chosen[:shared], responses


def _parse_conversational(row: Mapping) -> tuple[list[Message], list[list[Message]]]:
    chosen, rejected = _messages(row, "chosen"), _messages(row, "rejected")
    prompt = row.get("prompt")
    if isinstance(prompt, list):
        return _messages(row, "prompt"), [chosen, rejected]
    if prompt is not None and not isinstance(prompt, str):
        raise SkipRow("not a string or a list of messages", "prompt")
    if prompt is None or (chosen and chosen[0]["role"] != "assistant"):
        # TRL's maybe_extract_prompt: a string prompt beside message lists that repeat it is redundant.
        return _split_shared_prefix(chosen, rejected)
    return [{"role": "user", "content": prompt}], [chosen, rejected]


def _parse_text(row: Mapping) -> tuple[list[Message], list[list[Message]]]:
    prompt = [{"role": "user", "content": _string(row, "prompt")}]
    return prompt, [[{"role": "assistant", "content": _string(row, name)}] for name in ("chosen", "rejected")]


def _parse_transcript(text: str, name: str) -> list[Message]:
    parts = _HH_SPLIT.split("\n\n" + text.lstrip())
    if parts[0] or len(parts) < 3:
        raise SkipRow("not a Human/Assistant transcript", name)
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
        raise SkipRow("not a {from, value} message", name)
    speaker = value.get("from")
    role = _SHAREGPT_ROLES.get(speaker) if isinstance(speaker, str) else None
    if role is None:
        known = ", ".join(_SHAREGPT_ROLES)
        raise SkipRow("unknown role", f"{name}.from", f"{str(speaker)[:40]!r}, not one of {known}")
    return {"role": role, "content": value["value"]}


def _parse_sharegpt(row: Mapping) -> tuple[list[Message], list[list[Message]]]:
    conversation = _required(row, "conversations")
    if not isinstance(conversation, list):
        raise SkipRow("not a list of {from, value} messages", "conversations")
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
        raise SkipRow("unrated", "label") from unrated
    except ValueError as unknown:
        raise SkipRow("unrecognised label", "label", repr(row.get("label"))[:40]) from unknown


def _parse_unpaired(row: Mapping) -> tuple[list[Message], list[list[Message]]]:
    if row.get("messages") is not None and row.get("completion") is None:
        messages = _messages(row, "messages")
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise SkipRow("messages do not end with an assistant turn after a prompt", "messages")
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
    raw = _required(row, "responses")
    if not isinstance(raw, list):
        raise SkipRow("not a list of responses", "responses")
    if len(raw) < 2:
        raise SkipRow("fewer than 2 responses", "responses")
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
            isinstance(p, list | tuple) and len(p) == 2 and p[0] != p[1]
            and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < k for i in p)
            for p in pairs
        )
        if not valid or not pairs:
            raise SkipRow(f"not a list of [better, worse] indices below {k}", "pairs")
        return [(p[0], p[1]) for p in pairs]
    name = next((n for n in ("scores", "ranks") if n in row), None)
    if name is None:
        raise SkipRow("missing field", "pairs")
    values = row[name]
    if not isinstance(values, list) or len(values) != k or not all(
        v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values
    ):
        raise SkipRow(f"not a list of {k} numbers (one per response; null for unrated)", name)
    _check_order_values(values, name)
    scores = {i: (v if name == "scores" else -v) for i, v in enumerate(values) if v is not None}
    pairs = [(i, j) for i in scores for j in scores if scores[i] > scores[j]]
    if not pairs:
        raise SkipRow("no two responses are ordered", name)
    return sorted(pairs, key=lambda p: (-scores[p[0]], scores[p[1]]))


def _check_order_values(values: list[int | float | None], name: str) -> None:
    """Scores must be finite (NaN orders nothing and would drop its response silently); ranks whole and >= 0."""
    for i, v in enumerate(values):
        if v is None:
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise SkipRow("not a finite number", f"{name}[{i}]", repr(v))
        if name == "ranks" and (v < 0 or (isinstance(v, float) and not v.is_integer())):
            raise SkipRow("not a rank (a whole number >= 0, 0 = best)", f"{name}[{i}]", repr(v)[:40])


_PARSERS = {
    CONVERSATIONAL: _parse_conversational,
    TEXT: _parse_text,
    HH_RLHF: _parse_hh_rlhf,
    SHAREGPT: _parse_sharegpt,
    UNPAIRED: _parse_unpaired,
    RANKED: _parse_ranked,
}

