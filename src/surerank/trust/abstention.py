"""Per-query abstention: say "nothing here is good enough" instead of returning a poor ranking.

After Gisserot-Boukhlef et al. (2024), "Towards trustworthy reranking: a simple yet effective abstention
mechanism".  A confidence function maps the sorted top-K score vector of a query to a number; the query is
answered when the confidence reaches a threshold and abstained on otherwise.

* reference-free confidences need no labels: ``max`` (top score), ``std`` (spread of the top-K scores),
  ``gap`` (top-1 minus top-2);
* data-driven confidences are fitted on labelled queries: ``u_lin`` is a ridge regression from the sorted
  top-K scores to the query's quality metric (e.g. nDCG@10); ``u_log`` a logistic regression with the
  metric (in [0, 1]) as a soft target, or ``metric >= target`` as a hard one.

Lists shorter than K are padded with their lowest score (an empty list with 0) so every query gets a
confidence; the number of real scores is recorded, nothing is rejected.

Evaluation: the coverage curve gives, for each share of answered queries (most confident first), the mean
quality of the answered ones; AUC is its mean, and nAUC = (AUC - random) / (oracle - random) is 0 for a
confidence no better than chance and 1 for the oracle that sorts by the true metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from surerank.errors import InputError
from surerank.types import RankedList

REFERENCE_FREE = ("max", "std", "gap")
DATA_DRIVEN = ("u_lin", "u_log")
CONFIDENCES = REFERENCE_FREE + DATA_DRIVEN


def score_matrix(score_lists: Sequence[ArrayLike], k: int) -> np.ndarray:
    """Stack each list's top-``k`` scores, sorted best first, padded with its lowest score (0 if empty)."""
    if k < 1:
        raise InputError(f"k: must be >= 1, got {k}")
    out = np.zeros((len(score_lists), k))
    for row, scores in enumerate(score_lists):
        s = np.sort(np.asarray(scores, dtype=float).ravel())[::-1][:k]
        if s.size:
            out[row, : s.size] = s
            out[row, s.size:] = s[-1]
    return out


def reference_free(score_lists: Sequence[ArrayLike], method: str, k: int = 10) -> np.ndarray:
    """Label-free confidence of each query from its scores (higher = more confident)."""
    m = score_matrix(score_lists, max(k, 2))[:, :k] if method != "gap" else score_matrix(score_lists, 2)
    if method == "max":
        return m[:, 0].copy()
    if method == "std":
        return m.std(axis=1)
    if method == "gap":
        return m[:, 0] - m[:, 1]
    raise InputError(f"confidence: reference-free methods are {REFERENCE_FREE}, got {method!r}")


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column means, scales (a constant column gets 1, not 0) and the standardised features."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    return mean, scale, (x - mean) / scale


@dataclass
class LinearConfidence:
    """u_lin: ridge regression, sorted top-K scores → quality metric (features standardised)."""

    k: int = 10
    alpha: float = 1.0
    coef: np.ndarray | None = None
    intercept: float = 0.0
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    method: str = "u_lin"

    def fit(self, score_lists: Sequence[ArrayLike], metric: ArrayLike) -> LinearConfidence:
        x, y = _design(score_lists, metric, self.k)
        self.mean, self.scale, z = _standardise(x)
        y_mean = y.mean()
        gram = z.T @ z + self.alpha * np.eye(z.shape[1])
        self.coef = np.linalg.solve(gram, z.T @ (y - y_mean))
        self.intercept = float(y_mean)
        return self

    def predict(self, score_lists: Sequence[ArrayLike]) -> np.ndarray:
        if self.coef is None:
            raise RuntimeError("u_lin confidence is not fitted")
        z = (score_matrix(score_lists, self.k) - self.mean) / self.scale
        return z @ self.coef + self.intercept

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "k": self.k, "alpha": self.alpha, "coef": _list(self.coef),
                "intercept": self.intercept, "mean": _list(self.mean), "scale": _list(self.scale)}


@dataclass
class LogisticConfidence:
    """u_log: logistic regression, sorted top-K scores → metric in [0, 1] (soft target) or metric >= target.

    Fitted by penalised maximum likelihood (L2 weight ``alpha``)."""

    k: int = 10
    alpha: float = 1.0
    target: float | None = None
    coef: np.ndarray | None = None
    intercept: float = 0.0
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    method: str = "u_log"

    def fit(self, score_lists: Sequence[ArrayLike], metric: ArrayLike) -> LogisticConfidence:
        x, y = _design(score_lists, metric, self.k)
        if self.target is not None:
            y = (y >= self.target).astype(float)
        if y.min() < 0 or y.max() > 1:
            raise InputError("u_log: the metric must lie in [0, 1] (or give a target to binarise it)")
        self.mean, self.scale, z = _standardise(x)
        alpha = self.alpha

        def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            t = z @ w[1:] + w[0]
            value = -np.sum(y * log_expit(t) + (1 - y) * log_expit(-t)) + 0.5 * alpha * w[1:] @ w[1:]
            r = expit(t) - y
            return float(value), np.r_[r.sum(), z.T @ r + alpha * w[1:]]

        w = minimize(loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B").x
        self.intercept, self.coef = float(w[0]), w[1:]
        return self

    def predict(self, score_lists: Sequence[ArrayLike]) -> np.ndarray:
        if self.coef is None:
            raise RuntimeError("u_log confidence is not fitted")
        z = (score_matrix(score_lists, self.k) - self.mean) / self.scale
        return expit(z @ self.coef + self.intercept)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "k": self.k, "alpha": self.alpha, "target": self.target,
                "coef": _list(self.coef), "intercept": self.intercept, "mean": _list(self.mean),
                "scale": _list(self.scale)}


