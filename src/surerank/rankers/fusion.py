"""A ranker that runs other rankers and fuses their lists (RRF, CombSUM, CombMNZ), with weights given or learned.

Learned weights come from ``surerank train --fusion`` (:mod:`surerank.train.fusion`) as a small JSON document,
:class:`FusionWeights` (``{"kind": "surerank.fusion-weights", "version": 1, ...}``), that records the members,
the method and normalisation they were fitted for, and the dev figures; ``Reranker("fusion", weights=FILE)``
reads it.  Exact ties of the fused score are broken by the members' own scores (see
:func:`surerank.aggregate.fusion.fused_order`), and each list's ``info["ties"]`` says how many there were.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from surerank.aggregate.fusion import FUSION_METHODS, NORMALISATIONS, fuse, fused_order
from surerank.documents import get, header, numbers
from surerank.errors import InputError
from surerank.formats.common import existing, json_object
from surerank.ranker import BaseRanker
from surerank.rankers.nested import RankerRef, make_ranker
from surerank.storage import atomic_write_json
from surerank.types import Cost, Query, RankedItem, RankedList

WEIGHTS_KIND = "surerank.fusion-weights"
TIE_BREAKS = ("members", "input")


@dataclass
class FusionWeights:
    """Fusion weights fitted on a dev split: what ``surerank train --fusion`` writes and the fusion ranker reads.

    ``members`` are the rankers as given to the ranker (names or ``{"name": ..., **options}``), so the file alone
    rebuilds the fusion; ``fit`` holds the dev figures (queries, nDCG@10 fitted and of each member alone).
    """

    members: list[Any]
    weights: list[float]
    method: str = "combsum"
    norm: str = "zscore"
    k: int = 60
    fit: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": WEIGHTS_KIND, "version": 1, "members": self.members, "weights": self.weights,
                "method": self.method, "norm": self.norm, "k": self.k, "fit": self.fit}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the document atomically (a ranker loading it meanwhile reads the old file or the new one)."""
        atomic_write_json(path, self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> FusionWeights:
        header(data, WEIGHTS_KIND, (1,), where)
        members = get(data, "members", "list", where)
        for i, m in enumerate(members):
            if not isinstance(m, str) and not (isinstance(m, Mapping) and isinstance(m.get("name"), str)):
                raise InputError(f"{where}: field 'members[{i}]' must be a ranker name or an object with 'name'")
        weights = numbers(data, "weights", where, length=len(members), non_empty=True)
        return cls(members=list(members), weights=weights,
                   method=get(data, "method", "str", where, choices=FUSION_METHODS),
                   norm=get(data, "norm", "str", where, choices=NORMALISATIONS),
                   k=get(data, "k", "int", where, optional=True, default=60, minimum=0),
                   fit=dict(get(data, "fit", "object", where, optional=True, default={})))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FusionWeights:
        p = existing(path, "weights")
        return cls.from_dict(json_object(p.read_text(encoding="utf-8"), str(p), f"a {WEIGHTS_KIND} document"), str(p))


#: Learned presets, each kept only because it beats its best member on both TREC DL years when fitted on the
#: other (``python benchmarks/hybrid_dl.py``, docs/hybrid.md): "hybrid" is list bm25 with background IDF and the
#: default MiniLM, z-scored CombSUM with the weights ``surerank train --fusion`` found on DL19 and on DL20 alike.
PRESETS: dict[str, FusionWeights] = {
    "hybrid": FusionWeights(
        members=[{"name": "bm25", "idf": "background"}, "embedding"], weights=[0.316228, 1.0],
        method="combsum", norm="zscore",
        fit={"measure": "nDCG@10", "fitted_on": "TREC DL19 and DL20 (each gave these weights)",
             "held_out": {"dl19": 0.6556, "dl20": 0.6291}, "minilm_alone": {"dl19": 0.6386, "dl20": 0.6111}}),
}


class FusionRanker(BaseRanker):
    """``Reranker("fusion", rankers=[{"name": "bm25", "idf": "background"}, "embedding"], method="combsum",
    norm="zscore", weights=[0.2, 1.0])``: a lexical + neural hybrid (docs/hybrid.md has the figures).

    ``rankers`` items are registered names, ``{"name": ..., **options}`` mappings, or ranker objects.
    ``weights`` is a list (one per ranker) or a :class:`FusionWeights` file from ``surerank train --fusion``,
    whose members, method and normalisation apply unless given here.  ``tie_break``: ``"members"`` (exact ties
    of the fused score go to the members' own scores, the largest weight first, then input order) or
    ``"input"`` (input order); ``info["ties"]`` says which, and how many ties there were.  ``preset="hybrid"``
    is the learned hybrid of :data:`PRESETS` (it needs ``surerank[hybrid]`` for the background IDF).
    """

    name = "fusion"

    def __init__(
        self,
        rankers: Sequence[RankerRef] | str | None = None,
        method: str | None = None,
        norm: str | None = None,
        weights: Sequence[float] | str | os.PathLike[str] | None = None,
        k: int | None = None,
        tie_break: str = "members",
        preset: str | None = None,
    ) -> None:
        saved = FusionWeights.load(weights) if isinstance(weights, (str, os.PathLike)) else None
        self.weights_file = os.fspath(weights) if saved is not None else None  # type: ignore[arg-type]
        if preset is not None:
            if preset not in PRESETS:
                raise InputError(f"fusion: unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
            if weights is not None:
                raise InputError("fusion: give a preset or weights, not both")
            saved = weights = PRESETS[preset]
        self.preset = preset
        if saved is not None:
            weights = saved.weights
            rankers = saved.members if rankers is None else rankers
        method = method or (saved.method if saved else "rrf")
        norm = norm or (saved.norm if saved else "minmax")
        k = k if k is not None else (saved.k if saved else 60)
        rankers = ("first-stage", "embedding") if rankers is None else rankers
        if method not in FUSION_METHODS:
            raise InputError(f"fusion: unknown method {method!r}; use one of {', '.join(FUSION_METHODS)}")
        if norm not in NORMALISATIONS:
            raise InputError(f"fusion: unknown norm {norm!r}; use one of {', '.join(NORMALISATIONS)}")
        if tie_break not in TIE_BREAKS:
            raise InputError(f"fusion: unknown tie_break {tie_break!r}; use one of {', '.join(TIE_BREAKS)}")
        if isinstance(rankers, str):
            rankers = [r.strip() for r in rankers.split(",") if r.strip()]
        if len(rankers) < 1:
            raise InputError("fusion: 'rankers' needs at least one ranker")
        if weights is not None and len(weights) != len(rankers):
            raise InputError(f"fusion: {len(weights)} weights for {len(rankers)} rankers")
        self.members: list[BaseRanker] = [make_ranker(ref, f"rankers[{i}]") for i, ref in enumerate(rankers)]
        self.weights = None if weights is None else [float(w) for w in weights]
        self.method, self.norm, self.k, self.tie_break = method, norm, k, tie_break

    def describe(self) -> dict[str, Any]:
        info = {"ranker": self.name, "method": self.method, "norm": self.norm, "weights": self.weights,
                "k": self.k, "tie_break": self.tie_break, "members": [m.describe() for m in self.members]}
        if self.weights_file:
            info["weights_file"] = self.weights_file
        if self.preset:
            info["preset"] = self.preset
        return info

    def _rank_queries(self, queries: list[Query]) -> list[RankedList]:
        member_lists = [member.rank_many(queries) for member in self.members]
        out = []
        for position, query in enumerate(queries):
            lists = [ranked[position] for ranked in member_lists]
            scores = [dict(zip(r.ids, r.scores)) for r in lists]
            fused = fuse(scores, method=self.method, norm=self.norm, weights=self.weights, k=self.k)
            cost = Cost()
            for r in lists:
                cost = cost.add(r.cost)
            ranked = self._ordered(query, fused, scores, cost)
            truncations = {item.id: item.truncation for r in lists for item in r.items if item.truncation}
            for item in ranked.items:
                item.truncation = truncations.get(item.id)
            ranked.info["members"] = [r.ranker for r in lists]
            out.append(ranked)
        return out

    def _ordered(self, query: Query, fused: dict[str, float], scores: list[dict[str, float]],
                 cost: Cost) -> RankedList:
        """The list in fused order, exact ties broken as ``tie_break`` says (and said in ``info["ties"]``)."""
        ids = [c.id for c in query.candidates]
        order, groups = fused_order(ids, fused, scores if self.tie_break == "members" else [], self.weights)
        index = {c.id: i for i, c in enumerate(query.candidates)}
        items = [RankedItem(index=index[doc], id=doc, rank=rank, score=float(fused[doc]),
                            text=query.candidates[index[doc]].text, metadata=query.candidates[index[doc]].metadata)
                 for rank, doc in enumerate(order, start=1)]
        ranked = RankedList(query=query, items=items, ranker=self.name, cost=cost)
        rule = ("the members' scores (largest weight first, equal weights in the order listed), then input order"
                if self.tie_break == "members" else "input order")
        ranked.info["ties"] = {"groups": groups, "broken_by": rule}
        return ranked
