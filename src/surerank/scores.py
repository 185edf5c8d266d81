"""Score arithmetic shared by rankers and the service (core: imports nothing of surerank)."""

from __future__ import annotations

import math

import numpy as np


def sigmoid(x: float) -> float:
    """The logistic function, without overflow for large negative ``x`` (``exp(-x)`` would overflow)."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row divided by its length (a zero row stays zero): what a cosine compares."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
