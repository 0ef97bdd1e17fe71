"""What this CPU does natively, and what bf16 costs on one that does not.

bf16 autocast on a CPU without bf16 instructions (AVX512_BF16 or AMX-BF16; most AVX2-only machines) runs its
matrix products through conversions, several times slower than fp32. `native_bf16()` reads the CPU's flags
(/proc/cpuinfo on Linux, else torch's own capability string); `bf16_slowdown()` times a small matmul in both
precisions once per machine and caches the ratio as JSON under the cache folder; `bf16_warning()` is the line a
run prints when `bf16: true` meets such a CPU.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import time
from pathlib import Path

import torch

NATIVE_FLAGS = ("avx512_bf16", "amx_bf16")
CACHE_FILE = "cpu_bf16.json"


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


@functools.cache
def native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512_BF16 or AMX-BF16)."""
    flags = cpu_flags()
    if flags:
        return any(flag in flags for flag in NATIVE_FLAGS)
    capability = torch.backends.cpu.get_cpu_capability().lower()  # "AVX512", "AVX2", "DEFAULT", ...
    return "amx" in capability or "bf16" in capability


def _time_matmul(dtype: torch.dtype, size: int, repeats: int) -> float:
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best


def _cache_path() -> Path:
    from directalign.models.loading import directalign_home

    return directalign_home() / CACHE_FILE


def _machine() -> str:
    return f"{platform.processor() or platform.machine()}|{torch.__version__}|{torch.get_num_threads()}"


def bf16_slowdown(size: int = 256, repeats: int = 5, cache: bool = True) -> float:
    """bf16 matmul time / fp32 matmul time on this CPU (best of `repeats`), measured once and cached."""
    path = _cache_path()
    if cache:
        try:
            saved = json.loads(path.read_text())
            if saved.get("machine") == _machine() and saved.get("size") == size:
                return float(saved["slowdown"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    slowdown = _time_matmul(torch.bfloat16, size, repeats) / _time_matmul(torch.float32, size, repeats)
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"machine": _machine(), "size": size, "slowdown": slowdown}))
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache only costs the measurement next time
    return slowdown


def bf16_warning(device: torch.device | str) -> str | None:
    """The warning for bf16 autocast on a CPU without native bf16, with the measured slowdown; None otherwise."""
    if torch.device(device).type != "cpu" or native_bf16():
        return None
    slowdown = bf16_slowdown()
    if slowdown < 1.2:
        return None
    return (f"warning: bf16 on this CPU (no AVX512_BF16 or AMX) is emulated: a bf16 matmul took {slowdown:.1f}x "
            "the fp32 time here; set bf16 false (fp32) for speed")
