"""From a config's data options to tokenised train and held-out records."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from directalign.data.types import Message, TokenizedRecord
from directalign.data.unpaired import records_for_loss


@dataclass
class PreparedData:
    train: list[TokenizedRecord]
    eval: list[TokenizedRecord]
    description: str
    notes: list[str] = field(default_factory=list)
    eval_prompts: list[list[Message]] = field(default_factory=list)  # held-out prompts, for sampling


def _load(path: str, split: str | None = None, config_name: str | None = None):
    from directalign.data.formats import load_records

    options = {"split": split} if split else {}
    if config_name:
        options["config_name"] = config_name
    result = load_records(path, **options)
    notes = []
    skipped = sum(result.skipped.values())
    if skipped:
        notes.append(f"{path}: skipped {skipped} of {result.num_rows} rows ({dict(result.skipped)})")
        notes += [f"  {example}" for example in result.skipped_examples]
    return result.records, result.schema, notes


def split_records(records: list, fraction: float, seed: int) -> tuple[list, list]:
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_eval = int(round(len(records) * fraction))
    held = set(order[:n_eval])
    return [r for i, r in enumerate(records) if i not in held], [records[i] for i in sorted(held)]


def prepare_data(cfg, tokenizer) -> PreparedData:
    from directalign.data.tokenize import tokenize_records

    notes: list[str] = []
    if cfg.data is None:
        from directalign.data.builtin import builtin_split

        train, held = builtin_split(cfg.builtin_train_pairs, cfg.builtin_eval_pairs, seed=cfg.seed)
        origin, unit = "built-in verifiable preference set", "pairs"
    else:
        train, schema, notes = _load(cfg.data, cfg.data_split, cfg.data_config)
        if cfg.eval_data:
            held, _, eval_notes = _load(cfg.eval_data)
            notes += eval_notes
        else:
            train, held = split_records(train, cfg.eval_split, cfg.seed)
        origin, unit = f"{cfg.data} (schema {schema};", "records"

    if cfg.max_train_records:
        train = train[: cfg.max_train_records]
    if cfg.max_eval_records:
        held = held[: cfg.max_eval_records]
    opening = origin if origin.endswith(";") else origin + " ("
    description = f"{opening}{' ' if opening.endswith(';') else ''}{len(train)} train / {len(held)} held-out {unit})"
    train, conversion_notes = records_for_loss(train, getattr(cfg, "loss_type", "sigmoid"))
    notes += conversion_notes

    def tok(records):
        result = tokenize_records(
            records,
            tokenizer,
            max_length=cfg.max_length,
            max_prompt_length=cfg.max_prompt_length,
            use_chat_template=cfg.use_chat_template,
        )
        return result

    train_tok, held_tok = tok(train), tok(held) if held else None
    for name, result in (("train", train_tok), ("held-out", held_tok)):
        if result is not None:
            truncated = _truncation_note(result.stats)
            if truncated:
                notes.append(f"{name}: {truncated}")
    return PreparedData(
        train_tok.records,
        held_tok.records if held_tok else [],
        description,
        notes,
        eval_prompts=[r.prompt for r in held],
    )


def _truncation_note(stats) -> str:
    prompts = getattr(stats, "prompts_truncated", 0)
    responses = getattr(stats, "responses_truncated", 0)
    if not (prompts or responses):
        return ""
    return f"truncated {prompts} prompts (kept their end) and {responses} responses (kept their start)"
