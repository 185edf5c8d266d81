"""Score arithmetic shared by rankers and the service (core: imports nothing of surerank)."""

from __future__ import annotations

import math


def sigmoid(x: float) -> float:
    """The logistic function, without overflow for large negative ``x`` (``exp(-x)`` would overflow)."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)
