"""Quality-estimation (QE) reranking of generated candidates, and tuned reranking over several features.

A generation task is a :class:`~surerank.types.Query` whose text is the source and whose candidates are N outputs.

- ``Reranker("qe", qe="cross-encoder", ...)``: any surerank ranker as the QE model, the source as its query
  (a cross-encoder, ``llm-pointwise``, ``embedding``); its scores are the ranking.
- Tuned reranking (Fernandes et al. 2022, "N-best reranking"): a weighted sum of per-list normalised features —
  each QE ranker's score (``qe:NAME``), the model log-probability given with the candidates (``logprob``, from
  candidate metadata), an MBR expected utility (``mbr``, options in ``mbr=``), ``length`` (words) and
  ``length_ratio`` (words of the candidate / words of the source) — with weights tuned on a dev set by
  :meth:`QERanker.fit` (coordinate ascent on the quality of the selected candidate, or logistic regression on
  "is a best candidate"), saved with :meth:`QERanker.save` and loaded with ``Reranker("qe", weights="w.json")``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from surerank.aggregate.search import GRID as GRID  # the grid the fit searches, still importable from here
from surerank.aggregate.search import coordinate_ascent
from surerank.errors import InputError
from surerank.ranker import BaseRanker
from surerank.rankers.nested import RankerRef, make_ranker
from surerank.registry import create
from surerank.storage import atomic_write_json
from surerank.types import Cost, Query, RankedList

logger = logging.getLogger(__name__)

FORMAT = "surerank-qe-weights"
EXTRA_FEATURES = ("logprob", "length", "length_ratio", "mbr")
NORMALISATIONS = ("zscore", "minmax", "none")
FIT_METHODS = ("coordinate-ascent", "logistic")


class QERanker(BaseRanker):
    """QE reranking, or a tuned weighted sum of QE scores, log-probability, MBR utility and length."""

    name: ClassVar[str] = "qe"

    def __init__(
        self,
        qe: RankerRef | Sequence[RankerRef] | None = None,
        features: Sequence[str] | None = None,
        weights: Mapping[str, float] | str | os.PathLike[str] | None = None,
        normalise: str | None = None,
        mbr: Mapping[str, Any] | None = None,
        logprob_field: str | None = None,
    ) -> None:
        saved: dict[str, Any] = {}
        if isinstance(weights, (str, os.PathLike)):
            saved = load_weights(weights)
            weights = saved["weights"]
        config = saved.get("config", {})
        qe = qe if qe is not None else config.get("qe", "embedding")
        refs = [qe] if isinstance(qe, (str, Mapping)) or hasattr(qe, "rank_many") else list(qe)  # type: ignore[arg-type]
        self.qe_refs = refs
        self.qe_rankers = [make_ranker(r, f"qe[{k}]") for k, r in enumerate(refs)]
        self.qe_names = _unique_names([f"qe:{getattr(r, 'name', type(r).__name__)}" for r in self.qe_rankers])
        self.normalise = normalise or saved.get("normalise", "zscore")
        if self.normalise not in NORMALISATIONS:
            raise InputError(f"normalise: must be one of {', '.join(NORMALISATIONS)}, got {self.normalise!r}")
        self.logprob_field = logprob_field or config.get("logprob_field", "logprob")
        self.mbr_options = dict(mbr if mbr is not None else config.get("mbr", {"utility": "chrf"}))
        extra = list(features if features is not None else (
            [k for k in weights if k in EXTRA_FEATURES] if weights else []))
        unknown = [f for f in extra if f not in EXTRA_FEATURES]
        if unknown:
            raise InputError(f"features: unknown {unknown}; the extra features are {', '.join(EXTRA_FEATURES)} "
                             "(QE rankers are given with qe=)")
        self.features = [*self.qe_names, *extra]
        self.weights: dict[str, float] | None = None
        if weights is not None:
            self.weights = {str(k): float(v) for k, v in dict(weights).items()}
            missing = [k for k in self.weights if k not in self.features]
            if missing:
                raise InputError(f"weights: {missing} are not features of this ranker ({', '.join(self.features)})")
        self.mbr_ranker: BaseRanker | None = None
        if "mbr" in self.features:
            self.mbr_ranker = create("mbr", **self.mbr_options)
        self.fit_report: dict[str, Any] = saved.get("fit", {})

    def describe(self) -> dict[str, Any]:
        return {"ranker": self.name, "features": self.features, "weights": self.weights, "normalise": self.normalise,
                "qe": [r.describe() for r in self.qe_rankers]}

    # ---------------------------------------------------------------------------------------------- features

    def feature_matrices(self, queries: list[Query]) -> tuple[list[np.ndarray], list[Cost]]:
        """Raw features per query, an (n candidates x features) matrix each, in :attr:`features` order."""
        columns: dict[str, list[np.ndarray]] = {}
        costs = [Cost() for _ in queries]
        members = list(zip(self.qe_names, self.qe_rankers))
        if self.mbr_ranker is not None:
            members.append(("mbr", self.mbr_ranker))
        for name, ranker in members:
            if name not in self.features:
                continue
            lists = ranker.rank_many(queries)
            columns[name] = [_in_input_order(r) for r in lists]
            costs = [c.add(r.cost) for c, r in zip(costs, lists)]
        for name in self.features:
            if name == "logprob":
                columns[name] = [self._logprobs(q) for q in queries]
            elif name == "length":
                columns[name] = [np.array([len(c.text.split()) for c in q.candidates], float) for q in queries]
            elif name == "length_ratio":
                columns[name] = [np.array([len(c.text.split()) for c in q.candidates], float)
                                 / max(1, len(q.text.split())) for q in queries]
        return [np.column_stack([columns[f][qi] for f in self.features]) for qi in range(len(queries))], costs

    def _logprobs(self, query: Query) -> np.ndarray:
        values = []
        for c in query.candidates:
            v = c.metadata.get(self.logprob_field)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
                raise InputError(f"query {query.id!r}, candidate {c.id!r}: the logprob feature needs a number in "
                                 f"metadata field {self.logprob_field!r}, got {v!r}")
            values.append(float(v))
        return np.array(values)

    def combine(self, matrix: np.ndarray) -> np.ndarray:
        """The score of each candidate: the weighted sum of its normalised features (the raw QE score alone)."""
        if self.weights is None:
            return matrix[:, 0].astype(float)
        z = normalise_columns(matrix, self.normalise)
        w = np.array([self.weights.get(f, 0.0) for f in self.features])
        return z @ w

    def _rank_queries(self, queries: list[Query]) -> list[RankedList]:
        if self.weights is None and len(self.features) > 1:
            raise InputError(f"weights: {len(self.features)} features ({', '.join(self.features)}) need weights; "
                             "tune them with QERanker.fit on a dev set, or give weights={feature: value}")
        matrices, costs = self.feature_matrices(queries)
        out = []
        for query, matrix, cost in zip(queries, matrices, costs):
            scores = self.combine(matrix)
            ranked = RankedList.from_scores(query, scores.tolist(), ranker=self.name, cost=cost)
            top = ranked.items[0].index
            ranked.info["qe"] = {"features": self.features, "weights": self.weights,
                                 "top_features": dict(zip(self.features, matrix[top].round(6).tolist()))}
            out.append(ranked)
        return out

    # ---------------------------------------------------------------------------------------------- tuning

    @classmethod
    def fit(cls, queries: Sequence[Query], gold: Mapping[str, Mapping[str, float]] | None = None, *,
            label_field: str = "gold", method: str = "coordinate-ascent", passes: int = 10, l2: float = 1.0,
            **options: Any) -> QERanker:
        """Tune the feature weights on dev queries whose candidates have a gold quality (or 0/1 correctness).

        ``gold``: ``{query id: {candidate id: value}}``; without it, each candidate's ``metadata[label_field]``.
        ``method``: ``"coordinate-ascent"`` maximises the mean gold value of the selected (top) candidate directly,
        one weight at a time over a grid (:func:`surerank.aggregate.search.coordinate_ascent`); ``"logistic"``
        fits a logistic regression of "is a best candidate of its list" on the normalised features (L2 ``l2``).
        ``options`` are the ranker's (``qe``, ``features``, ...).
        """
        if method not in FIT_METHODS:
            raise InputError(f"method: must be one of {', '.join(FIT_METHODS)}, got {method!r}")
        queries = list(queries)
        if not queries:
            raise InputError("fit: no dev query")
        options.pop("weights", None)
        probe = cls(**options)
        labels = [_gold(q, gold, label_field) for q in queries]
        matrices, _ = probe.feature_matrices(queries)
        z = [normalise_columns(m, probe.normalise) for m in matrices]
        if method == "coordinate-ascent":
            w, _ = coordinate_ascent(lambda trial: _objective(z, labels, trial), len(probe.features), passes=passes)
        else:
            w = _logistic(z, labels, l2)
        probe.weights = dict(zip(probe.features, w.tolist()))
        singles = {f: _objective(z, labels, np.eye(len(probe.features))[k]) for k, f in enumerate(probe.features)}
        probe.fit_report = {
            "method": method, "queries": len(queries), "objective": _objective(z, labels, w),
            "single_features": singles, "oracle": float(np.mean([lab.max() for lab in labels])),
            "first_candidate": float(np.mean([lab[0] for lab in labels])),
        }
        logger.info("qe fit (%s) on %d queries: mean gold of the selected %.4f (oracle %.4f)", method, len(queries),
                    probe.fit_report["objective"], probe.fit_report["oracle"])
        return probe

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the weights and the feature configuration as JSON (``Reranker("qe", weights=path)`` reads it),
        atomically: a ranker loading it meanwhile reads the old file or the new one, never half."""
        if self.weights is None:
            raise InputError("save: this ranker has no weights (fit it first)")
        bad = [r for r in self.qe_refs if not isinstance(r, (str, Mapping))]
        if bad:
            raise InputError("save: QE rankers given as objects cannot be saved; give them by name or as "
                             "{'name': ..., **options}")
        record = {"format": FORMAT, "version": 1, "features": self.features, "weights": self.weights,
                  "normalise": self.normalise,
                  "config": {"qe": [r if isinstance(r, str) else dict(r) for r in self.qe_refs],
                             "mbr": self.mbr_options, "logprob_field": self.logprob_field},
                  "fit": self.fit_report}
        atomic_write_json(path, record, indent=2)


