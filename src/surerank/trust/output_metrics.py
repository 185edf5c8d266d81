"""Trust metrics of ranked output: calibration of probabilities, what keep flags kept, abstention quality.

Works on :class:`RankedList` objects or on the JSONL that ``rerank`` writes (:func:`read_ranked_jsonl`),
so ``surerank eval`` can score a saved ``rerank --output x.jsonl`` without any model.  Each part is
reported only when the output carries it: probabilities → ECE/Brier/log loss and reliability bins;
keep flags → mean kept, recall and precision of relevant passages; abstain/confidence → abstention
rate, nAUC and the coverage curve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from surerank.errors import InputError
from surerank.formats.common import json_object, text_lines
from surerank.trust.abstention import coverage_curve, nauc
from surerank.trust.calibration_metrics import calibration_report, reliability_bins
from surerank.trust.labels import Qrels, calibration_pairs, label_lists, ndcg_from_qrels
from surerank.types import Candidate, Query, RankedItem, RankedList

CURVE_POINTS = 50


def from_record(record: Mapping[str, Any], position: int = 0) -> RankedList:
    """Rebuild a ranked list (ids, scores, trust fields) from a ``rerank`` JSONL output line.

    The shape is :func:`surerank.eval.formats.ranked_list_record`'s: ``qid``, ``abstain``, ``confidence``,
    ``info`` and ``candidates`` with ``id``, ``rank``, ``score`` and, when computed, ``probability``/``keep``.
    """
    where = f"line {position + 1}"
    raw = record.get("candidates", record.get("items"))
    if not isinstance(raw, list):
        raise InputError(f"{where}: a ranked record needs a list field 'candidates'")
    try:
        raw = sorted(raw, key=lambda r: int(r.get("rank", 0)))
        candidates = [Candidate(id=str(r["id"]), text=str(r.get("text", ""))) for r in raw]
        query = Query(text=str(record.get("query", "")), candidates=candidates,
                      id=str(record.get("qid", position)))
        items = [RankedItem(index=i, id=str(r["id"]), rank=i + 1, score=float(r["score"]),
                            text=str(r.get("text", "")),
                            probability=None if r.get("probability") is None else float(r["probability"]),
                            keep=None if r.get("keep") is None else bool(r["keep"]))
                 for i, r in enumerate(raw)]
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise InputError(f"{where}: every candidate needs 'id' and a numeric 'score' ({error})") from error
    info = record.get("info") if isinstance(record.get("info"), dict) else {}
    return RankedList(query=query, items=items, ranker=str(record.get("ranker", "")),
                      abstain=record.get("abstain"), confidence=record.get("confidence"), info=dict(info))


def read_ranked_jsonl(path: str | Path) -> list[RankedList]:
    """Read a ``rerank --output x.jsonl`` file back into ranked lists (errors name the line)."""
    p = Path(path)
    out = []
    for number, line in text_lines(p):
        record = json_object(line, f"{p}:{number}")
        try:
            out.append(from_record(record, number - 1))
        except InputError as error:
            raise InputError(f"{p}: {error}") from None
    return out


def trust_metrics(
    lists: Sequence[RankedList], qrels: Qrels, relevance_level: int = 2, metric_k: int = 10, n_bins: int = 15,
) -> dict[str, Any]:
    """Every trust metric the lists carry the fields for, over the queries that have judgments."""
    labelled = label_lists(lists, qrels, relevance_level)
    judged = [r for r in lists if r.query.id in qrels]
    out: dict[str, Any] = {"queries": len(labelled), "relevance_level": relevance_level}
    if labelled and all(lab.probabilities is not None or lab.scores.size == 0 for lab in labelled):
        with_items = [lab for lab in labelled if lab.scores.size]
        p, y = calibration_pairs(with_items, use="probability")
        if p.size:
            out["calibration"] = {**calibration_report(p, y, n_bins),
                                  "reliability": reliability_bins(p, y, n_bins)}
    if judged and all(i.keep is not None for r in judged for i in r.items):
        kept = np.array([sum(bool(i.keep) for i in r.items) for r in judged], dtype=float)
        rel = [lab.binary_labels() for lab in labelled]
        kept_rel = np.array([r[np.array([bool(i.keep) for i in lst.items], dtype=bool)].sum()
                             if r.size else 0.0 for r, lst in zip(rel, judged, strict=True)])
        retrieved = np.array([r.sum() for r in rel])
        total = np.array([lab.n_relevant_judged for lab in labelled], dtype=float)
        out["cutoff"] = {
            "mean_kept": float(kept.mean()),
            "recall_of_candidates": _mean_ratio(kept_rel, retrieved),
            "recall_of_judged": _mean_ratio(kept_rel, total),
            "precision": float(np.mean(np.where(kept > 0, kept_rel / np.maximum(kept, 1), 0.0))),
            "miss_rate_of_candidates": 1 - _mean_ratio(kept_rel, retrieved),
        }
    if judged and all(r.confidence is not None for r in judged):
        metric = np.array([ndcg_from_qrels(r.ids, qrels[r.query.id], metric_k) for r in judged])
        conf = np.array([float(r.confidence) for r in judged])  # type: ignore[arg-type]
        abstain = np.array([bool(r.abstain) for r in judged])
        coverage, quality = coverage_curve(conf, metric)
        step = max(1, coverage.size // CURVE_POINTS)
        out["abstention"] = {
            "metric": f"nDCG@{metric_k}", "abstention_rate": float(abstain.mean()),
            "quality_all": float(metric.mean()),
            "quality_answered": float(metric[~abstain].mean()) if (~abstain).any() else None,
            "nauc": nauc(conf, metric),
            "risk_coverage": {"measure": f"nDCG@{metric_k}", "coverage": coverage[::step].tolist(),
                              "values": quality[::step].tolist()},
        }
    return out


def _mean_ratio(numerator: np.ndarray, denominator: np.ndarray) -> float:
    mask = denominator > 0
    return float(np.mean(numerator[mask] / denominator[mask])) if mask.any() else float("nan")
