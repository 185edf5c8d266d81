"""Rank fusion of several rankers' lists: RRF, CombSUM and CombMNZ (pure functions, no model code).

Conventions follow the literature and ranx: RRF gives a document ``w / (k + rank)`` per list it
appears in (rank from 1, k = 60); CombSUM sums normalised scores; CombMNZ multiplies that sum by
the number of lists the document appears in.  Min-max normalisation maps each list to [0, 1]
(denominator floored at 1e-9); z-score uses the population standard deviation.

Exact ties of the fused score (RRF of two lists that disagree ties by construction) are broken by
:func:`fused_order`: by the members' own scores, the member of largest weight first (equal weights: the one
listed first), and only then by the input order, so the order never depends on how the input was sorted
unless every member ties too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from surerank.errors import InputError

ScoreList = Mapping[str, float]
FUSION_METHODS = ("rrf", "combsum", "combmnz")
NORMALISATIONS = ("minmax", "zscore", "none")


def normalise(scores: ScoreList, method: str = "minmax") -> dict[str, float]:
    if not scores:
        return {}
    values = np.array(list(scores.values()), dtype=float)
    if method == "minmax":
        low = values.min()
        out = (values - low) / max(values.max() - low, 1e-9)
    elif method == "zscore":
        out = (values - values.mean()) / max(values.std(), 1e-9)
    elif method == "none":
        out = values
    else:
        raise InputError(f"unknown normalisation {method!r}; use one of {', '.join(NORMALISATIONS)}")
    return dict(zip(scores.keys(), out.tolist()))


def _ranks(scores: ScoreList) -> dict[str, int]:
    """1-based ranks by descending score; ties keep the list's order (stable)."""
    ordered = sorted(scores, key=lambda doc: -scores[doc])
    return {doc: rank for rank, doc in enumerate(ordered, start=1)}


def fuse(
    lists: Sequence[ScoreList],
    method: str = "rrf",
    norm: str = "minmax",
    weights: Sequence[float] | None = None,
    k: int = 60,
) -> dict[str, float]:
    """Fuse the score lists of one query into one ``{doc: fused score}`` mapping."""
    if method not in FUSION_METHODS:
        raise InputError(f"unknown fusion method {method!r}; use one of {', '.join(FUSION_METHODS)}")
    if weights is None:
        weights = [1.0] * len(lists)
    if len(weights) != len(lists):
        raise InputError(f"fusion: {len(weights)} weights for {len(lists)} rankers")
    fused: dict[str, float] = {}
    count: dict[str, int] = {}
    for scores, weight in zip(lists, weights):
        if method == "rrf":
            contributions = {doc: 1.0 / (k + rank) for doc, rank in _ranks(scores).items()}
        else:
            contributions = normalise(scores, norm)
        for doc, value in contributions.items():
            fused[doc] = fused.get(doc, 0.0) + weight * value
            count[doc] = count.get(doc, 0) + 1
    if method == "combmnz":
        fused = {doc: value * count[doc] for doc, value in fused.items()}
    return fused


def fuse_runs(
    runs: Sequence[Mapping[str, ScoreList]], method: str = "rrf", norm: str = "minmax",
    weights: Sequence[float] | None = None, k: int = 60,
) -> dict[str, dict[str, float]]:
    """Fuse whole runs ``{qid: {doc: score}}``; a query missing from a run contributes nothing there."""
    qids: dict[str, None] = {}
    for run in runs:
        qids.update(dict.fromkeys(run))
    return {
        qid: fuse([run.get(qid, {}) for run in runs], method=method, norm=norm, weights=weights, k=k)
        for qid in qids
    }


def fused_order(ids: Sequence[str], fused: ScoreList, lists: Sequence[ScoreList],
                weights: Sequence[float] | None = None) -> tuple[list[str], int]:
    """``ids`` best first by fused score; exact ties broken by each member's score in order of precedence (largest
    ``|weight|`` first, equal weights in the order listed; a member lacking a document ranks it last), then by
    position in ``ids``.  Also returns how many groups of tied fused scores there were (said in a list's info)."""
    weights = [1.0] * len(lists) if weights is None else list(weights)
    precedence = sorted(range(len(lists)), key=lambda m: -abs(weights[m]))
    position = {doc: i for i, doc in enumerate(ids)}

    def key(doc: str) -> tuple[float, ...]:
        members = tuple(-float(lists[m].get(doc, -math.inf)) for m in precedence)
        return (-float(fused[doc]), *members, float(position[doc]))

    order = sorted(ids, key=key)
    values = [float(fused[doc]) for doc in order]
    starts = {i for i in range(1, len(values)) if values[i] == values[i - 1]}  # each tied pair's second member
    groups = sum(1 for i in starts if i - 1 not in starts)
    return order, groups
