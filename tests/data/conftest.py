"""Fixtures for the data tests: the embedded SmolLM2 tokenizer, which has a real chat template."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import shared_data_dir


@pytest.fixture
def dpo_en_demo_file() -> Path:
    path = shared_data_dir() / "llamafactory-dpo-en-demo" / "dpo_en_demo.json"
    if not path.is_file():
        pytest.skip(f"shared data not found at {path} (set DIRECTALIGN_SHARED_DATA)")
    return path
