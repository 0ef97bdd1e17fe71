"""Text similarity for preference data: normalised text, word shingles, MinHash near-duplicate search.

Near duplicates are found in about O(n) with MinHash signatures and locality-sensitive hashing (Broder 1997,
"On the resemblance and containment of documents"; Leskovec, Rajaraman & Ullman, "Mining of Massive Datasets",
ch. 3): only rows sharing a band of their signature are compared exactly.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from difflib import SequenceMatcher

import numpy as np

from directalign.data.types import Message, PreferenceRecord

_WORD = re.compile(r"\w+", re.UNICODE)
_PRIME = (1 << 31) - 1  # Mersenne prime: (a * x + b) mod p stays inside int64 for a, x < p
_SMALL_BUCKET = 32


def message_text(messages: Sequence[Message]) -> str:
    """The contents of a list of chat messages, one per line."""
    return "\n".join(str(m.get("content", "")) for m in messages)


def pair_texts(record: PreferenceRecord) -> list[tuple[str, str]]:
    """(chosen text, rejected text) of each pair of a record."""
    return [(message_text(record.responses[i]), message_text(record.responses[j])) for i, j in record.pairs]


def words(text: str) -> list[str]:
    """Lower-cased word tokens (runs of letters, digits and underscores)."""
    return _WORD.findall(text.lower())


def normalize(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed: the key for 'same text up to formatting'."""
    return " ".join(words(text))


def shingles(text: str, n: int = 3) -> set[str]:
    """The set of word n-grams of a text (the whole text as one shingle when it has fewer than n words)."""
    tokens = words(text)
    if len(tokens) < n:
        return {" ".join(tokens)}
    return {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    """|a & b| / |a | b| (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def response_similarity(a: str, b: str) -> float:
    """Token-level similarity of two responses: 2 M / T over their word sequences (difflib's ratio).

    M is the number of words in matching blocks, T the total number of words of both (Ratcliff/Obershelp).
    """
    tokens_a, tokens_b = words(a), words(b)
    if not tokens_a and not tokens_b:
        return 1.0
    return SequenceMatcher(None, tokens_a, tokens_b, autojunk=False).ratio()


def minhash_signatures(sets: Sequence[set[str]], num_perm: int = 64, seed: int = 0) -> np.ndarray:
    """MinHash signatures, shape (len(sets), num_perm): min over a set of (a_j h(x) + b_j) mod p.

    h is CRC-32 (stable across runs, unlike Python's hash); P(two signatures agree in a column) = Jaccard.
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _PRIME, size=num_perm, dtype=np.int64)
    b = rng.integers(0, _PRIME, size=num_perm, dtype=np.int64)
    signatures = np.full((len(sets), num_perm), _PRIME, dtype=np.int64)
    for row, items in enumerate(sets):
        if items:
            hashes = np.fromiter((zlib.crc32(s.encode()) for s in items), dtype=np.int64) % _PRIME
            signatures[row] = ((hashes[:, None] * a[None, :] + b[None, :]) % _PRIME).min(axis=0)
    return signatures


def near_duplicate_groups(
    texts: Sequence[str], threshold: float = 0.8, num_perm: int = 64, bands: int = 16, seed: int = 0
) -> list[list[int]]:
    """Groups (two or more indices, ascending) of texts whose word-3-gram Jaccard similarity is >= threshold.

    Candidates share one of `bands` bands of their MinHash signature (with 16 bands of 4 rows, pairs at
    Jaccard 0.8 are found with probability 1 - (1 - 0.8^4)^16 > 0.999); each candidate is then checked
    exactly. Rows in a large bucket (> 32) are checked against its first member only, which keeps the cost
    near-linear.
    """
    if num_perm % bands:
        raise ValueError(f"num_perm ({num_perm}) must be a multiple of bands ({bands})")
    sets = [shingles(t) for t in texts]
    signatures = minhash_signatures(sets, num_perm, seed)
    parent = list(range(len(texts)))
    rows = num_perm // bands
    for band in range(bands):
        buckets: dict[bytes, list[int]] = {}
        for i, sig in enumerate(signatures[:, band * rows : (band + 1) * rows]):
            buckets.setdefault(sig.tobytes(), []).append(i)
        for members in buckets.values():
            for i, j in _candidate_pairs(members):
                if _find(parent, i) != _find(parent, j) and jaccard(sets[i], sets[j]) >= threshold:
                    parent[_find(parent, i)] = _find(parent, j)
    return _groups(parent)


def exact_groups(keys: Sequence[str]) -> list[list[int]]:
    """Groups (two or more indices, ascending) of identical keys."""
    seen: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        seen.setdefault(key, []).append(i)
    return sorted((g for g in seen.values() if len(g) > 1), key=lambda g: g[0])


def _candidate_pairs(members: list[int]) -> list[tuple[int, int]]:
    if len(members) <= _SMALL_BUCKET:
        return [(a, b) for k, a in enumerate(members) for b in members[k + 1 :]]
    return [(members[0], b) for b in members[1:]]


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _groups(parent: list[int]) -> list[list[int]]:
    groups: dict[int, list[int]] = {}
    for i in range(len(parent)):
        groups.setdefault(_find(parent, i), []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])
