"""Moved to :mod:`surerank.rankers.generated.mbr` (``make_ranker`` and ``RankerRef`` to :mod:`surerank.rankers.nested`);
this alias keeps the old import path working and warns once."""

from __future__ import annotations

import warnings

from surerank.rankers.generated.mbr import MBRRanker
from surerank.rankers.nested import RankerRef, make_ranker

warnings.warn("surerank.rankers.mbr moved to surerank.rankers.generated.mbr",
              DeprecationWarning, stacklevel=2)

__all__ = ["MBRRanker", "RankerRef", "make_ranker"]
