"""Fixtures of the quality tests: the shared real data sets (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get("DIRECTALIGN_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data")
)


def shared_path(*parts: str) -> Path:
    """A path under the shared data folder, or pytest.skip when it is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set DIRECTALIGN_SHARED_DATA)")
    return path


def long_rows(matrix: list[list], missing=None) -> list[dict]:
    """Long rows from a coders x units matrix (the layout of Krippendorff's papers); `missing` is skipped."""
    return [
        {"item_id": unit, "annotator_id": coder, "label": value}
        for coder, row in enumerate(matrix)
        for unit, value in enumerate(row)
        if value is not missing
    ]
