"""Risk-controlled cutoffs: how many passages to keep so that few relevant ones are lost.

The risk of a query is its miss rate, the share of its relevant passages that the cutoff drops.  Two
cutoff families, both monotone in a parameter lambda (keeping more never misses more):

* ``topk``: keep the first k items;
* ``threshold``: keep the items whose probability (or raw score) is >= t, and at least ``k_min``.

Two guarantees, both over the draw of calibration and test queries (exchangeable, e.g. the same source):

* conformal risk control (Angelopoulos et al., 2022): the smallest lambda with
  n/(n+1) * R_hat(lambda) + 1/(n+1) <= alpha gives E[miss rate of a new query] <= alpha;
* Learn-then-Test (Angelopoulos, Bates et al., 2021): each lambda is tested for H0: R(lambda) > alpha with the
  Hoeffding-Bentkus p-value; Bonferroni or fixed-sequence testing (from the most conservative lambda down)
  controls the family-wise error, so P(R(lambda_hat) <= alpha) >= 1 - delta.

What the miss rate is measured against (``scope``):

* ``candidates`` (default): the relevant passages among the candidates the reranker saw.  The first stage's
  own misses are outside any reranker cutoff; when they alone exceed alpha a warning says so.
* ``judged``: every relevant judgment of the query, retrieved or not (end-to-end).  When the first stage never
  retrieved enough of them, alpha cannot be met by any cutoff: a warning is logged, the result carries it,
  and the cutoff falls back to keeping everything.

Queries without any relevant passage (in the chosen scope) have nothing to miss.  ``no_relevant="skip"``
(default) leaves them out of calibration, so the guarantee is the stricter one, conditional on a query
having a relevant passage; ``"zero"`` counts them with miss rate 0, a guarantee over all queries.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import binom

from surerank.errors import InputError
from surerank.trust.labels import LabelledList
from surerank.types import RankedList

logger = logging.getLogger(__name__)

SCOPES = ("candidates", "judged")
NO_RELEVANT = ("skip", "zero")
KINDS = ("topk", "threshold")
METHODS = ("crc", "ltt")
CORRECTIONS = ("fixed_sequence", "bonferroni")
MAX_THRESHOLDS = 2000


def _denominators(labelled: Sequence[LabelledList], scope: str) -> np.ndarray:
    if scope not in SCOPES:
        raise InputError(f"scope: must be one of {SCOPES}, got {scope!r}")
    if scope == "judged":
        return np.array([lab.n_relevant_judged for lab in labelled], dtype=float)
    return np.array([lab.n_relevant_retrieved for lab in labelled], dtype=float)


def _miss(kept_relevant: np.ndarray, denominator: float) -> np.ndarray:
    if denominator <= 0:
        return np.zeros_like(kept_relevant, dtype=float)
    return 1.0 - kept_relevant / denominator


def topk_losses(labelled: Sequence[LabelledList], ks: Sequence[int], scope: str = "candidates") -> np.ndarray:
    """Miss rate of each query (rows) when keeping the top k, for each k in ``ks`` (columns)."""
    denominators = _denominators(labelled, scope)
    ks_arr = np.asarray(ks, dtype=int)
    out = np.zeros((len(labelled), ks_arr.size))
    for row, (lab, d) in enumerate(zip(labelled, denominators, strict=True)):
        cum = np.r_[0.0, np.cumsum(lab.binary_labels())]
        out[row] = _miss(cum[np.minimum(ks_arr, cum.size - 1)], d)
    return out


def threshold_losses(
    labelled: Sequence[LabelledList], thresholds: Sequence[float], scope: str = "candidates",
    use: str = "probability", k_min: int = 0,
) -> np.ndarray:
    """Miss rate of each query (rows) when keeping items with value >= t (and at least k_min), per t."""
    denominators = _denominators(labelled, scope)
    t = np.asarray(thresholds, dtype=float)
    out = np.zeros((len(labelled), t.size))
    for row, (lab, d) in enumerate(zip(labelled, denominators, strict=True)):
        values = _values(lab, use)
        order = np.argsort(-values, kind="stable")  # rank order already, but be safe with ties
        cum = np.r_[0.0, np.cumsum(lab.binary_labels()[order])]
        kept = np.searchsorted(-values[order], -t, side="right")
        kept = np.minimum(np.maximum(kept, k_min), values.size)
        out[row] = _miss(cum[kept], d)
    return out


def _values(lab: LabelledList, use: str) -> np.ndarray:
    if use == "score":
        return lab.scores
    if use == "probability":
        if lab.probabilities is None:
            raise InputError(f"query {lab.qid!r}: a probability cutoff needs calibrated probabilities")
        return lab.probabilities
    raise InputError(f"use: must be 'probability' or 'score', got {use!r}")


def crc_index(losses: np.ndarray, alpha: float, bound: float = 1.0) -> int | None:
    """First column (least kept) meeting the conformal risk control condition; None when none does.

    Columns must be ordered so that losses are non-increasing from left to right.
    """
    n = losses.shape[0]
    if n == 0:
        return None
    adjusted = n / (n + 1) * losses.mean(axis=0) + bound / (n + 1)
    ok = np.flatnonzero(adjusted <= alpha)
    return int(ok[0]) if ok.size else None


def hb_pvalue(risk_hat: np.ndarray | float, n: int, alpha: float) -> np.ndarray:
    """Hoeffding-Bentkus p-value for H0: risk > alpha, from the mean of n losses bounded in [0, 1]."""
    r = np.atleast_1d(np.asarray(risk_hat, dtype=float))
    a = np.minimum(r, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        h1 = np.where(a > 0, a * np.log(a / alpha), 0.0) + (1 - a) * np.log((1 - a) / (1 - alpha))
    hoeffding = np.exp(-n * h1)
    bentkus = math.e * binom.cdf(np.ceil(n * r - 1e-9), n, alpha)
    return np.minimum(np.minimum(hoeffding, bentkus), 1.0)


def ltt_index(
    losses: np.ndarray, alpha: float, delta: float, correction: str = "fixed_sequence"
) -> int | None:
    """Column with the least kept among those Learn-then-Test certifies; None when none is certified."""
    if correction not in CORRECTIONS:
        raise InputError(f"correction: must be one of {CORRECTIONS}, got {correction!r}")
    n, m = losses.shape
    if n == 0:
        return None
    p = hb_pvalue(losses.mean(axis=0), n, alpha)
    if correction == "bonferroni":
        ok = np.flatnonzero(p <= delta / m)
        return int(ok[0]) if ok.size else None
    chosen = None
    for j in range(m - 1, -1, -1):  # most conservative first; stop at the first null not rejected
        if p[j] > delta:
            break
        chosen = j
    return chosen


@dataclass
class ConformalCutoff:
    """A cutoff calibrated to a target miss rate; ``fit`` on labelled lists, ``apply`` sets ``keep``."""

    alpha: float = 0.1
    kind: str = "topk"
    method: str = "crc"
    delta: float = 0.1
    correction: str = "fixed_sequence"
    scope: str = "candidates"
    no_relevant: str = "skip"
    use: str = "probability"
    k_min: int = 0
    k_max: int | None = None
    k: int | None = None
    threshold: float | None = None
    report: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value, allowed in (("kind", self.kind, KINDS), ("method", self.method, METHODS),
                                     ("correction", self.correction, CORRECTIONS),
                                     ("scope", self.scope, SCOPES),
                                     ("no_relevant", self.no_relevant, NO_RELEVANT)):
            if value not in allowed:
                raise InputError(f"{name}: must be one of {allowed}, got {value!r}")
        if not 0 < self.alpha < 1:
            raise InputError(f"alpha: must be in (0, 1), got {self.alpha}")
        if not 0 < self.delta < 1:
            raise InputError(f"delta: must be in (0, 1), got {self.delta}")

    def fit(self, labelled: Sequence[LabelledList]) -> ConformalCutoff:
        denominators = _denominators(labelled, self.scope)
        used = [lab for lab, d in zip(labelled, denominators, strict=True)
                if d > 0 or self.no_relevant == "zero"]
        if not used:
            raise InputError(f"conformal cutoff: none of the {len(labelled)} calibration queries has a "
                             f"relevant passage in scope {self.scope!r}")
        longest = max(lab.scores.size for lab in used)
        k_max = longest if self.k_max is None else self.k_max
        if self.kind == "topk":
            grid: np.ndarray = np.arange(self.k_min, k_max + 1)
            losses = topk_losses(used, grid, self.scope)
        else:
            values = np.unique(np.concatenate([_values(lab, self.use) for lab in used]))[::-1]
            if values.size > MAX_THRESHOLDS:
                values = np.quantile(values, np.linspace(1, 0, MAX_THRESHOLDS))
            grid = np.r_[values, -np.inf]
            losses = threshold_losses(used, grid, self.scope, self.use, self.k_min)
        index = (crc_index(losses, self.alpha) if self.method == "crc"
                 else ltt_index(losses, self.alpha, self.delta, self.correction))
        attainable = index is not None
        chosen = index if attainable else grid.size - 1
        if self.kind == "topk":
            self.k, self.threshold = int(grid[chosen]), None
        else:
            self.k, self.threshold = None, float(grid[chosen])
        first_stage_miss = _first_stage_miss(labelled)
        warnings = []
        if not attainable:
            warnings.append(
                f"alpha={self.alpha} cannot be met on the {len(used)} calibration queries even keeping "
                f"everything (miss rate {losses[:, -1].mean():.3f} in scope {self.scope!r}; the first stage "
                f"retrieved only {1 - first_stage_miss:.1%} of the relevant judged passages); keeping all")
        elif first_stage_miss > self.alpha:
            warnings.append(
                f"the first stage missed {first_stage_miss:.1%} of the relevant judged passages, more than "
                f"alpha={self.alpha}: the guarantee holds for the candidates only, not end to end")
        for w in warnings:
            logger.warning("conformal cutoff: %s", w)
        self.report = {
            "attainable": attainable, "calibration_queries": len(used),
            "skipped_without_relevant": len(labelled) - len(used),
            "calibration_miss_rate": float(losses[:, chosen].mean()),
            "first_stage_miss_rate": first_stage_miss, "warnings": warnings,
        }
        return self

    def keep_count(self, values: np.ndarray) -> int:
        """How many of a list's items (values best first) the fitted cutoff keeps."""
        if self.kind == "topk":
            if self.k is None:
                raise RuntimeError("conformal cutoff is not fitted")
            return min(self.k, values.size)
        if self.threshold is None:
            raise RuntimeError("conformal cutoff is not fitted")
        return min(values.size, max(self.k_min, int(np.sum(values >= self.threshold))))

    def apply(self, lists: Sequence[RankedList]) -> Sequence[RankedList]:
        for ranked in lists:
            values = np.array([_item_value(item, self.use if self.kind == "threshold" else "score")
                               for item in ranked.items])
            kept = self.keep_count(values)
            for position, item in enumerate(ranked.items):
                item.keep = position < kept
            ranked.info["cutoff"] = {"method": f"{self.method}-{self.kind}", "alpha": self.alpha,
                                     "kept": kept, "k": self.k, "threshold": self.threshold,
                                     "warnings": list(self.report.get("warnings", []))}
        return lists

    def to_dict(self) -> dict[str, Any]:
        data = {f: getattr(self, f) for f in ("alpha", "kind", "method", "delta", "correction", "scope",
                                                "no_relevant", "use", "k_min", "k_max", "k", "threshold",
                                                "report")}
        if data["threshold"] is not None and not np.isfinite(data["threshold"]):
            data["threshold"] = "-inf"  # keep everything; strict JSON has no infinity
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConformalCutoff:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise InputError(f"cutoff: unknown fields {sorted(unknown)}")
        data = dict(data)
        if data.get("threshold") is not None:
            data["threshold"] = float(data["threshold"])
        return cls(**data)


def _item_value(item: Any, use: str) -> float:
    if use == "probability":
        if item.probability is None:
            raise InputError(f"item {item.id!r}: a probability cutoff needs calibrated probabilities")
        return float(item.probability)
    return float(item.score)


def _first_stage_miss(labelled: Sequence[LabelledList]) -> float:
    """Mean share of each query's relevant judgments that are not among its candidates."""
    rates = [1 - lab.n_relevant_retrieved / lab.n_relevant_judged
             for lab in labelled if lab.n_relevant_judged]
    return float(np.mean(rates)) if rates else 0.0
