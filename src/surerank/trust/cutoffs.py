"""Adaptive cutoffs: choose per query how many passages to keep, from the shape of its scores.

No labels needed (unlike :mod:`surerank.trust.conformal`), no guarantee either; every method returns a k
within ``k_min..k_max`` (clamped to the list length):

* ``gap``: cut at the largest drop between consecutive scores;
* ``zscore``: keep the items whose score is at least ``z`` standard deviations above the list mean
  (the z-score elbow: outliers above the bulk of the candidates);
* ``elbow``: the knee of the sorted score curve (largest distance below the chord from first to last point,
  both axes scaled to [0, 1]);
* ``mass``: keep items until their cumulative probability reaches ``mass`` of the list's total, i.e. until
  the expected share of the list's relevant passages kept reaches ``mass`` (needs calibrated probabilities);
* ``threshold``: keep the items with probability >= ``threshold`` (needs calibrated probabilities).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from surerank.errors import InputError
from surerank.types import RankedList

METHODS = ("gap", "zscore", "elbow", "mass", "threshold")
NEEDS_PROBABILITY = ("mass", "threshold")
# the keyword argument of AdaptiveCutoff that the parameter in "method:parameter" sets
PARAMETER_NAMES = {"zscore": "z", "mass": "mass", "threshold": "threshold"}


def parse_cutoff(text: str, field: str = "cutoff") -> tuple[str, float | None]:
    """Read ``conformal`` or ``METHOD[:PARAMETER]`` (e.g. ``zscore:1.5``), naming ``field`` in every refusal.

    The one reader of a cutoff spelled as text, for the command line (``--cutoff``) and the service
    (``surerank.cutoff``); the parameter is checked against its range here, not when the cutoff is fitted.
    """
    method, _, parameter = text.partition(":")
    method = method.strip().lower()
    if method != "conformal" and method not in METHODS:
        raise InputError(f"{field}: {text!r} is not one of conformal, {', '.join(METHODS)} "
                         "(optionally method:parameter, e.g. threshold:0.7)")
    if not parameter:
        return method, None
    if method not in PARAMETER_NAMES:
        raise InputError(f"{field}: method {method!r} takes no parameter")
    try:
        value = float(parameter)
    except ValueError:
        raise InputError(f"{field}: parameter {parameter!r} of {method!r} is not a number") from None
    if value != value or value < 0 or (method in NEEDS_PROBABILITY and value > 1):
        raise InputError(f"{field}: parameter {value} of {method!r} is out of range "
                         f"({'0 to 1' if method in NEEDS_PROBABILITY else '0 or more'})")
    return method, value


def _bounds(n: int, k_min: int, k_max: int | None) -> tuple[int, int]:
    if k_min < 0:
        raise InputError(f"k_min: must be >= 0, got {k_min}")
    hi = n if k_max is None else min(n, k_max)
    if k_max is not None and k_max < k_min:
        raise InputError(f"k_max: must be >= k_min ({k_min}), got {k_max}")
    return min(k_min, n), hi


def largest_gap(values: ArrayLike, k_min: int = 1, k_max: int | None = None) -> int:
    """k such that the drop between item k and k+1 is the largest, for k in k_min..k_max."""
    v = np.asarray(values, dtype=float)
    lo, hi = _bounds(v.size, k_min, k_max)
    ks = np.arange(max(lo, 1), min(hi, v.size - 1) + 1)  # a gap after item k exists for k <= n - 1
    if ks.size == 0:
        return hi  # no gap inside the bounds: keep as many as allowed
    gaps = v[ks - 1] - v[ks]
    return int(ks[int(np.argmax(gaps))])


def zscore_cut(values: ArrayLike, z: float = 1.0, k_min: int = 1, k_max: int | None = None) -> int:
    """Number of items with score >= mean + z * std of the list, clamped to k_min..k_max."""
    v = np.asarray(values, dtype=float)
    lo, hi = _bounds(v.size, k_min, k_max)
    sd = v.std() if v.size else 0.0
    k = int(np.sum(v >= v.mean() + z * sd)) if sd > 0 else v.size
    return int(np.clip(k, lo, hi))


def elbow(values: ArrayLike, k_min: int = 1, k_max: int | None = None) -> int:
    """Knee of the descending score curve: the point farthest below the first-to-last chord."""
    v = np.asarray(values, dtype=float)
    lo, hi = _bounds(v.size, k_min, k_max)
    if v.size < 3 or v[0] == v[-1]:
        return int(np.clip(v.size, lo, hi))
    x = np.linspace(0, 1, v.size)
    y = (v - v[-1]) / (v[0] - v[-1])
    below = (1 - x) - y  # chord from (0, 1) to (1, 0), minus the curve
    k = int(np.argmax(below)) + 1  # keep through the knee
    return int(np.clip(k, lo, hi))


def cumulative_mass(
    probabilities: ArrayLike, mass: float = 0.9, k_min: int = 1, k_max: int | None = None
) -> int:
    """Smallest k whose cumulative probability reaches ``mass`` of the list's total."""
    p = np.asarray(probabilities, dtype=float)
    if not 0 < mass <= 1:
        raise InputError(f"mass: must be in (0, 1], got {mass}")
    lo, hi = _bounds(p.size, k_min, k_max)
    total = p.sum()
    if total <= 0:
        return lo
    k = int(np.searchsorted(np.cumsum(p), mass * total - 1e-12 * total)) + 1
    return int(np.clip(k, lo, hi))


