"""A ranker that runs other rankers and fuses their lists (RRF, CombSUM, CombMNZ)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from surerank.aggregate.fusion import FUSION_METHODS, NORMALISATIONS, fuse
from surerank.errors import InputError
from surerank.ranker import BaseRanker
from surerank.rankers.nested import RankerRef, make_ranker
from surerank.types import Cost, Query, RankedList


class FusionRanker(BaseRanker):
    """``Reranker("fusion", rankers=["first-stage", "embedding"], method="rrf")``: a retriever + reranker hybrid.

    ``rankers`` items are registered names, ``{"name": ..., **options}`` mappings, or ranker objects.
    """

    name = "fusion"

    def __init__(
        self,
        rankers: Sequence[RankerRef] = ("first-stage", "embedding"),
        method: str = "rrf",
        norm: str = "minmax",
        weights: Sequence[float] | None = None,
        k: int = 60,
    ) -> None:
        if method not in FUSION_METHODS:
            raise InputError(f"fusion: unknown method {method!r}; use one of {', '.join(FUSION_METHODS)}")
        if norm not in NORMALISATIONS:
            raise InputError(f"fusion: unknown norm {norm!r}; use one of {', '.join(NORMALISATIONS)}")
        if isinstance(rankers, str):
            rankers = [r.strip() for r in rankers.split(",") if r.strip()]
        if len(rankers) < 1:
            raise InputError("fusion: 'rankers' needs at least one ranker")
        if weights is not None and len(weights) != len(rankers):
            raise InputError(f"fusion: {len(weights)} weights for {len(rankers)} rankers")
        self.members: list[BaseRanker] = [make_ranker(ref, f"rankers[{i}]") for i, ref in enumerate(rankers)]
        self.method, self.norm, self.weights, self.k = method, norm, weights, k

    def describe(self) -> dict[str, Any]:
        return {"ranker": self.name, "method": self.method, "norm": self.norm, "weights": self.weights,
                "k": self.k, "members": [m.describe() for m in self.members]}

    def _rank_queries(self, queries: list[Query]) -> list[RankedList]:
        member_lists = [member.rank_many(queries) for member in self.members]
        out = []
        for position, query in enumerate(queries):
            lists = [ranked[position] for ranked in member_lists]
            fused = fuse([dict(zip(r.ids, r.scores)) for r in lists], method=self.method, norm=self.norm,
                         weights=self.weights, k=self.k)
            cost = Cost()
            for r in lists:
                cost = cost.add(r.cost)
            scores = [fused[c.id] for c in query.candidates]
            ranked = RankedList.from_scores(query, scores, ranker=self.name, cost=cost)
            truncations = {item.id: item.truncation for r in lists for item in r.items if item.truncation}
            for item in ranked.items:
                item.truncation = truncations.get(item.id)
            ranked.info["members"] = [r.ranker for r in lists]
            out.append(ranked)
        return out
