"""Moved to :mod:`surerank.rankers.llm.pointwise`; this alias keeps the old import path working and warns once."""

from __future__ import annotations

import warnings

from surerank.rankers.llm.pointwise import PointwiseLLMRanker, QueryLikelihoodRanker

warnings.warn("surerank.rankers.llm_pointwise moved to surerank.rankers.llm.pointwise",
              DeprecationWarning, stacklevel=2)

__all__ = ["PointwiseLLMRanker", "QueryLikelihoodRanker"]
