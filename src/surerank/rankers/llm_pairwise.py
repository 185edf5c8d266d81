"""Moved to :mod:`surerank.rankers.llm.pairwise`; this alias keeps the old import path working and warns once."""

from __future__ import annotations

import warnings

from surerank.rankers.llm.pairwise import SAMPLINGS, PairwiseLLMRanker, sample_pairs

warnings.warn("surerank.rankers.llm_pairwise moved to surerank.rankers.llm.pairwise",
              DeprecationWarning, stacklevel=2)

__all__ = ["SAMPLINGS", "PairwiseLLMRanker", "sample_pairs"]
