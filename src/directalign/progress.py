"""Progress bars (tqdm: count, rate, ETA) for every step that can take more than a few seconds: reading,
parsing and tokenising large files, the reference precompute, held-out evaluation, sampling, judging, sweeps.

A bar appears only when its step lasts longer than DELAY_S (short steps stay quiet), only on the main process
of a multi-process run (RANK 0), and is removed when done so that the console keeps the results.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from tqdm.auto import tqdm

DELAY_S = 2.0


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str, unit: str = "it",
        enabled: bool = True) -> tqdm:
    """A tqdm bar with rate and ETA that shows after DELAY_S, on the main process only."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, delay=DELAY_S, leave=False, dynamic_ncols=True,
                disable=not (enabled and is_main_process()))
