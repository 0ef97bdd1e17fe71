"""Diagnostics of a pair data set: position and length bias, duplicates, prompt diversity and more.

Texts are message contents joined by newlines; every pair (preferred, dispreferred) of every record counts,
so a plain pair data set has one pair a row. Rates come with Wilson intervals: a length bias of 0.5 means the
longer response wins as often as the shorter one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from directalign.data.types import PreferenceRecord
from directalign.errors import DataError
from directalign.quality.similarity import (
    exact_groups,
    message_text,
    near_duplicate_groups,
    pair_texts,
    response_similarity,
    words,
)
from directalign.quality.stats import json_ready, wilson_interval

# Common English function words, left out of the keyword counts (as are words under 3 letters).
STOPWORDS = frozenset(
    """about above after again against all also am and any are because been before being below between both
    but can could did does doing down during each few for from further had has have having her here hers him
    his how into its itself just more most much must nor not now off once only other our ours out over own
    same she should some such than that the their theirs them then there these they this those through too
    under until very was were what when where which while who whom why will with would you your yours
    yourself please like make need want know use used using one two get also""".split()
)


@dataclass
class BiasEstimate:
    """The share of decided pairs where something (the longer / first-shown response) is the preferred one.

    count of total pairs; rate = count / total with a Wilson interval; skipped: pairs that cannot tell (equal
    lengths, unknown position).
    """

    name: str
    count: int
    total: int
    rate: float
    ci_low: float
    ci_high: float
    skipped: int = 0


def length_bias(records: Sequence[PreferenceRecord], unit: str = "chars") -> BiasEstimate:
    """Share of pairs whose preferred response is the longer one (in characters or words); ties skipped."""
    if unit not in ("chars", "words"):
        raise DataError(f"unit must be 'chars' or 'words', got {unit!r}")
    measure = len if unit == "chars" else (lambda text: len(words(text)))
    longer = decided = skipped = 0
    for record in records:
        for chosen, rejected in pair_texts(record):
            a, b = measure(chosen), measure(rejected)
            if a == b:
                skipped += 1
                continue
            decided += 1
            longer += a > b
    return _estimate(f"longer response preferred ({unit})", longer, decided, skipped)


def position_bias(records: Sequence[PreferenceRecord], chosen_shown_first: Sequence[bool | None]) -> BiasEstimate:
    """Share of rows where the preferred response was the one shown first (left / "A").

    chosen_shown_first is parallel to records (one flag a row, about its first pair); None = not recorded.
    With randomised order and no position bias the rate is 0.5.
    """
    if len(chosen_shown_first) != len(records):
        raise DataError(f"chosen_shown_first has {len(chosen_shown_first)} flags for {len(records)} records")
    known = [bool(flag) for flag in chosen_shown_first if flag is not None]
    skipped = len(records) - len(known)
    return _estimate("preferred response shown first", sum(known), len(known), skipped)


def exact_duplicates(records: Sequence[PreferenceRecord]) -> list[list[int]]:
    """Groups of record indices with the same prompt and responses, character for character."""
    return exact_groups([_record_text(r, "\x1e") for r in records])


def contradictions(records: Sequence[PreferenceRecord]) -> list[list[int]]:
    """Groups of records with the same prompt and the same two responses but opposite preferences."""
    keyed: dict[tuple[str, str, str], set[tuple[str, int]]] = {}
    for r, record in enumerate(records):
        prompt = message_text(record.prompt)
        for chosen, rejected in pair_texts(record):
            low, high = sorted((chosen, rejected))
            keyed.setdefault((prompt, low, high), set()).add((chosen, r))
    groups = [sorted({r for _, r in seen}) for seen in keyed.values() if len({chosen for chosen, _ in seen}) > 1]
    return sorted(groups)


def near_duplicates(records: Sequence[PreferenceRecord], threshold: float = 0.8) -> list[list[int]]:
    """Groups of records whose prompt + responses have word-3-gram Jaccard similarity >= threshold.

    Includes the exact duplicates; see `near_duplicate_groups` for the MinHash search.
    """
    return near_duplicate_groups([_record_text(r, "\n") for r in records], threshold)


def near_identical_pairs(records: Sequence[PreferenceRecord], threshold: float = 0.9) -> list[tuple[int, int, float]]:
    """(record index, pair index, similarity) of pairs whose two responses are near-identical.

    Similarity is `response_similarity` (word-level 2M/T); at 0.9 the two responses differ in about a tenth of
    their words, which gives the loss little to learn from and often marks a labelling artefact.
    """
    found = []
    for r, record in enumerate(records):
        for p, (chosen, rejected) in enumerate(pair_texts(record)):
            similarity = response_similarity(chosen, rejected)
            if similarity >= threshold:
                found.append((r, p, similarity))
    return found


@dataclass
class PromptDiversity:
    """How varied the prompts are.

    distinct_n: distinct word n-grams / all word n-grams over prompts (Li et al. 2016, "A diversity-promoting
    objective function for neural conversation models"); lengths in words; prompt = last user turn;
    first_word_entropy: normalised
    entropy (0..1) of the prompts' first words, a crude spread of task types ("write", "what", "explain").
    """

    n_prompts: int
    unique_prompts: int
    distinct_1: float
    distinct_2: float
    length_mean: float
    length_std: float
    length_p10: float
    length_median: float
    length_p90: float
    first_word_entropy: float
    top_first_words: list[tuple[str, int]] = field(default_factory=list)
    top_keywords: list[tuple[str, int]] = field(default_factory=list)


def prompt_diversity(records: Sequence[PreferenceRecord], top_k: int = 10) -> PromptDiversity:
    """Distinct-n, length spread and first-word / keyword counts of the records' prompts.

    A prompt here is its last user turn (the request itself), so that a shared system prompt or earlier turns
    do not mask how varied the requests are.
    """
    prompts = [last_user_text(r) for r in records]
    tokens = [words(p) for p in prompts]
    lengths = np.array([len(t) for t in tokens], dtype=float) if tokens else np.zeros(1)
    first_words = Counter(t[0] for t in tokens if t)
    keywords = Counter(w for t in tokens for w in set(t) if len(w) > 2 and w not in STOPWORDS and w.isalpha())
    p10, median, p90 = np.percentile(lengths, [10, 50, 90])
    return PromptDiversity(
        n_prompts=len(prompts),
        unique_prompts=len(set(prompts)),
        distinct_1=distinct_n(tokens, 1),
        distinct_2=distinct_n(tokens, 2),
        length_mean=float(lengths.mean()),
        length_std=float(lengths.std()),
        length_p10=float(p10),
        length_median=float(median),
        length_p90=float(p90),
        first_word_entropy=normalized_entropy(list(first_words.values())),
        top_first_words=first_words.most_common(top_k),
        top_keywords=keywords.most_common(top_k),
    )


def last_user_text(record: PreferenceRecord) -> str:
    """The content of the last user message of the prompt (all of the prompt when it has none)."""
    user = [m for m in record.prompt if m.get("role") == "user"]
    return message_text(user[-1:] if user else record.prompt)


def distinct_n(token_lists: Sequence[Sequence[str]], n: int) -> float:
    """Distinct n-grams / total n-grams over all token lists (NaN when there is no n-gram)."""
    grams = [tuple(t[i : i + n]) for t in token_lists for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def normalized_entropy(counts: Sequence[int]) -> float:
    """Shannon entropy of a count distribution divided by log(number of classes): 0 one class, 1 uniform."""
    total = sum(counts)
    if len(counts) < 2 or total == 0:
        return 0.0
    entropy = -sum(c / total * math.log(c / total) for c in counts if c)
    return entropy / math.log(len(counts))


@dataclass
class DiagnosticsReport:
    """Every diagnostic of one pair data set."""

    n_records: int
    n_pairs: int
    length_bias_chars: BiasEstimate
    length_bias_words: BiasEstimate
    position_bias: BiasEstimate | None
    exact_duplicates: list[list[int]]
    contradictions: list[list[int]]
    near_duplicates: list[list[int]]
    near_identical_pairs: list[tuple[int, int, float]]
    prompts: PromptDiversity

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN becomes None)."""
        return json_ready(asdict(self))


def diagnose(
    records: Sequence[PreferenceRecord],
    chosen_shown_first: Sequence[bool | None] | None = None,
    duplicate_threshold: float = 0.8,
    identical_threshold: float = 0.9,
) -> DiagnosticsReport:
    """All diagnostics; position bias only when `chosen_shown_first` is given."""
    if not records:
        raise DataError("no records to diagnose")
    return DiagnosticsReport(
        n_records=len(records),
        n_pairs=sum(len(r.pairs) for r in records),
        length_bias_chars=length_bias(records, "chars"),
        length_bias_words=length_bias(records, "words"),
        position_bias=position_bias(records, chosen_shown_first) if chosen_shown_first is not None else None,
        exact_duplicates=exact_duplicates(records),
        contradictions=contradictions(records),
        near_duplicates=near_duplicates(records, duplicate_threshold),
        near_identical_pairs=near_identical_pairs(records, identical_threshold),
        prompts=prompt_diversity(records),
    )


def _estimate(name: str, count: int, total: int, skipped: int) -> BiasEstimate:
    low, high = wilson_interval(count, total)
    rate = count / total if total else float("nan")
    return BiasEstimate(name, int(count), int(total), rate, low, high, skipped)


def _record_text(record: PreferenceRecord, separator: str) -> str:
    parts = [message_text(record.prompt)] + [message_text(r) for r in record.responses]
    return separator.join(parts)
