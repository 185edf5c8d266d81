"""Moved to :mod:`surerank.rankers.encoders.embedding`; this alias keeps the old import path working and warns once."""

from __future__ import annotations

import warnings

from surerank.rankers.encoders.embedding import EmbeddingRanker, b_count

warnings.warn("surerank.rankers.embedding moved to surerank.rankers.encoders.embedding",
              DeprecationWarning, stacklevel=2)

__all__ = ["EmbeddingRanker", "b_count"]
