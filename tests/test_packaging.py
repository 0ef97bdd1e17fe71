"""The wheel carries every file the package reads: each non-Python file under src/directalign matches a
package-data pattern of pyproject.toml (the wheel itself: `python -m build`, see docs/ecosystem.md#packaging)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "directalign"


def test_every_data_file_is_package_data():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["directalign"]
    data_files = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*")
                  if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert "configs/builtin.yaml" in data_files and "config/trl_1_16.json" in data_files
    missing = [f for f in data_files if not any(fnmatch.fnmatch(f, pattern) for pattern in patterns)]
    assert not missing, f"not in the wheel: {missing}"


def test_the_optional_parts_have_extras():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"vllm", "openai", "annotate", "deepspeed", "trackers", "quantization"} <= set(extras)
    assert {name.split(">")[0] for name in extras["trackers"]} == {"tensorboard", "wandb", "mlflow-skinny", "trackio"}
