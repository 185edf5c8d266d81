"""Calibration metrics: how far predicted probabilities of relevance are from observed frequencies.

Plain numpy on flat arrays of (probability, label) pairs, so the same functions score a calibrator, a
run file with probabilities, or a synthetic test.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from surerank.errors import InputError

LOG_LOSS_EPS = 1e-15


def _pairs(probabilities: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probabilities, dtype=float).ravel()
    y = np.asarray(labels, dtype=float).ravel()
    if p.shape != y.shape:
        raise InputError(f"probabilities: {p.size} values for {y.size} labels")
    if p.size == 0:
        raise InputError("probabilities: no (probability, label) pairs to score")
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise InputError("probabilities: every value must be a finite number in [0, 1]")
    if np.any((y != 0) & (y != 1)):
        raise InputError("labels: every label must be 0 or 1")
    return p, y


def expected_calibration_error(probabilities: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """ECE with ``n_bins`` equal-width bins on [0, 1]: sum_b |B|/n * |mean(y in B) - mean(p in B)|.

    A probability of exactly 1 falls in the last bin.
    """
    p, y = _pairs(probabilities, labels)
    if n_bins < 1:
        raise InputError(f"n_bins: must be >= 1, got {n_bins}")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    sum_p = np.bincount(bins, weights=p, minlength=n_bins)
    sum_y = np.bincount(bins, weights=y, minlength=n_bins)
    return float(np.abs(sum_y - sum_p).sum() / p.size)


def brier_score(probabilities: ArrayLike, labels: ArrayLike) -> float:
    """Mean squared difference between probability and 0/1 label."""
    p, y = _pairs(probabilities, labels)
    return float(np.mean((p - y) ** 2))


def log_loss(probabilities: ArrayLike, labels: ArrayLike, eps: float = LOG_LOSS_EPS) -> float:
    """Mean negative log-likelihood; probabilities are clipped to [eps, 1 - eps] so 0 and 1 stay finite."""
    p, y = _pairs(probabilities, labels)
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def calibration_report(probabilities: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> dict[str, float]:
    """ECE, Brier score, log loss, and the mean probability beside the base rate."""
    p, y = _pairs(probabilities, labels)
    return {
        "ece": expected_calibration_error(p, y, n_bins),
        "brier": brier_score(p, y),
        "log_loss": log_loss(p, y),
        "mean_probability": float(p.mean()),
        "base_rate": float(y.mean()),
        "pairs": int(p.size),
    }


def reliability_bins(probabilities: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> list[dict[str, float]]:
    """Per non-empty equal-width bin: its edges, pair count, mean probability and observed relevant share.

    The data of a reliability diagram (empty bins are left out; each bin carries its own edges).
    """
    p, y = _pairs(probabilities, labels)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    sum_p = np.bincount(bins, weights=p, minlength=n_bins)
    sum_y = np.bincount(bins, weights=y, minlength=n_bins)
    return [
        {"low": b / n_bins, "high": (b + 1) / n_bins, "count": int(counts[b]),
         "confidence": float(sum_p[b] / counts[b]), "observed": float(sum_y[b] / counts[b])}
        for b in range(n_bins) if counts[b]
    ]
