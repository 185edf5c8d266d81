"""Moved to :mod:`surerank.rankers.generated.coder_reviewer`;
this alias keeps the old import path working and warns once."""

from __future__ import annotations

import warnings

from surerank.rankers.generated.coder_reviewer import CODER_PREFIX, MODES, REVIEWER_PREFIX, CoderReviewerRanker

warnings.warn("surerank.rankers.coder_reviewer moved to surerank.rankers.generated.coder_reviewer",
              DeprecationWarning, stacklevel=2)

__all__ = ["CODER_PREFIX", "MODES", "REVIEWER_PREFIX", "CoderReviewerRanker"]
