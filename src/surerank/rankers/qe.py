"""Moved to :mod:`surerank.rankers.generated.qe`; this alias keeps the old import path working and warns once."""

from __future__ import annotations

import warnings

from surerank.rankers.generated.qe import (
    EXTRA_FEATURES,
    FIT_METHODS,
    FORMAT,
    GRID,
    NORMALISATIONS,
    QERanker,
    load_weights,
    normalise_columns,
)

warnings.warn("surerank.rankers.qe moved to surerank.rankers.generated.qe",
              DeprecationWarning, stacklevel=2)

__all__ = [
    "EXTRA_FEATURES",
    "FIT_METHODS",
    "FORMAT",
    "GRID",
    "NORMALISATIONS",
    "QERanker",
    "load_weights",
    "normalise_columns",
]
