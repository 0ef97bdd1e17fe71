"""Blind human evaluation: prompts answered by a trained model and by its reference, and a judge on the same pairs.

Each prompt becomes an item whose response 0 comes from the evaluated model (a base model with a LoRA adapter, or
any model) and response 1 from its reference (the same base with the adapter disabled, which needs no second
copy in memory, or another model / adapter). Annotators see them as A and B in a random order drawn per
assignment, so neither the model nor its position can be recognised. The win rate and its interval are in
status.human_win_rate; `run_judge` stores a pairwise judge's verdicts on a project's items (any project) for
status.judge_agreement.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import select
from tqdm import tqdm

from directalign.annotate.db import Database, audit
from directalign.annotate.models import Item, Project
from directalign.annotate.projects import Pair
from directalign.data import formats
from directalign.data.types import Message
from directalign.errors import DataError
from directalign.generation.base import GenerationConfig, make_generator

JUDGE_BATCH = 16


def read_prompts(path: str | Path, limit: int | None = None) -> list[tuple[list[Message], str]]:
    """(prompt messages, "file:line") from a .txt file (one prompt a line), rows with a `prompt` (text or
    messages) or `instruction` (+ `input`) field, or any preference file the trainer reads (its prompts)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".txt":
        lines = path.read_text(encoding="utf-8").splitlines()
        prompts = [([{"role": "user", "content": line.strip()}], f"{path}:{n}")
                   for n, line in enumerate(lines, start=1) if line.strip()]
    else:
        prompts = _prompts_from_rows(path)
    if not prompts:
        raise DataError(f"{path}: no prompts found")
    return prompts[:limit] if limit else prompts


def _prompts_from_rows(path: Path) -> list[tuple[list[Message], str]]:
    rows = formats.read_rows(path, None)
    first = rows[0][1] if rows else {}
    if isinstance(first, dict) and formats.detect_schema(first) is None and ("prompt" in first or
                                                                             "instruction" in first):
        prompts = []
        for number, row in rows:
            prompts.append((_prompt_of_row(row, path, number), f"{path}:{number}"))
        return prompts
    return [(record.prompt, record.source) for record in formats.load_records(path).records]


def _prompt_of_row(row: dict, path: Path, number: int) -> list[Message]:
    if "prompt" in row:
        value = row["prompt"]
        if isinstance(value, str) and value.strip():
            return [{"role": "user", "content": value}]
        if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
            return value
        raise DataError(f"{path}:{number}: field 'prompt' must be text or a list of messages")
    text = str(row.get("instruction") or "").strip()
    if not text:
        raise DataError(f"{path}:{number}: field 'instruction' is empty")
    extra = str(row.get("input") or "").strip()
    return [{"role": "user", "content": f"{text}\n\n{extra}" if extra else text}]


def generate_pairs(
    prompts: list[tuple[list[Message], str]],
    model: str,
    adapter: str | None = None,
    reference_model: str | None = None,
    reference_adapter: str | None = None,
    config: GenerationConfig | None = None,
    batch_size: int = 8,
) -> list[Pair]:
    """Answer every prompt with the evaluated model (response 0) and with its reference (response 1)."""
    from directalign.models.loading import load_model, load_tokenizer

    config = config or GenerationConfig(max_new_tokens=256, temperature=0.7, top_p=0.9, seed=0)
    tokenizer = load_tokenizer(model)
    policy = _with_adapter(load_model(model), adapter)
    messages = [p for p, _ in prompts]
    ours = _generate(policy, tokenizer, messages, config, batch_size, "evaluated model")
    if reference_model in (None, model) and adapter and not reference_adapter:
        with _adapter_disabled(policy):
            theirs = _generate(policy, tokenizer, messages, config, batch_size, "reference (adapter off)")
    else:
        reference = _with_adapter(load_model(reference_model or model), reference_adapter)
        theirs = _generate(reference, load_tokenizer(reference_model or model), messages, config, batch_size,
                           "reference")
    return [Pair(prompt, [{"role": "assistant", "content": a}], [{"role": "assistant", "content": b}], source)
            for (prompt, source), a, b in zip(prompts, ours, theirs, strict=True)]


def _with_adapter(model, adapter: str | None):
    if not adapter:
        return model.eval()
    from peft import PeftModel

    if not Path(adapter).is_dir():
        raise DataError(f"--adapter {adapter}: no such folder (a `directalign train` run's adapter/ folder)")
    return PeftModel.from_pretrained(model, adapter).eval()


@contextlib.contextmanager
def _adapter_disabled(model) -> Iterator[None]:
    with model.disable_adapter():
        yield


def _generate(model, tokenizer, prompts: list[list[Message]], config: GenerationConfig, batch_size: int,
              label: str) -> list[str]:
    generator = make_generator("transformers", model=model, tokenizer=tokenizer, batch_size=batch_size)
    texts = []
    with tqdm(total=len(prompts), desc=f"generating: {label}", unit="prompt") as bar:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            texts.extend(group[0].text for group in generator.generate(chunk, config))
            bar.update(len(chunk))
    return texts


def run_judge(db: Database, project: Project, spec: str, judge=None) -> int:
    """Judge every item of a project (both orders, judges.pairwise) and store the verdicts; returns the count.

    judge: an already built PairwiseJudge (tests); by default `judges.backends.judge_from_spec(spec)`.
    """
    from directalign.judges.backends import judge_from_spec
    from directalign.judges.pairwise import judge_pairs

    judge = judge or judge_from_spec(spec)
    with db.read() as session:
        items = session.scalars(select(Item).where(Item.project_id == project.id).order_by(Item.position)).all()
    verdicts = []
    for start in tqdm(range(0, len(items), JUDGE_BATCH), desc=f"judging with {spec}", unit="batch"):
        chunk = items[start : start + JUDGE_BATCH]
        verdicts.extend(judge_pairs(
            judge, [json.loads(i.prompt) for i in chunk], [_text(i.response_0) for i in chunk],
            [_text(i.response_1) for i in chunk]))
    with db.write() as session:
        for item, verdict in zip(items, verdicts, strict=True):
            row = session.get(Item, item.id)
            row.judge_name = spec
            row.judge_winner = {"A": "0", "B": "1", "tie": "tie"}.get(verdict.winner)
            row.judge_prob, row.judge_flip = verdict.prob_a, verdict.position_flip
        audit(session, db.clock(), "judge", project_id=project.id, judge=spec, items=len(items),
              unparseable=sum(v.winner is None for v in verdicts))
    return len(items)


def _text(response_json: str) -> str:
    return "\n\n".join(m["content"] for m in json.loads(response_json))