def probability_threshold(probabilities: ArrayLike, threshold: float = 0.5, k_min: int = 1,
                          k_max: int | None = None) -> int:
    """Number of items with probability >= ``threshold``, clamped to k_min..k_max."""
    p = np.asarray(probabilities, dtype=float)
    if not 0 <= threshold <= 1:
        raise InputError(f"threshold: must be in [0, 1], got {threshold}")
    lo, hi = _bounds(p.size, k_min, k_max)
    return int(np.clip(int(np.sum(p >= threshold)), lo, hi))


@dataclass
class AdaptiveCutoff:
    """One adaptive method with its parameter; ``apply`` sets ``keep`` on the items."""

    method: str = "gap"
    k_min: int = 1
    k_max: int | None = None
    z: float = 1.0
    mass: float = 0.9
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"cutoff method: must be one of {METHODS}, got {self.method!r}")
        _bounds(0, self.k_min, self.k_max)

    def choose_k(self, scores: ArrayLike, probabilities: ArrayLike | None = None) -> int:
        if self.method in NEEDS_PROBABILITY:
            if probabilities is None:
                raise InputError(f"cutoff {self.method!r}: needs calibrated probabilities "
                                 "(fit one with `surerank calibrate` and pass it)")
            if self.method == "mass":
                return cumulative_mass(probabilities, self.mass, self.k_min, self.k_max)
            return probability_threshold(probabilities, self.threshold, self.k_min, self.k_max)
        if self.method == "gap":
            return largest_gap(scores, self.k_min, self.k_max)
        if self.method == "zscore":
            return zscore_cut(scores, self.z, self.k_min, self.k_max)
        return elbow(scores, self.k_min, self.k_max)

    def apply(self, lists: Sequence[RankedList]) -> Sequence[RankedList]:
        for ranked in lists:
            probs = None
            if ranked.items and all(i.probability is not None for i in ranked.items):
                probs = [float(i.probability) for i in ranked.items]  # type: ignore[arg-type]
            k = self.choose_k(ranked.scores, probs) if ranked.items else 0
            for position, item in enumerate(ranked.items):
                item.keep = position < k
            ranked.info["cutoff"] = {"method": self.method, "kept": k, **self.params()}
        return lists

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"k_min": self.k_min, "k_max": self.k_max}
        if self.method == "zscore":
            out["z"] = self.z
        elif self.method == "mass":
            out["mass"] = self.mass
        elif self.method == "threshold":
            out["threshold"] = self.threshold
        return out
