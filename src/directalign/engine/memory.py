"""A run's memory habit: the buffers a step frees go back to the system, so the peak is what is live.

glibc's malloc serves an allocation above its mmap threshold with a mapping of its own and unmaps it on free, but
it raises the threshold to the size of every larger buffer freed so far (up to 32 MiB on 64-bit). After the first
step the activations of a micro-batch (1-30 MiB each for the embedded model) come from the heap instead, and a
freed one below a live one stays resident: the high-water mark grows far above what is live at any moment.
Fixing the threshold at 1 MiB (what MALLOC_MMAP_THRESHOLD_=1048576 does at start-up) keeps each such buffer in
its own mapping. Measured by benchmarks/memory_floor.py on the embedded model (docs/performance.md): the DPO
benchmark run's peak went from 2306 MB to 1840 MB, 1.09x the floor of what it must hold, with no difference in
speed beyond the noise of the machine at its micro-batches of 2 pairs. Every buffer above 1 MiB is then a fresh
mapping whose pages fault in on first use, which costs time where micro-batches are large: the main job
(micro-batches of 8 records) peaked at 2.0 GB instead of 2.9 GB but its steps took 7.4-8.4 s instead of
5.6-6.2 s. So it is a run's choice (`release_freed_memory: true`), off by default. A MALLOC_MMAP_THRESHOLD_ the
user sets wins; other C libraries (musl) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
THRESHOLD = 1 << 20


def return_freed_buffers() -> bool:
    """Fix glibc's mmap threshold at 1 MiB for this process (module docstring); True when it was set."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or not _glibc():
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD))


def _glibc() -> bool:
    return sys.platform.startswith("linux") and "CS_GNU_LIBC_VERSION" in os.confstr_names and \
        "glibc" in (os.confstr("CS_GNU_LIBC_VERSION") or "")
