"""The first stage's own order as a ranker: a baseline, and a member for hybrid fusion."""

from __future__ import annotations

from typing import Any

import numpy as np

from surerank.errors import InputError
from surerank.ranker import Scores, ScoringRanker
from surerank.types import Query


class FirstStageRanker(ScoringRanker):
    """Scores candidates by a numeric metadata field (default ``bm25_score``), else by input order.

    Fusing this with a neural ranker is the usual hybrid: the retriever's corpus-wide statistics
    carry signal that a reranker looking at one list alone cannot see.
    """

    name = "first-stage"

    def __init__(self, field: str = "bm25_score", require_field: bool = False) -> None:
        self.field, self.require_field = field, require_field

    def describe(self) -> dict[str, Any]:
        return {"ranker": self.name, "field": self.field}

    def score(self, queries: list[Query]) -> list[Scores]:
        out = []
        for query in queries:
            present = [self.field in c.metadata for c in query.candidates]
            if all(present):
                values = np.array([float(c.metadata[self.field]) for c in query.candidates])
                source = self.field
            elif self.require_field or any(present):
                missing = [c.id for c, p in zip(query.candidates, present) if not p]
                raise InputError(
                    f"query {query.id!r}: candidates {missing[:5]} lack metadata field {self.field!r}"
                )
            else:
                values = -np.arange(len(query.candidates), dtype=float)
                source = "input order"
            out.append(Scores(values=values, info={"first_stage_source": source}))
        return out
