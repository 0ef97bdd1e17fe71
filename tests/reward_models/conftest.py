"""A small, easy preference file for reward model tests: the chosen answer always agrees, the rejected refuses."""

import json

import pytest


@pytest.fixture
def easy_pairs(tmp_path):
    rows = [
        {
            "prompt": f"Question {i}: can you help me with task {i}?",
            "chosen": "Yes, certainly, here is how.",
            "rejected": "No.",
        }
        for i in range(40)
    ]
    path = tmp_path / "easy.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
