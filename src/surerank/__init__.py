"""surerank: rerank search results and RAG context, and say how far to trust each ranking."""

from __future__ import annotations

from typing import Any

from surerank.errors import (
    InputError,
    LimitExceededError,
    MissingDependencyError,
    SureRankError,
    UnknownRankerError,
)
from surerank.ranker import BaseRanker, Ranker, ScoringRanker
from surerank.types import Candidate, Cost, Query, RankedItem, RankedList, Truncation

__version__ = "0.1.0"


def Reranker(name: str = "embedding", **options: Any) -> BaseRanker:  # noqa: N802 - reads as a class
    """Create a registered ranker by name: ``Reranker("embedding").rank("query", ["doc a", "doc b"])``."""
    from surerank.registry import create

    return create(name, **options)


__all__ = [
    "BaseRanker", "Candidate", "Cost", "InputError", "LimitExceededError", "MissingDependencyError",
    "Query", "RankedItem", "RankedList", "Ranker", "Reranker", "ScoringRanker", "SureRankError",
    "Truncation", "UnknownRankerError", "__version__",
]
