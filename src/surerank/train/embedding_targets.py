"""Targets for embedding distillation: the teacher's vector of every training text, in the student's space.

A list of 32 scores teaches the student 32 numbers a query; a teacher's embedding of each query and passage
teaches it hundreds of coordinates a text, and needs no list to hold a passage that answers the query (an
unlabeled query log teaches as much as a judged one).  The teacher's vectors (768 dimensions for
all-mpnet-base-v2) do not fit the student's (384 for all-MiniLM-L6-v2) and the student would not know their
orientation, so each target is the teacher's vector

1. projected on the principal directions of the teacher's training vectors, as many as the student has
   dimensions (PCA: the most of the teacher's geometry a space that size keeps), then
2. turned by the rotation that brings those projections closest to the untrained student's own vectors of the
   same texts (orthogonal Procrustes), so the student learns the teacher's geometry without first having to
   turn its whole space,
3. unit-normalised, as the cosine the student is served with reads it,
4. and, with ``mix`` < 1, moved only that share of the way from the untrained student's own unit vector of the
   text toward it (then unit-normalised again).

Rotations keep cosines, so a student that matches ``mix=1`` targets ranks as the projected teacher does.  Those
are far from where the student starts (all-mpnet-base-v2 into all-MiniLM-L6-v2: mean cosine 0.65 to the
untrained student's vectors), and a student part of the way there ranks worse than either end (docs/train.md);
a target between the two is near (``mix`` 0.35: cosine 0.95) and already ranks most of the way toward the
teacher (DL19: 63% of the gap, the vectors alone, no training).  The
teacher is an embedding ranker (it gives vectors: ``encode``); its vectors are cached on disk, keyed by the
teacher's spec and each text, so a resumed or repeated run sends each text to it once.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from surerank.errors import InputError
from surerank.rankers.nested import RankerRef, make_ranker
from surerank.scores import unit_rows
from surerank.storage import atomic_path
from surerank.train.teacher import teacher_spec
from surerank.types import Query

logger = logging.getLogger(__name__)

#: texts sent to the teacher per ``encode`` call
ENCODE_GROUP = 512
#: the cache is rewritten once the vectors not yet on disk are this share of it (or a group, if more): a kill
#: loses at most about a tenth of the work, and the rewrites cost a constant factor of the cache's final size
#: (after every group, they would cost its square over the group)
SAVE_SHARE = 0.1


@dataclass
class TrainingTexts:
    """The distinct query and passage texts of some lists, in first-seen order."""

    queries: list[str] = field(default_factory=list)
    passages: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, lists: Sequence[Query], exclude: TrainingTexts | None = None) -> TrainingTexts:
        """The texts of ``lists``, less those ``exclude`` holds (a dev split's texts that are also training
        texts stay on the training side only)."""
        seen_q = set(exclude.queries) if exclude else set()
        seen_p = set(exclude.passages) if exclude else set()
        out = cls()
        for q in lists:
            if q.text not in seen_q:
                seen_q.add(q.text)
                out.queries.append(q.text)
            for c in q.candidates:
                if c.text not in seen_p:
                    seen_p.add(c.text)
                    out.passages.append(c.text)
        return out

    def __len__(self) -> int:
        return len(self.queries) + len(self.passages)


@dataclass
class TeacherVectors:
    """The teacher's unit vectors of some texts (queries with its query prefix), and what getting them took."""

    queries: np.ndarray
    passages: np.ndarray
    encoded: int = 0  # texts sent to the teacher by this run
    cache_hits: int = 0  # texts found in the cache
    truncated: int = 0  # texts the teacher saw cut to its input length, this run
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"texts": int(len(self.queries) + len(self.passages)), "dimensions": int(self.passages.shape[1]),
                "encoded_this_run": self.encoded, "cache_hits_this_run": self.cache_hits,
                "truncated_this_run": self.truncated, "seconds_this_run": round(self.seconds, 1)}


def vector_cache_beside(score_cache: Path) -> Path:
    """Where the teacher's vectors are cached: beside its score cache (``teacher.json`` -> ``teacher.vectors.npz``)."""
    return score_cache.with_name(score_cache.stem + ".vectors.npz")


def _key(kind: str, text: str) -> str:
    return hashlib.sha256(f"{kind}\0{text}".encode()).hexdigest()


def _load_cache(path: Path, spec: Any) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as data:
        cached_spec = str(data["spec"])
        if cached_spec != repr(spec):
            raise InputError(f"teacher vector cache {path}: holds another teacher's vectors ({cached_spec}, not "
                             f"{spec!r}); give another cache path")
        return dict(zip([str(k) for k in data["keys"]], data["vectors"], strict=True))


def _save_cache(path: Path, spec: Any, vectors: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, spec=np.array(repr(spec)), keys=np.array(list(vectors)),
                 vectors=np.stack(list(vectors.values())).astype(np.float32))


