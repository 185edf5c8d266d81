"""Moved to :mod:`surerank.rankers.generated.execution`; this alias keeps the old import path working and warns once."""

from __future__ import annotations

import warnings

from surerank.rankers.generated.execution import (
    HARNESS_SOURCE,
    METHODS,
    TEST_PROMPT,
    CandidateRun,
    ExecutionRanker,
    SqlExecutionRanker,
    canonical_literal,
)

warnings.warn("surerank.rankers.execution moved to surerank.rankers.generated.execution",
              DeprecationWarning, stacklevel=2)

__all__ = [
    "HARNESS_SOURCE",
    "METHODS",
    "TEST_PROMPT",
    "CandidateRun",
    "ExecutionRanker",
    "SqlExecutionRanker",
    "canonical_literal",
]
