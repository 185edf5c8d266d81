"""Moved to :mod:`surerank.rankers.llm.setwise`; this alias keeps the old import path working and warns once."""

from __future__ import annotations

import warnings

from surerank.rankers.llm.setwise import SetwiseLLMRanker

warnings.warn("surerank.rankers.llm_setwise moved to surerank.rankers.llm.setwise",
              DeprecationWarning, stacklevel=2)

__all__ = ["SetwiseLLMRanker"]
