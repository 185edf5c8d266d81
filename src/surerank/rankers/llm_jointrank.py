"""Moved to :mod:`surerank.rankers.llm.jointrank`; this alias keeps the old import path working and warns once."""

from __future__ import annotations

import warnings

from surerank.rankers.llm.jointrank import JointRankLLMRanker, block_design, connected

warnings.warn("surerank.rankers.llm_jointrank moved to surerank.rankers.llm.jointrank",
              DeprecationWarning, stacklevel=2)

__all__ = ["JointRankLLMRanker", "block_design", "connected"]
