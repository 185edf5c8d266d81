"""A teacher's scores of the training lists: scored once, cached on disk, resumable, its cost trace kept.

A teacher is any surerank ranker (a name, ``{"name": ..., **options}``, or a ranker object): an encoder, a
fusion, an LLM judge.  It is the slow, costly part of distillation, so each (query, passage) pair is sent to it
once across every run that shares the cache file: the cache is rewritten (atomically, through
:mod:`surerank.storage`) after every group of queries, and a run killed halfway picks up at the first query it
had not finished.  The cache records the teacher's spec and refuses to mix in scores from another one.

The cache also keeps the order the teacher returned for each list it ranked whole (``orders``): a
comparison-based teacher (pairwise, setwise, listwise LLM) gives a ranking, and its scores only encode it within
one call.  Asked for whole lists (``whole_lists=True``, what ``teacher_labels="order"`` needs), a list whose
cached order does not cover it (scored in parts, or before orders were kept) is sent again whole: two calls'
orders cannot be joined.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from surerank import documents as doc
from surerank.errors import InputError
from surerank.rankers.nested import RankerRef, make_ranker
from surerank.storage import atomic_write_json
from surerank.types import Cost, Query

logger = logging.getLogger(__name__)

KIND = "surerank.teacher-scores"
VERSION = 1


def teacher_spec(ref: RankerRef) -> Any:
    """The teacher as JSON: its name or mapping, or a ranker object's ``name`` (what the cache and card record)."""
    if isinstance(ref, (str, Mapping)):
        return ref if isinstance(ref, str) else dict(ref)
    return {"object": type(ref).__name__, "name": getattr(ref, "name", "")}


@dataclass
class TeacherScores:
    """``scores[qid][pid]``, the teacher's cost over every run that scored into this cache, and the counts."""

    spec: Any
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    orders: dict[str, list[str]] = field(default_factory=dict)  # the teacher's ranking of each list ranked whole
    cost: Cost = field(default_factory=Cost)
    pairs_scored: int = 0  # pairs the teacher was called on, over all runs
    truncated: int = 0  # pairs the teacher saw cut to its input length
    cache_hits: int = 0  # pairs this run found in the cache (not sent to the teacher)
    resent_whole: int = 0  # lists this run sent again whole because no cached order covered them

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "version": VERSION, "teacher": self.spec, "pairs_scored": self.pairs_scored,
                "truncated": self.truncated, "cost": asdict(self.cost), "scores": self.scores,
                "orders": self.orders}

    def summary(self) -> dict[str, Any]:
        """What the training card records of the teacher (everything but the scores)."""
        out = self.to_dict()
        for key in ("kind", "version", "scores", "orders"):
            out.pop(key)
        out["spec"] = out.pop("teacher")
        out["cache_hits_this_run"] = self.cache_hits
        out["orders_kept"] = len(self.orders)
        out["resent_whole_this_run"] = self.resent_whole
        return out

    @classmethod
    def load(cls, path: Path, spec: Any) -> TeacherScores:
        where = str(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"{where}: not a readable teacher cache ({e}); remove it to score again") from e
        doc.header(data, KIND, [VERSION], where)
        if data.get("teacher") != spec:
            raise InputError(f"{where}: scored by teacher {data.get('teacher')!r}, not {spec!r}; give another "
                             "--teacher-cache or remove this one")
        cost = doc.get(data, "cost", "object", where)
        scores = doc.get(data, "scores", "object", where)
        orders = doc.get(data, "orders", "object", where, optional=True, default={})
        return cls(spec=spec, scores={q: {p: float(s) for p, s in d.items()} for q, d in scores.items()},
                   orders={q: [str(p) for p in doc.get(orders, q, "list", where, "orders")] for q in orders},
                   cost=Cost(**cost),
                   pairs_scored=doc.get(data, "pairs_scored", "int", where),
                   truncated=doc.get(data, "truncated", "int", where, optional=True, default=0))


def _missing(query: Query, done: Mapping[str, float]) -> Query | None:
    """The query with only the candidates the teacher has not scored yet (None when all are)."""
    todo = [c for c in query.candidates if c.id not in done]
    if not todo:
        return None
    return Query(text=query.text, candidates=todo, id=query.id, metadata=query.metadata)


def _covered(query: Query, order: Sequence[str] | None) -> bool:
    return order is not None and {c.id for c in query.candidates} <= set(order)


def score_with_teacher(teacher: RankerRef, queries: Sequence[Query], cache: Path, group: int = 8,
                       whole_lists: bool = False) -> TeacherScores:
    """The teacher's score of every (query, candidate) pair, each sent to it at most once across runs.

    Query ids must be unique (they key the cache).  ``group`` queries are scored per ``rank_many`` call, and
    the cache is written after each call: a kill loses at most one group's work.  ``whole_lists``: every list
    must have the teacher's order over all its candidates (from one call); one that has not is sent whole.
    """
    ids = [q.id for q in queries]
    if len(set(ids)) != len(ids):
        raise InputError("teacher: query ids must be unique, they key the score cache")
    spec = teacher_spec(teacher)
    result = TeacherScores.load(cache, spec) if cache.exists() else TeacherScores(spec=spec)
    todo: list[Query] = []
    for q in queries:
        done = result.scores.get(q.id, {})
        if whole_lists and not _covered(q, result.orders.get(q.id)):
            result.resent_whole += bool(done)
            todo.append(q)
            continue
        result.cache_hits += sum(1 for c in q.candidates if c.id in done)
        missing = _missing(q, done)
        if missing is not None:
            todo.append(missing)
    if not todo:
        logger.info("teacher: all %d pairs found in %s; nothing sent", result.cache_hits, cache)
        return result
    logger.info("teacher %s: scoring %d pairs of %d queries (%d cached in %s)", spec,
                sum(len(q.candidates) for q in todo), len(todo), result.cache_hits, cache)
    if result.resent_whole:
        logger.warning("teacher: %d lists have no cached order over all their candidates (scored in parts, or "
                       "before orders were kept); sent again whole", result.resent_whole)
    sizes = {q.id: len(q.candidates) for q in queries}
    ranker = make_ranker(teacher, "teacher")
    for start in range(0, len(todo), group):
        for ranked in ranker.rank_many(todo[start:start + group]):
            if len(ranked.items) == sizes[ranked.query.id]:  # the whole list in one call: its order is the teacher's
                result.orders[ranked.query.id] = ranked.ids
            scores = result.scores.setdefault(ranked.query.id, {})
            for item in ranked.items:
                scores[item.id] = float(item.score)
                result.truncated += bool(item.truncation is not None and item.truncation.truncated)
            result.pairs_scored += len(ranked.items)
            result.cost = result.cost.add(ranked.cost)
        atomic_write_json(cache, result.to_dict())
    if result.truncated:
        logger.warning("teacher: %d pairs were cut to the teacher's input length", result.truncated)
    return result


__all__ = ["KIND", "TeacherScores", "score_with_teacher", "teacher_spec"]