def teacher_vectors(teacher: RankerRef, texts: TrainingTexts, cache: Path) -> TeacherVectors:
    """The teacher's unit vector of each text, each text sent to it at most once across runs sharing ``cache``."""
    import time

    spec = teacher_spec(teacher)
    store = _load_cache(cache, spec)
    todo = {kind: [t for t in rows if _key(kind, t) not in store]
            for kind, rows in (("query", texts.queries), ("passage", texts.passages))}
    hits = len(texts) - sum(len(v) for v in todo.values())
    encoded = truncated = unsaved = 0
    started = time.perf_counter()
    if any(todo.values()):
        ranker = make_ranker(teacher, "teacher")
        if not callable(getattr(ranker, "encode", None)) or not hasattr(ranker, "query_prefix"):
            raise InputError(f"teacher: loss embedding-mse learns the teacher's vectors, and {spec!r} gives scores, "
                             "not vectors; give an embedding (bi-encoder) teacher, or a score loss (kl, margin-mse)")
        logger.info("teacher %s: embedding %d texts (%d cached in %s)", spec, sum(len(v) for v in todo.values()),
                    hits, cache)
        for kind, rows in todo.items():
            prefix = ranker.query_prefix if kind == "query" else None
            for start in range(0, len(rows), ENCODE_GROUP):
                chunk = rows[start:start + ENCODE_GROUP]
                out = ranker.encode(chunk, prefix=prefix, normalize=True)
                truncated += len(out.truncated)
                store.update({_key(kind, t): v for t, v in zip(chunk, out.vectors, strict=True)})
                encoded += len(chunk)
                unsaved += len(chunk)
                if unsaved >= max(ENCODE_GROUP, SAVE_SHARE * len(store)):
                    _save_cache(cache, spec, store)
                    unsaved = 0
        if unsaved:
            _save_cache(cache, spec, store)
        if truncated:
            logger.warning("teacher: %d of %d texts were cut to its input length before embedding", truncated,
                           encoded)
    width = next(iter(store.values())).shape[0] if store else 0
    rows_of = {kind: np.stack([store[_key(kind, t)] for t in rows]) if rows else np.zeros((0, width), np.float32)
               for kind, rows in (("query", texts.queries), ("passage", texts.passages))}
    return TeacherVectors(rows_of["query"], rows_of["passage"], encoded, hits, truncated,
                          time.perf_counter() - started)


@dataclass
class Alignment:
    """The map from the teacher's space to the student's: centre, principal directions, rotation."""

    mean: np.ndarray  # (teacher dims,)
    directions: np.ndarray  # (teacher dims, k)
    rotation: np.ndarray  # (k, student dims), orthonormal rows
    variance_kept: float  # share of the teacher's variance the k directions hold
    agreement_before: float  # mean cosine of the untrained student's vectors and their targets

    def __call__(self, teacher: np.ndarray, student: np.ndarray | None = None, mix: float = 1.0) -> np.ndarray:
        """Unit targets in the student's space for these teacher vectors; with ``mix`` < 1, that share of the way
        from the student's own vectors of the same texts (rows pair up) toward them."""
        aligned = unit_rows(unit_rows((teacher - self.mean) @ self.directions) @ self.rotation)
        if mix != 1.0:
            if student is None or student.shape != aligned.shape:
                raise InputError(f"targets: mix {mix} needs the student's vector of each text")
            aligned = unit_rows((1.0 - mix) * unit_rows(student) + mix * aligned)
        return aligned.astype(np.float32)

    def summary(self) -> dict[str, Any]:
        return {"directions": int(self.directions.shape[1]), "variance_kept": round(self.variance_kept, 4),
                "student_target_cosine_untrained": round(self.agreement_before, 4)}


def align(teacher: np.ndarray, student: np.ndarray) -> Alignment:
    """PCA of the teacher's vectors to at most the student's dimensions, then the orthogonal Procrustes rotation
    of those projections onto the student's vectors of the same texts (rows pair up)."""
    if teacher.shape[0] != student.shape[0]:
        raise InputError(f"alignment: {teacher.shape[0]} teacher vectors but {student.shape[0]} student vectors")
    k = min(teacher.shape[1], student.shape[1], teacher.shape[0])
    if k < 2:
        raise InputError("embedding-mse: at least 2 training texts are needed to align the teacher's space")
    mean = teacher.mean(axis=0)
    _, singular, vt = np.linalg.svd(teacher - mean, full_matrices=False)
    directions = vt[:k].T
    projected = unit_rows((teacher - mean) @ directions)
    u, _, wt = np.linalg.svd(projected.T @ student, full_matrices=False)
    rotation = u @ wt
    variance = float((singular[:k] ** 2).sum() / max((singular ** 2).sum(), 1e-12))
    aligned = Alignment(mean, directions, rotation, variance, 0.0)
    aligned.agreement_before = float((aligned(teacher) * unit_rows(student)).sum(axis=1).mean())
    return aligned


__all__ = ["Alignment", "TeacherVectors", "TrainingTexts", "align", "teacher_vectors", "vector_cache_beside"]
