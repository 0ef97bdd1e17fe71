"""Small statistics shared by the quality reports: the Wilson interval and JSON-ready conversion."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np


def wilson_interval(successes: float, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson 1927).

    (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), p = successes/total, z the normal quantile at
    (1 + confidence)/2. Better than the normal interval near 0 and 1 and for small n. (nan, nan) when n = 0.
    """
    if total <= 0:
        return float("nan"), float("nan")
    z = NormalDist().inv_cdf((1.0 + confidence) / 2.0)
    p = successes / total
    denominator = 1.0 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    # At p = 0 or 1 the bound is exactly 0 or 1; floating point would leave a 1e-17 residue.
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= total else min(1.0, centre + half)
    return low, high


def json_ready(value: Any) -> Any:
    """A value json.dumps accepts: NaN becomes None, numpy scalars and arrays Python ones, keys text."""
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        return json_ready(value.item())
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value
