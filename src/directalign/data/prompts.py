"""Prompts for the on-policy trainers: from a file (a prompt or messages column, other columns kept for the
reward functions; or any preference file, whose distinct prompts are taken) or from the built-in verifiable
tasks, split into training and held-out prompts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from directalign.data.builtin import KINDS, builtin_split, task_from_prompt
from directalign.data.formats import detect_schema, load_records, read_rows
from directalign.data.pipeline import split_records
from directalign.data.types import Message
from directalign.errors import ConfigError, DataError


@dataclass
class PromptSet:
    """Chat prompts and, per prompt, the file's other columns (what reward functions receive as **columns)."""

    prompts: list[list[Message]]
    columns: dict[str, list] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)

    def take(self, indices: list[int]) -> PromptSet:
        columns = {k: [v[i] for i in indices] for k, v in self.columns.items()}
        return PromptSet([self.prompts[i] for i in indices], columns)


def builtin_prompt_sets(n_train: int, n_eval: int, kinds: list[str], seed: int) -> tuple[PromptSet, PromptSet]:
    """Train and held-out prompts of the built-in tasks (disjoint facts, categories and numbers; see
    directalign.data.builtin), restricted to `kinds`; the column "kind" names each prompt's task."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ConfigError(f"builtin_kinds: unknown {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    # The families come in turn, so ask for enough of every kind and keep the wanted ones.
    share = len(KINDS) / len(kinds) if kinds else 1
    train, held = builtin_split(math.ceil(n_train * share), math.ceil(n_eval * share), seed=seed)

    def prompt_set(records, n: int) -> PromptSet:
        prompts = [r.prompt for r in records if not kinds or task_from_prompt(r.prompt[-1]["content"]).kind in kinds]
        prompts = prompts[:n]
        return PromptSet(prompts, {"kind": [task_from_prompt(p[-1]["content"]).kind for p in prompts]})

    return prompt_set(train, n_train), prompt_set(held, n_eval)


def load_prompts(path: str) -> PromptSet:
    """Prompts from a file: rows with `prompt` (string or messages) or `messages` (a trailing assistant turn is
    dropped), other columns kept; or any preference / unpaired data file, whose distinct prompts are taken."""
    rows = read_rows(Path(path), None)
    if any(detect_schema(row) for _, row in rows[:50]):
        seen, prompts = set(), []
        for record in load_records(path).records:
            key = repr(record.prompt)
            if key not in seen:
                seen.add(key)
                prompts.append(record.prompt)
        return PromptSet(prompts)
    prompts, columns = [], {}
    for number, row in rows:
        prompt = _row_prompt(row, f"{path}:{number}")
        prompts.append(prompt)
        for key, value in row.items():
            if key not in ("prompt", "messages"):
                columns.setdefault(key, [None] * (len(prompts) - 1)).append(value)
        for values in columns.values():
            values.extend([None] * (len(prompts) - len(values)))
    if not prompts:
        raise DataError(f"{path}: no prompts")
    return PromptSet(prompts, columns)


def _row_prompt(row, place: str) -> list[Message]:
    value = row.get("prompt", row.get("messages")) if isinstance(row, dict) else None
    if isinstance(value, str) and value.strip():
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        messages = [{"role": m["role"], "content": m["content"]} for m in value]
        if messages[-1]["role"] == "assistant" and len(messages) > 1:
            messages = messages[:-1]
        return messages
    raise DataError(f"{place}: expected a prompt (string or messages) or messages field")


def prompt_sets(cfg) -> tuple[PromptSet, PromptSet]:
    """Training and held-out prompts of an on-policy config: its prompts file, else the built-in tasks."""
    if cfg.prompts is None:
        return builtin_prompt_sets(cfg.builtin_train_prompts, cfg.builtin_eval_prompts, cfg.builtin_kinds, cfg.seed)
    train = load_prompts(cfg.prompts)
    if cfg.eval_prompts:
        return train, load_prompts(cfg.eval_prompts)
    kept, held = split_records(list(range(len(train))), cfg.eval_split, cfg.seed)
    return train.take(kept), train.take(held)
