"""The one ranker protocol.

Every ranker, whatever its family, is called the same way::

    ranked = ranker.rank("query", ["doc a", "doc b"])          # one query
    ranked_lists = ranker.rank_many([query_1, query_2, ...])   # many queries, batched where it pays

Subclasses implement :meth:`BaseRanker._rank_queries` (comparison-based rankers) or
:meth:`ScoringRanker.score` (score-based rankers); the base class normalises the input, handles
empty candidate lists and records the wall time in the cost trace.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from surerank.errors import InputError
from surerank.types import Candidate, Cost, Query, RankedList, Truncation

DocumentsLike = Iterable[str | Candidate | Mapping[str, Any]]
QueryLike = Query | tuple[str, DocumentsLike] | Mapping[str, Any]


@runtime_checkable
class Ranker(Protocol):
    """What the rest of surerank (trust, serve, batch, eval) relies on."""

    name: str

    def rank(self, query: str | Query, candidates: DocumentsLike | None = None) -> RankedList: ...

    def rank_many(self, queries: Iterable[QueryLike]) -> list[RankedList]: ...


def as_query(query: str | Query, candidates: DocumentsLike | None = None, id: str = "q0") -> Query:
    if isinstance(query, Query):
        if candidates is not None:
            return Query(text=query.text, candidates=tuple(Query.from_texts("", candidates).candidates),
                         id=query.id, metadata=query.metadata)
        return query
    if not isinstance(query, str):
        raise InputError(f"query: expected a string or a Query, got {type(query).__name__}")
    return Query.from_texts(query, candidates if candidates is not None else [], id=id)


def coerce_query(item: QueryLike, position: int) -> Query:
    """Accept a Query, a (text, documents) pair, or a JSONL-style mapping {qid, query, candidates}."""
    if isinstance(item, Query):
        return item
    if isinstance(item, tuple) and len(item) == 2:
        return as_query(item[0], item[1], id=str(position))
    if isinstance(item, Mapping):
        if not isinstance(item.get("query"), str):
            raise InputError(f"queries[{position}]: a mapping needs a string field 'query'")
        return as_query(item["query"], item.get("candidates", []), id=str(item.get("qid", position)))
    raise InputError(f"queries[{position}]: expected a Query, a (query, documents) pair or a mapping")


class BaseRanker(ABC):
    """Shared behaviour of all rankers: input normalisation, empty lists, timing."""

    name: ClassVar[str] = "base"

    def rank(self, query: str | Query, candidates: DocumentsLike | None = None) -> RankedList:
        return self.rank_many([as_query(query, candidates)])[0]

    def rank_many(self, queries: Iterable[QueryLike]) -> list[RankedList]:
        normalised = [coerce_query(q, i) for i, q in enumerate(queries)]
        results: list[RankedList | None] = [None] * len(normalised)
        work = [i for i, q in enumerate(normalised) if q.candidates]
        for i, q in enumerate(normalised):
            if not q.candidates:
                results[i] = RankedList(query=q, items=[], ranker=self.name)
        if work:
            start = time.perf_counter()
            ranked = self._rank_queries([normalised[i] for i in work])
            elapsed = time.perf_counter() - start
            if len(ranked) != len(work):
                raise RuntimeError(f"{self.name}: returned {len(ranked)} lists for {len(work)} queries")
            for i, r in zip(work, ranked):
                if not r.cost.latency_s:
                    r.cost.latency_s = elapsed / len(work)
                r.ranker = r.ranker or self.name
                results[i] = r
        return [r for r in results if r is not None]

    @abstractmethod
    def _rank_queries(self, queries: list[Query]) -> list[RankedList]:
        """Rank non-empty queries; the base class has already validated them."""

    def describe(self) -> dict[str, Any]:
        """Configuration recorded next to results and calibration artifacts."""
        return {"ranker": self.name}


@dataclass
class Scores:
    """What a score-based ranker returns for one query."""

    values: np.ndarray
    truncations: Sequence[Truncation | None] | None = None
    cost: Cost = field(default_factory=Cost)
    info: dict[str, Any] = field(default_factory=dict)


class ScoringRanker(BaseRanker):
    """A ranker that gives every candidate an independent score (lexical, embedding, cross-encoder…)."""

    @abstractmethod
    def score(self, queries: list[Query]) -> list[Scores]:
        """Score every candidate of every query; many queries at once so backends can batch."""

    def _rank_queries(self, queries: list[Query]) -> list[RankedList]:
        out = []
        for query, scores in zip(queries, self.score(queries), strict=True):
            ranked = RankedList.from_scores(
                query, np.asarray(scores.values, dtype=float).tolist(), ranker=self.name,
                cost=scores.cost, truncations=scores.truncations,
            )
            ranked.info.update(scores.info)
            out.append(ranked)
        return out
