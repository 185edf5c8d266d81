"""Coordinate ascent over the weights of a linear combination: the one search that tunes weights directly on a
metric (QE features in :mod:`surerank.rankers.generated.qe`, fusion members in :mod:`surerank.train.fusion`).

Ranking metrics are step functions of the weights, so gradients say nothing; a grid per weight, one weight at a
time, is the classic remedy (Metzler and Croft 2007) and needs only the objective.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Weight values tried for one coordinate (inputs are per-list normalised: the scale is shared).
GRID = np.concatenate([-np.geomspace(10.0, 0.01, 13), [0.0], np.geomspace(0.01, 10.0, 13)])


def coordinate_ascent(objective: Callable[[np.ndarray], float], k: int, grid: np.ndarray = GRID,
                      passes: int = 10) -> tuple[np.ndarray, float]:
    """Maximise ``objective(w)`` over ``k`` weights: start from the best single coordinate, then set one weight at
    a time to its best ``grid`` value until a pass changes nothing (strict gains only, so the first of equally good
    weights is kept).  Returns the weights scaled to a largest magnitude of 1 (scale never changes an order) and the
    objective they reach."""
    starts = [np.eye(k)[f] for f in range(k)]
    w = max(starts, key=objective)
    best = objective(w)
    for _ in range(passes):
        improved = False
        for f in range(k):
            for value in grid:
                trial = w.copy()
                trial[f] = value
                if not trial.any():
                    continue
                score = objective(trial)
                if score > best + 1e-12:
                    best, w, improved = score, trial, True
        if not improved:
            break
    return w / np.abs(w).max(), float(best)


__all__ = ["GRID", "coordinate_ascent"]