def _list(a: np.ndarray | None) -> list[float] | None:
    return None if a is None else [float(v) for v in a]


def _design(score_lists: Sequence[ArrayLike], metric: ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(metric, dtype=float).ravel()
    if len(score_lists) != y.size:
        raise InputError(f"confidence fit: {len(score_lists)} queries but {y.size} metric values")
    if y.size < 2:
        raise InputError(f"confidence fit: needs at least 2 labelled queries, got {y.size}")
    if not np.all(np.isfinite(y)):
        raise InputError("confidence fit: every metric value must be finite")
    return score_matrix(score_lists, k), y


def confidence_from_dict(data: dict[str, Any]) -> LinearConfidence | LogisticConfidence:
    cls = {"u_lin": LinearConfidence, "u_log": LogisticConfidence}.get(data.get("method", ""))
    if cls is None:
        raise InputError(
            f"abstention.model.method: must be one of {DATA_DRIVEN}, got {data.get('method')!r}")
    obj = cls(k=int(data["k"]), alpha=float(data["alpha"]))
    if cls is LogisticConfidence:
        obj.target = data.get("target")
    obj.coef, obj.mean, obj.scale = (np.asarray(data[f], dtype=float) for f in ("coef", "mean", "scale"))
    obj.intercept = float(data["intercept"])
    return obj


# ----------------------------------------------------------------------------------------- evaluation


def coverage_curve(confidence: ArrayLike, values: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``values`` over the answered queries when the ``m`` most confident are answered, m = 1..n.

    Ties in confidence are broken at random in expectation (tied queries enter as their group mean), so a
    constant confidence gives exactly the random curve.  ``values`` may be a quality (higher is better) or
    a risk (lower is better); nAUC is sign-free.
    """
    c = np.asarray(confidence, dtype=float).ravel()
    v = np.asarray(values, dtype=float).ravel()
    if c.shape != v.shape or c.size == 0:
        raise InputError(f"coverage curve: {c.size} confidences for {v.size} values (need >= 1 each)")
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(v))):
        raise InputError("coverage curve: confidences and values must be finite")
    order = np.argsort(-c, kind="stable")
    c, v = c[order], v[order]
    _, start, counts = np.unique(-c, return_index=True, return_counts=True)
    group_mean = np.repeat(np.add.reduceat(v, start) / counts, counts)
    m = np.arange(1, c.size + 1)
    return m / c.size, np.cumsum(group_mean) / m


NAUC_RESOLUTION = 1e-9  # relative spread under which a list of values counts as constant (nauc is nan)


def curve_auc(confidence: ArrayLike, values: ArrayLike) -> float:
    """Area under the coverage curve (mean over coverages 1/n..1)."""
    return float(coverage_curve(confidence, values)[1].mean())


def nauc(confidence: ArrayLike, values: ArrayLike, higher_is_better: bool = True) -> float:
    """(AUC - random) / (oracle - random): 0 = chance, 1 = oracle; nan when every value is equal.

    ``higher_is_better=False`` for a risk: the oracle then answers the lowest-risk queries first.
    "Equal" means a spread below ``NAUC_RESOLUTION`` of the values' scale, judged on the values themselves:
    comparing the oracle's AUC with the mean (as before) called [1.0, 0.999999] equal but [0.0, 1e-06] not.
    """
    v = np.asarray(values, dtype=float).ravel()
    if v.size == 0 or np.ptp(v) <= NAUC_RESOLUTION * max(1.0, float(np.abs(v).max())):
        return float("nan")
    auc = curve_auc(confidence, v)
    oracle = curve_auc(v if higher_is_better else -v, v)
    random = float(v.mean())
    return (auc - random) / (oracle - random)


# ------------------------------------------------------------------------------------------- decision


@dataclass
class Abstainer:
    """A confidence function plus a threshold: abstain when confidence < threshold."""

    confidence: str = "max"
    k: int = 10
    threshold: float | None = None
    model: LinearConfidence | LogisticConfidence | None = None
    fit_info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.confidence not in CONFIDENCES:
            raise InputError(f"confidence: must be one of {CONFIDENCES}, got {self.confidence!r}")

    def confidences(self, score_lists: Sequence[ArrayLike]) -> np.ndarray:
        if self.confidence in REFERENCE_FREE:
            return reference_free(score_lists, self.confidence, self.k)
        if self.model is None:
            raise RuntimeError(f"{self.confidence} confidence is not fitted; fit() it on labelled queries")
        return self.model.predict(score_lists)

    def fit(
        self,
        score_lists: Sequence[ArrayLike],
        metric: ArrayLike,
        target_rate: float | None = None,
        target_quality: float | None = None,
        alpha: float = 1.0,
    ) -> Abstainer:
        """Fit the confidence model (data-driven only) and the threshold on labelled queries.

        Exactly one of ``target_rate`` (share of queries to abstain on) or ``target_quality`` (mean metric
        the answered queries must reach) sets the threshold.
        """
        if (target_rate is None) == (target_quality is None):
            raise InputError("abstention: give exactly one of target_rate or target_quality")
        metric = np.asarray(metric, dtype=float)
        if self.confidence == "u_lin":
            self.model = LinearConfidence(k=self.k, alpha=alpha).fit(score_lists, metric)
        elif self.confidence == "u_log":
            self.model = LogisticConfidence(k=self.k, alpha=alpha).fit(score_lists, metric)
        conf = self.confidences(score_lists)
        if target_rate is not None:
            self.threshold = threshold_for_rate(conf, target_rate)
        else:
            self.threshold = threshold_for_quality(conf, metric, float(target_quality))  # type: ignore[arg-type]
        answered = conf >= self.threshold
        self.fit_info = {
            "queries": int(conf.size), "target_rate": target_rate, "target_quality": target_quality,
            "abstention_rate": float(1 - answered.mean()),
            "answered_quality": float(metric[answered].mean()) if answered.any() else None,
            "nauc": nauc(conf, metric),
        }
        return self

    def decide(self, score_lists: Sequence[ArrayLike]) -> tuple[np.ndarray, np.ndarray]:
        """(abstain flags, confidences) for each query."""
        if self.threshold is None:
            raise RuntimeError("abstainer has no threshold; fit it or pass threshold=")
        conf = self.confidences(score_lists)
        return conf < self.threshold, conf

    def apply(self, lists: Sequence[RankedList]) -> Sequence[RankedList]:
        """Fill ``abstain`` and ``confidence`` on every list; items are untouched."""
        if not lists:
            return lists
        abstain, conf = self.decide([r.scores for r in lists])
        for ranked, a, c in zip(lists, abstain, conf, strict=True):
            ranked.abstain = bool(a) or not ranked.items
            ranked.confidence = float(c)
            ranked.info["abstention"] = {"confidence": self.confidence, "threshold": self.threshold,
                                         "scores_used": min(len(ranked.items), self.k)}
        return lists

    def to_dict(self) -> dict[str, Any]:
        return {"confidence": self.confidence, "k": self.k, "threshold": self.threshold,
                "model": self.model.to_dict() if self.model is not None else None, "fit_info": self.fit_info}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Abstainer:
        model = confidence_from_dict(data["model"]) if data.get("model") else None
        threshold = data.get("threshold")
        return cls(confidence=data.get("confidence", "max"), k=int(data.get("k", 10)),
                   threshold=None if threshold is None else float(threshold), model=model,
                   fit_info=dict(data.get("fit_info") or {}))


def threshold_for_rate(confidence: ArrayLike, rate: float) -> float:
    """Threshold abstaining on (about) ``rate`` of the calibration queries: the lowest-confidence ones."""
    if not 0 <= rate < 1:
        raise InputError(f"target_rate: must be in [0, 1), got {rate}")
    c = np.sort(np.asarray(confidence, dtype=float))
    n_abstain = int(np.floor(rate * c.size))
    return float(c[n_abstain]) if n_abstain < c.size else float("inf")


def threshold_for_quality(confidence: ArrayLike, metric: ArrayLike, quality: float) -> float:
    """Lowest threshold (most queries answered) whose answered queries reach mean ``metric >= quality``.

    When no threshold reaches it, the threshold answers only the most confident query group and the
    caller can read the achieved quality from ``fit_info``.
    """
    c = np.asarray(confidence, dtype=float)
    v = np.asarray(metric, dtype=float)
    order = np.argsort(-c, kind="stable")
    cs, vs = c[order], v[order]
    means = np.cumsum(vs) / np.arange(1, vs.size + 1)
    # only cut between different confidences: a threshold cannot split tied queries
    valid = np.r_[cs[1:] < cs[:-1], True]
    ok = np.flatnonzero(valid & (means >= quality))
    if ok.size == 0:
        return float(cs[0])
    return float(cs[ok[-1]])
