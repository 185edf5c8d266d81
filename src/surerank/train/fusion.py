"""Fusion weights learned on a dev split: coordinate ascent on nDCG@10 over member runs scored once.

Each member ranker scores the dev queries once (:func:`member_runs`, or runs the user already has); the search
then only re-fuses cached scores, the same :func:`~surerank.aggregate.fusion.fuse` and tie rule
(:func:`~surerank.aggregate.fusion.fused_order`) the fusion ranker applies, so the fitted figure is the figure
``Reranker("fusion", weights=FILE)`` reaches on the same lists (up to ties that every member shares too, which
a run file, unlike the ranker, cannot order by input position).  The search is the one QE tuning uses
(:func:`surerank.aggregate.search.coordinate_ascent`), over non-negative weights: a member worth a negative
weight on a small dev split is noise more often than signal.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from surerank.aggregate.fusion import FUSION_METHODS, NORMALISATIONS, fuse, fused_order
from surerank.aggregate.search import GRID, coordinate_ascent
from surerank.errors import InputError
from surerank.formats import Qrels, Run, lists_to_run
from surerank.rankers.fusion import FusionWeights
from surerank.rankers.nested import RankerRef, make_ranker
from surerank.trust.labels import ndcg_from_qrels
from surerank.types import Query

logger = logging.getLogger(__name__)

#: Weights the search tries for one member: 0 and 0.01 .. 10 (scale never changes a fused order).
NONNEGATIVE_GRID = GRID[GRID >= 0]


def member_runs(rankers: Sequence[RankerRef], queries: Sequence[Query]) -> list[Run]:
    """Each ranker's scores of every query, ``{qid: {doc: score}}``, scored once (the fit re-fuses them)."""
    return [lists_to_run(make_ranker(ref, f"rankers[{i}]").rank_many(list(queries))) for i, ref in enumerate(rankers)]


def fused_rankings(runs: Sequence[Run], weights: Sequence[float], method: str = "combsum", norm: str = "zscore",
                   k: int = 60, qids: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Each query's documents best first, fused from cached member runs as the fusion ranker fuses its members'
    lists (ties: the members' scores, then ``runs[0]``'s order)."""
    out = {}
    for qid in runs[0] if qids is None else qids:
        lists = [run.get(qid, {}) for run in runs]
        fused = fuse(lists, method=method, norm=norm, weights=list(weights), k=k)
        ids = list(lists[0]) + [d for d in fused if d not in lists[0]]
        out[qid], _ = fused_order(ids, fused, lists, weights)
    return out


def fusion_ndcg(runs: Sequence[Run], qrels: Qrels, weights: Sequence[float], method: str = "combsum",
                norm: str = "zscore", k: int = 60, depth: int = 10) -> dict[str, float]:
    """nDCG@``depth`` of each judged query of ``runs[0]`` under these weights, ties broken as the ranker does."""
    qids = [qid for qid in runs[0] if qid in qrels]
    rankings = fused_rankings(runs, weights, method, norm, k, qids)
    return {qid: ndcg_from_qrels(order, qrels[qid], k=depth) for qid, order in rankings.items()}


def _mean(values: Mapping[str, float]) -> float:
    return float(np.mean(list(values.values()))) if values else 0.0


def fit_fusion(runs: Sequence[Run], qrels: Qrels, members: Sequence[Any], method: str = "combsum",
               norm: str = "zscore", k: int = 60, passes: int = 10,
               grid: np.ndarray = NONNEGATIVE_GRID) -> FusionWeights:
    """Weights for fusing ``runs`` (one per member, in ``members`` order) that maximise mean nDCG@10 on ``qrels``.

    ``members`` are recorded in the document so that ``Reranker("fusion", weights=FILE)`` rebuilds the rankers;
    the report in ``fit`` gives the dev figure fitted, with equal weights and of each member alone.
    """
    if method not in FUSION_METHODS:
        raise InputError(f"fusion: unknown method {method!r}; use one of {', '.join(FUSION_METHODS)}")
    if norm not in NORMALISATIONS:
        raise InputError(f"fusion: unknown norm {norm!r}; use one of {', '.join(NORMALISATIONS)}")
    if len(runs) != len(members) or len(runs) < 2:
        raise InputError(f"fit: {len(runs)} runs for {len(members)} members; fusion weights need two or more")
    judged = [qid for qid in runs[0] if qid in qrels and any(g > 0 for g in qrels[qid].values())]
    if not judged:
        raise InputError("fit: no dev query has a relevant judgment; nothing to learn from")
    dev = {qid: qrels[qid] for qid in judged}

    def objective(w: np.ndarray) -> float:
        return _mean(fusion_ndcg(runs, dev, w.tolist(), method, norm, k))

    weights, best = coordinate_ascent(objective, len(runs), grid=grid, passes=passes)
    alone = [objective(np.eye(len(runs))[m]) for m in range(len(runs))]
    report = {"queries": len(judged), "measure": "nDCG@10", "fitted": best,
              "equal_weights": objective(np.ones(len(runs))), "members_alone": alone,
              "search": f"coordinate ascent, {len(grid)} values per weight, at most {passes} passes"}
    logger.info("fusion fit on %d queries: nDCG@10 %.4f (equal weights %.4f, members alone %s)", len(judged), best,
                report["equal_weights"], ", ".join(f"{a:.4f}" for a in alone))
    return FusionWeights(members=list(members), weights=[round(float(w), 6) for w in weights], method=method,
                         norm=norm, k=k, fit=report)


__all__ = ["NONNEGATIVE_GRID", "fit_fusion", "fused_rankings", "fusion_ndcg", "member_runs"]
