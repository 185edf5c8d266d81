"""Moved to :mod:`surerank.rankers.generated.vote`; this alias keeps the old import path working and warns once."""

from __future__ import annotations

import warnings

from surerank.rankers.generated.vote import VoteRanker

warnings.warn("surerank.rankers.vote moved to surerank.rankers.generated.vote",
              DeprecationWarning, stacklevel=2)

__all__ = ["VoteRanker"]
