"""Calibration maps: ranker score → probability that the candidate is relevant.

Three maps, all monotone non-decreasing in the score, so applying one never changes a ranking:

* ``platt``: p = sigmoid(a * score + b) with a >= 0, fitted by maximum likelihood (Platt, 1999, with his
  smoothed targets to avoid over-confident 0/1 fits on small sets);
* ``temperature``: p = sigmoid(score / T), one parameter; it assumes the score is already a logit whose
  zero is the decision boundary (cross-encoders, LLM yes/no logits).  For cosine or BM25 scores use
  ``platt``, which also learns the offset;
* ``isotonic``: the pool-adjacent-violators fit (scipy's ``isotonic_regression``), interpolated linearly
  between blocks and constant beyond the fitted range.  Flexible, needs more labelled pairs.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import isotonic_regression, minimize, minimize_scalar
from scipy.special import expit, log_expit

from surerank.errors import InputError
from surerank.types import RankedList

logger = logging.getLogger(__name__)


def _fit_arrays(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=float).ravel()
    y = np.asarray(labels, dtype=float).ravel()
    if s.shape != y.shape:
        raise InputError(f"calibration: {s.size} scores for {y.size} labels")
    if s.size < 2:
        raise InputError(f"calibration: needs at least 2 labelled pairs, got {s.size}")
    if not np.all(np.isfinite(s)):
        raise InputError("calibration: every score must be finite")
    if np.any((y != 0) & (y != 1)):
        raise InputError("calibration: labels must be 0 or 1")
    if y.min() == y.max():
        raise InputError(
            f"calibration: all {y.size} labelled pairs are {'relevant' if y[0] else 'not relevant'}; "
            "a calibration map needs both relevant and non-relevant examples"
        )
    return s, y


class Calibrator(ABC):
    """A fitted, serialisable, monotone map from raw score to probability of relevance."""

    method: ClassVar[str]

    @abstractmethod
    def fit(self, scores: ArrayLike, labels: ArrayLike) -> Calibrator: ...

    @abstractmethod
    def predict(self, scores: ArrayLike) -> np.ndarray: ...

    @abstractmethod
    def params(self) -> dict[str, Any]: ...

    @classmethod
    @abstractmethod
    def from_params(cls, params: dict[str, Any]) -> Calibrator: ...

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "params": self.params()}

    def apply(self, lists: Sequence[RankedList]) -> Sequence[RankedList]:
        """Fill ``probability`` on every item; order, ranks and scores are left exactly as they were."""
        for ranked in lists:
            if not ranked.items:
                continue
            probs = self.predict([item.score for item in ranked.items])
            for item, p in zip(ranked.items, probs, strict=True):
                item.probability = float(p)
            ranked.info["calibration"] = self.method
        return lists


class PlattCalibrator(Calibrator):
    method = "platt"

    def __init__(self, a: float | None = None, b: float | None = None, smooth: bool = True) -> None:
        self.a, self.b, self.smooth = a, b, smooth

    def fit(self, scores: ArrayLike, labels: ArrayLike) -> PlattCalibrator:
        s, y = _fit_arrays(scores, labels)
        if self.smooth:  # Platt's targets: (N+ + 1)/(N+ + 2) and 1/(N- + 2)
            n_pos, n_neg = y.sum(), y.size - y.sum()
            y = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
        mu, sd = s.mean(), s.std() or 1.0
        z = (s - mu) / sd  # fit on standardised scores for a well-conditioned problem

        def nll(w: np.ndarray) -> tuple[float, np.ndarray]:
            t = w[0] * z + w[1]
            loss = -np.sum(y * log_expit(t) + (1 - y) * log_expit(-t))
            r = expit(t) - y
            return float(loss), np.array([np.sum(r * z), np.sum(r)])

        # slope >= 0: a calibration map must not contradict the ranking it annotates
        w = minimize(nll, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B",
                     bounds=[(0.0, None), (None, None)]).x
        self.a = float(w[0] / sd)
        self.b = float(w[1] - w[0] * mu / sd)
        if self.a == 0:
            logger.warning("platt: fitted slope is 0: on these labels the scores carry no information "
                           "about relevance, every probability is the base rate")
        return self

    def predict(self, scores: ArrayLike) -> np.ndarray:
        if self.a is None or self.b is None:
            raise RuntimeError("platt calibrator is not fitted")
        return expit(self.a * np.asarray(scores, dtype=float) + self.b)

    def params(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "smooth": self.smooth}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> PlattCalibrator:
        return cls(a=float(params["a"]), b=float(params["b"]), smooth=bool(params.get("smooth", True)))


class TemperatureCalibrator(Calibrator):
    method = "temperature"

    def __init__(self, temperature: float | None = None) -> None:
        self.temperature = temperature

    def fit(self, scores: ArrayLike, labels: ArrayLike) -> TemperatureCalibrator:
        s, y = _fit_arrays(scores, labels)

        def nll(log_t: float) -> float:
            t = s / np.exp(log_t)
            return float(-np.sum(y * log_expit(t) + (1 - y) * log_expit(-t)))

        self.temperature = float(np.exp(minimize_scalar(nll, bounds=(-12, 12), method="bounded").x))
        return self

    def predict(self, scores: ArrayLike) -> np.ndarray:
        if self.temperature is None:
            raise RuntimeError("temperature calibrator is not fitted")
        return expit(np.asarray(scores, dtype=float) / self.temperature)

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TemperatureCalibrator:
        return cls(temperature=float(params["temperature"]))


class IsotonicCalibrator(Calibrator):
    method = "isotonic"

    def __init__(self, x: Sequence[float] | None = None, y: Sequence[float] | None = None) -> None:
        self.x = None if x is None else np.asarray(x, dtype=float)
        self.y = None if y is None else np.asarray(y, dtype=float)

    def fit(self, scores: ArrayLike, labels: ArrayLike) -> IsotonicCalibrator:
        s, lab = _fit_arrays(scores, labels)
        unique, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
        means = np.bincount(inverse, weights=lab) / counts
        fitted = isotonic_regression(means, weights=counts.astype(float), increasing=True).x
        # keep only the two ends of each constant block: same function, a small artifact
        keep = np.ones(unique.size, dtype=bool)
        if unique.size > 2:
            same_prev = np.r_[False, fitted[1:] == fitted[:-1]]
            same_next = np.r_[fitted[:-1] == fitted[1:], False]
            keep = ~(same_prev & same_next)
        self.x, self.y = unique[keep], np.clip(fitted[keep], 0.0, 1.0)
        return self

    def predict(self, scores: ArrayLike) -> np.ndarray:
        if self.x is None or self.y is None:
            raise RuntimeError("isotonic calibrator is not fitted")
        return np.interp(np.asarray(scores, dtype=float), self.x, self.y)

    def params(self) -> dict[str, Any]:
        return {"x": [float(v) for v in self.x] if self.x is not None else [],
                "y": [float(v) for v in self.y] if self.y is not None else []}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> IsotonicCalibrator:
        x, y = params.get("x"), params.get("y")
        if not x or not y or len(x) != len(y):
            raise InputError("isotonic calibration: params 'x' and 'y' must be non-empty and the same length")
        return cls(x=x, y=y)


CALIBRATORS: dict[str, type[Calibrator]] = {
    c.method: c for c in (PlattCalibrator, TemperatureCalibrator, IsotonicCalibrator)
}


def make_calibrator(method: str, **options: Any) -> Calibrator:
    if method not in CALIBRATORS:
        raise InputError(f"calibration method: must be one of {sorted(CALIBRATORS)}, got {method!r}")
    return CALIBRATORS[method](**options)


def fit_calibrator(method: str, scores: ArrayLike, labels: ArrayLike, **options: Any) -> Calibrator:
    """Fit a calibration map of the named method on flat (score, 0/1 label) pairs."""
    return make_calibrator(method, **options).fit(scores, labels)


def calibrator_from_dict(data: dict[str, Any]) -> Calibrator:
    method = data.get("method")
    if method not in CALIBRATORS:
        raise InputError(f"calibration.method: must be one of {sorted(CALIBRATORS)}, got {method!r}")
    return CALIBRATORS[method].from_params(dict(data.get("params") or {}))
