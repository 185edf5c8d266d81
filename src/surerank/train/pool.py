"""The round-trip filter of synthetic queries: keep a query only where its source passage comes back for it.

An LLM asked for a query a passage answers often writes one the passage does not answer better than others (a
generic question, a copy of the instructions).  InPars and UDAPDR keep a query only if a ranker over the whole
pool puts its source passage in the top k.  The first stage is BM25 over the corpus (the pool); the filter is
that same BM25 order by default, or any registered ranker re-ranking the first stage's candidates.  Every query
dropped is dropped for a named reason: ``no_match`` (the first stage finds nothing for it: no word of it is
in the pool), ``not_retrieved`` (the source is not among the first stage's ``depth`` candidates),
``not_in_top_k`` (it is, below rank ``k``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from surerank.errors import InputError
from surerank.rankers.bm25 import BM25Index
from surerank.rankers.nested import RankerRef, make_ranker
from surerank.types import Candidate, Cost, Query

logger = logging.getLogger(__name__)

DROP_REASONS = ("no_match", "not_retrieved", "not_in_top_k")


@dataclass
class Verdict:
    """One query's round trip: the source passage's rank under the filter (None: not ranked), the reason it
    was dropped (None: kept), and the first stage's candidates (the query's training list)."""

    query: Query
    source: str
    rank: int | None
    reason: str | None

    @property
    def kept(self) -> bool:
        return self.reason is None


@dataclass
class RoundTrip:
    """BM25 over the whole pool as the first stage; the source must rank within ``k`` under ``ranker`` (None:
    the first stage's own order) over the first stage's ``depth`` candidates."""

    corpus: Sequence[Candidate]
    k: int = 10
    depth: int = 100
    ranker: RankerRef | None = None
    cost: Cost = field(default_factory=Cost)

    def __post_init__(self) -> None:
        if self.k < 1 or self.depth < self.k:
            raise InputError(f"round trip: need 1 <= k <= depth, got k={self.k}, depth={self.depth}")
        self.index = BM25Index(self.corpus)
        self._filter = make_ranker(self.ranker, "filter") if self.ranker is not None else None

    def describe(self) -> dict[str, Any]:
        """What the summary records of the filter: which ranker, k, depth, the first stage's settings."""
        ranker: Any = "bm25-corpus" if self._filter is None else _describe(self._filter)
        return {"ranker": ranker, "k": self.k, "depth": self.depth, "first_stage": {"bm25": self.index.config},
                "pool": len(self.corpus)}

    def check(self, queries: Sequence[Query], sources: Sequence[str]) -> list[Verdict]:
        """The verdict of each query whose source passage is ``sources[i]``."""
        if len(queries) != len(sources):
            raise InputError("round trip: one source passage per query")
        retrieved = self.index.retrieve(queries, k=self.depth)
        ranks = self._ranks(retrieved, sources)
        verdicts = []
        for query, source, rank in zip(retrieved, sources, ranks):
            if not query.candidates:
                reason: str | None = "no_match"
            elif rank is None:
                reason = "not_retrieved"
            else:
                reason = "not_in_top_k" if rank > self.k else None
            verdicts.append(Verdict(query=query, source=source, rank=rank, reason=reason))
        return verdicts

    def _ranks(self, retrieved: Sequence[Query], sources: Sequence[str]) -> list[int | None]:
        """The source's 1-based rank in each list: the first stage's order, or the filter ranker's over it."""
        if self._filter is None:
            return [_rank_of(source, [c.id for c in q.candidates]) for q, source in zip(retrieved, sources)]
        ranks: list[int | None] = [None] * len(retrieved)
        todo = [i for i, q in enumerate(retrieved) if any(c.id == sources[i] for c in q.candidates)]
        for i, ranked in zip(todo, self._filter.rank_many([retrieved[i] for i in todo])):
            ranks[i] = _rank_of(sources[i], ranked.ids)
            self.cost = self.cost.add(ranked.cost)
        return ranks


def _rank_of(source: str, ids: Sequence[str]) -> int | None:
    ids = list(ids)
    return ids.index(source) + 1 if source in ids else None


def _describe(ranker: Any) -> Any:
    describe = getattr(ranker, "describe", None)
    return describe() if callable(describe) else type(ranker).__name__


__all__ = ["DROP_REASONS", "RoundTrip", "Verdict"]