def load_weights(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a weights file written by :meth:`QERanker.save`, checking its shape."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"weights: no such file {str(p)!r}")
    try:
        record = json.loads(p.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{p}: invalid JSON: {error.msg} at line {error.lineno}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise InputError(f"{p}: not a surerank QE weights file (field 'format' must be {FORMAT!r})")
    weights = record.get("weights")
    if not isinstance(weights, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in weights.values()):
        raise InputError(f"{p}: field 'weights' must map feature names to numbers")
    return record


def normalise_columns(matrix: np.ndarray, how: str) -> np.ndarray:
    """Per-list normalisation of each feature column, so one weight means the same on every list."""
    m = np.asarray(matrix, dtype=float)
    if how == "none":
        return m
    if how == "zscore":
        std = m.std(axis=0)
        return np.where(std > 0, (m - m.mean(axis=0)) / np.where(std > 0, std, 1.0), 0.0)
    span = m.max(axis=0) - m.min(axis=0)
    return np.where(span > 0, (m - m.min(axis=0)) / np.where(span > 0, span, 1.0), 0.0)


def _in_input_order(ranked: RankedList) -> np.ndarray:
    values = np.zeros(len(ranked.items))
    for item in ranked.items:
        values[item.index] = item.score
    return values


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def _gold(query: Query, gold: Mapping[str, Mapping[str, float]] | None, field: str) -> np.ndarray:
    values = []
    for c in query.candidates:
        if gold is not None:
            v = gold.get(query.id, {}).get(c.id)
            where = f"gold[{query.id!r}][{c.id!r}]"
        else:
            v = c.metadata.get(field)
            where = f"query {query.id!r}, candidate {c.id!r}: metadata field {field!r}"
        if isinstance(v, bool):
            v = float(v)
        if not isinstance(v, (int, float)) or v != v:
            raise InputError(f"fit: {where} must be a number (the candidate's gold quality), got {v!r}")
        values.append(float(v))
    return np.array(values)


def _objective(z: list[np.ndarray], labels: list[np.ndarray], w: np.ndarray) -> float:
    """Mean gold value of the selected candidate (the first on tied scores, as the ranked list orders it)."""
    return float(np.mean([lab[int(np.argmax(m @ w))] for m, lab in zip(z, labels)]))


def _logistic(z: list[np.ndarray], labels: list[np.ndarray], l2: float) -> np.ndarray:
    """L2 logistic regression of "is a best candidate of its list"; lists where all are equally good are skipped."""
    from scipy.optimize import minimize  # lazy: ~0.7 s to import, and only this fit method needs it

    rows, ys = [], []
    for m, lab in zip(z, labels):
        if lab.max() == lab.min():
            continue
        rows.append(m)
        ys.append((lab == lab.max()).astype(float))
    if not rows:
        raise InputError("fit: every dev list has equally good candidates; nothing to learn from")
    x, y = np.vstack(rows), np.concatenate(ys)
    sign = 2 * y - 1

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = params[:-1], params[-1]
        margin = sign * (x @ w + b)
        value = np.logaddexp(0.0, -margin).sum() + 0.5 * l2 * w @ w
        p = -sign / (1.0 + np.exp(margin))
        grad = np.append(x.T @ p + l2 * w, p.sum())
        return float(value), grad

    result = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B")
    w = result.x[:-1]
    return w / np.abs(w).max() if np.abs(w).max() > 0 else w
