"""Moved to :mod:`surerank.rankers.generated.mbr`; this alias keeps the old import path working and warns once."""

from __future__ import annotations

import warnings

from surerank.rankers.generated.mbr import MBRRanker, RankerRef, make_ranker

warnings.warn("surerank.rankers.mbr moved to surerank.rankers.generated.mbr",
              DeprecationWarning, stacklevel=2)

__all__ = ["MBRRanker", "RankerRef", "make_ranker"]
