"""Moved to :mod:`surerank.rankers.encoders.t5`; this alias keeps the old import path working and warns once."""

from __future__ import annotations

import warnings

from surerank.rankers.encoders.t5 import BACKENDS, VARIANTS, T5Ranker, T5Variant

warnings.warn("surerank.rankers.t5 moved to surerank.rankers.encoders.t5",
              DeprecationWarning, stacklevel=2)

__all__ = ["BACKENDS", "VARIANTS", "T5Ranker", "T5Variant"]
