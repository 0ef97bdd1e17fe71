"""The run's memory habit (engine/memory.py): with glibc's mmap threshold fixed, buffers freed between live ones
go back to the system; without it, they stay resident."""

import subprocess
import sys

import pytest

from directalign.engine import memory

pytestmark = pytest.mark.skipif(not memory._glibc(), reason="glibc's malloc only (mallopt M_MMAP_THRESHOLD)")

CHILD = """
import sys
import torch
from directalign.engine.memory import return_freed_buffers
if sys.argv[1] == "fixed":
    assert return_freed_buffers()
big = torch.ones(4 * 2**20); del big  # a 16 MiB buffer freed: glibc raises its mmap threshold past 2 MiB
chunks = [torch.ones(2**19) for _ in range(100)]  # 100 x 2 MiB
kept = chunks[9::10]  # every tenth stays live, above the freed ones
del chunks
rss = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")][0] // 1024
print(rss)
"""


def resident_after(mode: str) -> int:
    return int(subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
               .stdout.split()[-1])


def test_buffers_freed_below_live_ones_are_returned_only_with_the_threshold_fixed():
    default, fixed = resident_after("default"), resident_after("fixed")
    assert default - fixed > 100  # MB: about 180 MB freed in 2 MiB chunks, held by the heap by default


def test_a_threshold_the_user_set_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert memory.return_freed_buffers() is False


def test_a_run_releases_freed_memory_only_when_its_key_says_so(monkeypatch, tmp_path):
    from directalign.config import load_config
    from directalign.engine.run import open_run

    calls = []
    monkeypatch.setattr("directalign.engine.run.return_freed_buffers", lambda: calls.append(True))
    for name, release in (("default", None), ("released", True)):
        overrides = {"output_dir": str(tmp_path / name), **({"release_freed_memory": release} if release else {})}
        with open_run(load_config("train", overrides=overrides)):
            pass
    assert calls == [True]
