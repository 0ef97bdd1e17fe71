"""Unpaired (KTO) data: thumbs-up/down labels, and the conversion of paired data into unpaired rows.

An unpaired record has one response (k=1), no pairs and `labels=[True]` (desirable) or `labels=[False]`
(undesirable). Labels come as booleans or as the strings rating tools write; a row whose label is missing or
"unrated" has no desirability and is dropped (and counted) by the loader.
"""

from __future__ import annotations

from collections.abc import Sequence

from directalign.data.types import PreferenceRecord

DESIRABLE = frozenset({"true", "1", "up", "thumbs up", "thumbs_up", "👍", "good", "positive", "desirable", "yes"})
UNDESIRABLE = frozenset(
    {"false", "0", "down", "thumbs down", "thumbs_down", "👎", "bad", "negative", "undesirable", "no"}
)
UNRATED = frozenset({"", "none", "null", "unrated", "n/a", "na", "skip", "skipped"})


class UnratedLabel(ValueError):
    """The row carries no rating (missing, empty or "unrated")."""


def parse_label(value: object) -> bool:
    """True for a desirable completion, False for an undesirable one.

    Accepts booleans, 1/0, and (any case, surrounding spaces ignored) true/false, up/down, thumbs up/down,
    👍/👎, good/bad, positive/negative, desirable/undesirable, yes/no. Raises UnratedLabel for None and the
    "unrated" spellings, ValueError for anything else.
    """
    if isinstance(value, bool):
        return value
    if value is None:
        raise UnratedLabel("no label")
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in DESIRABLE:
        return True
    if text in UNDESIRABLE:
        return False
    if text in UNRATED:
        raise UnratedLabel(f"unrated label {value!r}")
    raise ValueError(f"unrecognised label {value!r}")


def is_unpaired(records: Sequence[PreferenceRecord]) -> bool:
    return bool(records) and all(r.labels is not None and not r.pairs for r in records)


def unpair(records: Sequence[PreferenceRecord]) -> list[PreferenceRecord]:
    """Paired records to unpaired ones: each pair gives its chosen response as desirable, its rejected as
    undesirable (TRL's `unpair_preference_dataset`). Already-unpaired records pass through unchanged.

    A response that several pairs of one record name in the same role is written once.
    """
    out: list[PreferenceRecord] = []
    for record in records:
        if record.labels is not None and not record.pairs:
            out.append(record)
            continue
        seen: set[tuple[int, bool]] = set()
        for chosen, rejected in record.pairs:
            for index, label in ((chosen, True), (rejected, False)):
                if (index, label) in seen:
                    continue
                seen.add((index, label))
                out.append(
                    PreferenceRecord(
                        prompt=record.prompt,
                        responses=[record.responses[index]],
                        pairs=[],
                        source=record.source,
                        labels=[label],
                    )
                )
    return out


def label_counts(records: Sequence[PreferenceRecord]) -> tuple[int, int]:
    """(desirable, undesirable) responses among records with labels."""
    labels = [label for r in records if r.labels is not None for label in r.labels]
    return sum(labels), len(labels) - sum(labels)


def records_for_loss(
    train: list[PreferenceRecord], loss_type: str
) -> tuple[list[PreferenceRecord], list[str]]:
    """The training records a loss can use, and a note when they were converted.

    KTO trains on unpaired records, so paired ones are unpaired first; every other loss needs pairs, so
    unpaired data is an error that names the loss to use.
    """
    from directalign.errors import ConfigError
    from directalign.losses.registry import loss_spec

    unpaired = [r for r in train if r.labels is not None and not r.pairs]
    if loss_spec(loss_type).data == "unpaired":
        if len(unpaired) == len(train):
            return train, []
        converted = unpair(train)
        return converted, [f"KTO: {len(train)} paired records -> {len(converted)} unpaired (desirable/undesirable)"]
    if unpaired:
        raise ConfigError(
            f"{unpaired[0].source}: unpaired (prompt/completion/label) data has no pairs for loss_type "
            f"{loss_type!r}; train it with --loss-type kto"
        )
    return train, []
