"""Moved to :mod:`surerank.rankers.llm.listwise`; this alias keeps the old import path working and warns once."""

from __future__ import annotations

import warnings

from surerank.rankers.llm.listwise import FirstLLMRanker, ListwiseLLMRanker, rank_windows, window_starts

warnings.warn("surerank.rankers.llm_listwise moved to surerank.rankers.llm.listwise",
              DeprecationWarning, stacklevel=2)

__all__ = ["FirstLLMRanker", "ListwiseLLMRanker", "rank_windows", "window_starts"]
