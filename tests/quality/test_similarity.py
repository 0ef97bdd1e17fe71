from __future__ import annotations

import random

import numpy as np
import pytest

from directalign.quality.similarity import (
    exact_groups,
    jaccard,
    minhash_signatures,
    near_duplicate_groups,
    normalize,
    response_similarity,
    shingles,
)


def test_normalize_and_shingles():
    assert normalize("Hello,   WORLD!\nAgain") == "hello world again"
    assert shingles("a b c d", 3) == {"a b c", "b c d"}
    assert shingles("a b", 3) == {"a b"}


def test_jaccard_hand_computed():
    assert jaccard({"a", "b", "c"}, {"b", "c", "d"}) == pytest.approx(2 / 4)
    assert jaccard(set(), set()) == 1.0


def test_response_similarity_hand_computed():
    # Matching words "the cat" = 2 of 3 + 3 words -> 2 * 2 / 6.
    assert response_similarity("The cat sat.", "the cat ran") == pytest.approx(2 / 3)
    assert response_similarity("same text", "Same text!") == 1.0
    assert response_similarity("a b", "c d") == 0.0


def test_minhash_estimates_jaccard():
    a = {f"w{i}" for i in range(100)}
    b = {f"w{i}" for i in range(50, 150)}  # Jaccard 50 / 150 = 1/3
    signatures = minhash_signatures([a, b], num_perm=512, seed=3)
    assert np.mean(signatures[0] == signatures[1]) == pytest.approx(1 / 3, abs=0.06)


def random_text(rng: random.Random, n: int = 60) -> str:
    return " ".join(
        rng.choice(
            [
                "alpha",
                "beta",
                "gamma",
                "delta",
                "eps",
                "zeta",
                "eta",
                "theta",
                "iota",
                "kappa",
                "lambda",
                "mu",
                "nu",
                "xi",
                "omicron",
                "pi",
            ]
        )
        for _ in range(n)
    )


def test_near_duplicate_groups_find_planted_copies_only():
    rng = random.Random(0)
    texts = [random_text(rng) for _ in range(300)]
    words = texts[10].split()
    texts.append(" ".join(words[:-1] + ["rho"]))  # one word changed out of 60: Jaccard 55/61 or so
    texts.append(texts[20].upper())  # same after normalisation
    groups = near_duplicate_groups(texts, threshold=0.8)
    assert groups == [[10, 300], [20, 301]]


def test_exact_groups():
    assert exact_groups(["a", "b", "a", "c", "b", "a"]) == [[0, 2, 5], [1, 4]]
