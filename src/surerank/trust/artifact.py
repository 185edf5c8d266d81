"""The trust artifact: everything fitted on labelled queries, stored as JSON next to the ranker's config.

A calibration map is only valid for the scores it was fitted on, so the artifact records the ranker's
``describe()`` and the *score fingerprint* of it (:mod:`surerank.trust.fingerprint`: the model's content
hashes, precision, max length, pooling, prefixes, ranker options; not its install path, thread count or,
for a batch-invariant engine, its batch size).  :meth:`TrustArtifact.check_ranker` refuses a ranker whose
fingerprint differs and names each differing field with both values.  Loading validates every field
(:func:`validate`), so a hand-edited artifact fails with the field's name, never a ``KeyError``.
Applying an artifact fills ``probability``, ``abstain``/``confidence`` and ``keep``; it never reorders.

Format (``"kind": "surerank.trust"``, version 2; version 1 files, with ``"format"`` instead of ``"kind"``
and no fingerprint, are still read and checked by model name):
``{"kind", "version", "ranker": describe(), "fingerprint": {...}, "relevance_level", "calibration",
"abstention", "cutoff", "fitted_on"}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from surerank import documents as schema
from surerank.errors import InputError
from surerank.storage import atomic_write_json
from surerank.trust.abstention import CONFIDENCES, DATA_DRIVEN, Abstainer, coverage_curve
from surerank.trust.calibration import CALIBRATORS, Calibrator, calibrator_from_dict, fit_calibrator
from surerank.trust.calibration_metrics import calibration_report, reliability_bins
from surerank.trust.conformal import CORRECTIONS, KINDS, METHODS, NO_RELEVANT, SCOPES, ConformalCutoff
from surerank.trust.fingerprint import describe_difference, differences, score_fingerprint
from surerank.trust.labels import Qrels, calibration_pairs, label_lists, ndcg_from_qrels
from surerank.types import RankedList

logger = logging.getLogger(__name__)
KIND = "surerank.trust"
FORMAT = KIND  # the version-1 field name was "format"
VERSION = 2
READABLE_VERSIONS = (1, 2)
CURVE_POINTS = 50  # risk-coverage points kept in fit_info (the report draws them)


@dataclass
class TrustArtifact:
    ranker: dict[str, Any]
    relevance_level: int = 2
    calibration: Calibrator | None = None
    abstention: Abstainer | None = None
    cutoff: ConformalCutoff | None = None
    fitted_on: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] | None = None  # None: computed from ``ranker`` (see __post_init__)
    version: int = VERSION  # the version the artifact was read as (1: no content hashes recorded)

    def __post_init__(self) -> None:
        if self.fingerprint is None:
            self.fingerprint = score_fingerprint(self.ranker, content=self.version >= 2)

    def check_ranker(self, description: Mapping[str, Any], strict: bool = True) -> None:
        """Refuse (or, with ``strict=False``, warn about) a ranker whose scores the artifact does not fit.

        Only the score fingerprint is compared: a copy of the model at another path, another thread
        count or (batch-invariant engines) another batch size is the same ranker.
        """
        content = self.version >= 2
        if not content:
            logger.warning("trust artifact (version 1) records no content hashes of the model: the model is "
                           "checked by name only; refit it with `surerank calibrate` to record them")
        now = score_fingerprint(description, content=content)
        differing = differences(self.fingerprint, now)
        if not differing:
            return
        parts = [describe_difference(*d) for d in differing]
        if any(f.endswith(("weights_sha256", "tokenizer_sha256")) for f, _, _ in differing):
            fitted_model, now_model = self.ranker.get("model"), dict(description).get("model")
            parts.append(f"model: fitted {fitted_model!r}, now {now_model!r}")
        message = f"trust artifact was fitted for another ranker configuration ({'; '.join(parts)})"
        if strict:
            raise InputError(message + "; refit it with `surerank calibrate`")
        logger.warning(message)

    def apply(self, lists: Sequence[RankedList]) -> Sequence[RankedList]:
        """Calibrate, then decide abstention, then set keep flags; the order of items never changes."""
        if self.calibration is not None:
            self.calibration.apply(lists)
        if self.abstention is not None:
            self.abstention.apply(lists)
        if self.cutoff is not None:
            self.cutoff.apply(lists)
        return lists

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND, "version": VERSION, "ranker": self.ranker, "fingerprint": self.fingerprint,
            "relevance_level": self.relevance_level,
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "abstention": self.abstention.to_dict() if self.abstention else None,
            "cutoff": self.cutoff.to_dict() if self.cutoff else None,
            "fitted_on": self.fitted_on,
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_json(path, self.to_dict(), indent=2, allow_nan=False)
        return path

    def summary(self, artifact: str = "") -> FitSummary:
        """What was fitted and its in-sample figures: what ``surerank calibrate`` prints."""
        cutoff = None
        if self.cutoff is not None:
            c = self.cutoff
            threshold = c.threshold if c.threshold is None or np.isfinite(c.threshold) else None
            cutoff = {"alpha": c.alpha, "kind": c.kind, "method": c.method, "scope": c.scope, "k": c.k,
                      "threshold": threshold, "report": dict(c.report)}
        return FitSummary(
            artifact=artifact, ranker=str(self.ranker.get("ranker", "")), fitted_on=dict(self.fitted_on),
            calibration=self.calibration.method if self.calibration is not None else None,
            abstention=({"confidence": self.abstention.confidence, "threshold": self.abstention.threshold,
                         **self.abstention.fit_info} if self.abstention is not None else None),
            cutoff=cutoff)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "trust artifact") -> TrustArtifact:
        """Validate (:func:`validate`, errors name the field), then build the components."""
        version = validate(data, where)
        return cls(
            ranker=dict(data["ranker"]),
            relevance_level=int(data.get("relevance_level", 2)),
            calibration=calibrator_from_dict(dict(data["calibration"])) if data.get("calibration") else None,
            abstention=Abstainer.from_dict(dict(data["abstention"])) if data.get("abstention") else None,
            cutoff=ConformalCutoff.from_dict(dict(data["cutoff"])) if data.get("cutoff") else None,
            fitted_on=dict(data.get("fitted_on") or {}),
            fingerprint=dict(data["fingerprint"]) if version >= 2 else None,
            version=version,
        )

    @classmethod
    def load(cls, path: str | Path) -> TrustArtifact:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise InputError(f"{path}: cannot read the trust artifact ({error.strerror or error})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"{path}: not a JSON trust artifact ({error})") from None
        return cls.from_dict(data, where=f"trust artifact {path}")


@dataclass
class FitSummary:
    """What ``surerank calibrate`` prints (``"kind": "surerank.calibration"``): the artifact's path, the
    fitting data and the in-sample figures of each component (``surerank report --trust`` draws them)."""

    artifact: str
    ranker: str
    fitted_on: dict[str, Any]
    calibration: str | None = None  # the map's method
    abstention: dict[str, Any] | None = None  # confidence, threshold, fit_info (rates, nAUC, risk_coverage)
    cutoff: dict[str, Any] | None = None  # alpha, kind, method, scope, k, threshold, report

    KIND = "surerank.calibration"
    VERSION = 1

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.KIND, "version": self.VERSION, "artifact": self.artifact, "ranker": self.ranker,
                "fitted_on": self.fitted_on, "calibration": self.calibration, "abstention": self.abstention,
                "cutoff": self.cutoff}

    @classmethod
    def from_dict(cls, data: Any, where: str = "calibration summary") -> FitSummary:
        schema.header(data, cls.KIND, (cls.VERSION,), where)
        fitted_on = schema.get(data, "fitted_on", "object", where)
        _check_fitted_on(fitted_on, where)
        abstention = schema.get(data, "abstention", "object", where, nullable=True)
        if abstention is not None:
            _check_fit_info(abstention, where, "abstention")
        cutoff = schema.get(data, "cutoff", "object", where, nullable=True)
        if cutoff is not None:
            for name in ("alpha",):
                schema.get(cutoff, name, "number", where, "cutoff")
            schema.get(cutoff, "kind", "str", where, "cutoff", choices=KINDS)
            schema.get(cutoff, "method", "str", where, "cutoff", choices=METHODS)
            schema.get(cutoff, "k", "int", where, "cutoff", nullable=True)
            schema.get(cutoff, "threshold", "number", where, "cutoff", nullable=True)
            schema.get(cutoff, "report", "object", where, "cutoff")
        return cls(artifact=schema.get(data, "artifact", "str", where),
                   ranker=schema.get(data, "ranker", "str", where), fitted_on=dict(fitted_on),
                   calibration=schema.get(data, "calibration", "str", where, nullable=True,
                                          choices=tuple(CALIBRATORS)),
                   abstention=None if abstention is None else dict(abstention),
                   cutoff=None if cutoff is None else dict(cutoff))


# --------------------------------------------------------------------------------------------------
# Validation: every field the components read, checked before any of them is built
# --------------------------------------------------------------------------------------------------


def validate(data: Any, where: str = "trust artifact") -> int:
    """Check a trust artifact document field by field; returns its version.

    Raises :class:`InputError` naming the first bad field (``calibration.params.a``, ``abstention.model.coef``,
    ``cutoff.k``...) and what it must be.
    """
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: a trust artifact is a JSON object, got {type(data).__name__}")
    if "kind" not in data and data.get("format") == FORMAT and data.get("version") == 1:
        version = 1  # written before "kind" (and the fingerprint) existed
    else:
        version = schema.header(data, KIND, READABLE_VERSIONS, where)
    schema.get(data, "ranker", "object", where)
    if version >= 2:
        schema.get(data, "fingerprint", "object", where)
    schema.get(data, "relevance_level", "int", where, optional=True)
    schema.get(data, "fitted_on", "object", where, optional=True, nullable=True)
    calibration = schema.get(data, "calibration", "object", where, optional=True, nullable=True)
    if calibration is not None:
        _check_calibration(calibration, where)
    abstention = schema.get(data, "abstention", "object", where, optional=True, nullable=True)
    if abstention is not None:
        _check_abstention(abstention, where)
    cutoff = schema.get(data, "cutoff", "object", where, optional=True, nullable=True)
    if cutoff is not None:
        _check_cutoff(cutoff, where, calibrated=calibration is not None)
    return version


def _check_calibration(cal: Mapping[str, Any], where: str) -> None:
    method = schema.get(cal, "method", "str", where, "calibration", choices=tuple(CALIBRATORS))
    params = schema.get(cal, "params", "object", where, "calibration")
    path = "calibration.params"
    if method == "platt":
        schema.get(params, "a", "number", where, path)
        schema.get(params, "b", "number", where, path)
        schema.get(params, "smooth", "bool", where, path, optional=True)
    elif method == "temperature":
        value = schema.get(params, "temperature", "number", where, path)
        if value <= 0:
            raise InputError(f"{where}: field '{path}.temperature' must be > 0, got {value!r}")
    else:
        x = schema.numbers(params, "x", where, path, non_empty=True)
        schema.numbers(params, "y", where, path, length=len(x))


def _check_abstention(ab: Mapping[str, Any], where: str) -> None:
    confidence = schema.get(ab, "confidence", "str", where, "abstention", choices=CONFIDENCES)
    k = schema.get(ab, "k", "int", where, "abstention", minimum=1)
    schema.get(ab, "threshold", "number", where, "abstention")
    schema.get(ab, "fit_info", "object", where, "abstention", optional=True, nullable=True)
    model = schema.get(ab, "model", "object", where, "abstention", optional=True, nullable=True,
                       default=None)
    if confidence in DATA_DRIVEN:
        if model is None:
            raise InputError(f"{where}: field 'abstention.model' is missing (confidence {confidence!r} "
                             "is fitted: it needs its model)")
        path = "abstention.model"
        schema.get(model, "method", "str", where, path, choices=(confidence,))
        mk = schema.get(model, "k", "int", where, path, minimum=1)
        if mk != k:
            raise InputError(f"{where}: field '{path}.k' must equal abstention.k ({k}), got {mk}")
        schema.get(model, "alpha", "number", where, path)
        schema.get(model, "intercept", "number", where, path)
        for name in ("coef", "mean", "scale"):
            schema.numbers(model, name, where, path, length=k)
        if confidence == "u_log":
            schema.get(model, "target", "number", where, path, optional=True, nullable=True)


def _check_cutoff(cut: Mapping[str, Any], where: str, calibrated: bool) -> None:
    path = "cutoff"
    known = set(ConformalCutoff.__dataclass_fields__)
    unknown = sorted(set(cut) - known)
    if unknown:
        raise InputError(f"{where}: field '{path}.{unknown[0]}' is not a cutoff field "
                         f"(known: {', '.join(sorted(known))})")
    alpha = schema.get(cut, "alpha", "number", where, path)
    if not 0 < alpha < 1:
        raise InputError(f"{where}: field '{path}.alpha' must be in (0, 1), got {alpha!r}")
    kind = schema.get(cut, "kind", "str", where, path, choices=KINDS)
    schema.get(cut, "method", "str", where, path, choices=METHODS)
    delta = schema.get(cut, "delta", "number", where, path, optional=True, default=0.1)
    if not 0 < delta < 1:
        raise InputError(f"{where}: field '{path}.delta' must be in (0, 1), got {delta!r}")
    schema.get(cut, "correction", "str", where, path, optional=True, choices=CORRECTIONS)
    schema.get(cut, "scope", "str", where, path, optional=True, choices=SCOPES)
    schema.get(cut, "no_relevant", "str", where, path, optional=True, choices=NO_RELEVANT)
    use = schema.get(cut, "use", "str", where, path, optional=True, choices=("probability", "score"),
                     default="probability")
    schema.get(cut, "k_min", "int", where, path, optional=True, minimum=0)
    schema.get(cut, "k_max", "int", where, path, optional=True, nullable=True, minimum=0)
    schema.get(cut, "report", "object", where, path, optional=True)
    if kind == "topk":
        schema.get(cut, "k", "int", where, path, minimum=0)
    else:
        threshold = cut.get("threshold")
        if threshold != "-inf":
            schema.get(cut, "threshold", "number", where, path)
        if use == "probability" and not calibrated:
            raise InputError(f"{where}: field '{path}.use' is 'probability' but the artifact has no "
                             "calibration to give probabilities")


def _check_fitted_on(fitted_on: Mapping[str, Any], where: str) -> None:
    for name in ("queries", "pairs"):
        schema.get(fitted_on, name, "int", where, "fitted_on")
    in_sample = schema.get(fitted_on, "calibration_in_sample", "object", where, "fitted_on", optional=True)
    if in_sample is not None:
        _check_bins(in_sample, where, "fitted_on.calibration_in_sample")


def _check_bins(report: Mapping[str, Any], where: str, path: str) -> None:
    bins = schema.get(report, "reliability", "list", where, path, optional=True, default=[])
    for i, b in enumerate(bins):
        here = f"{path}.reliability[{i}]"
        if not isinstance(b, Mapping):
            raise InputError(f"{where}: field '{here}' must be a JSON object")
        for name in ("low", "high", "observed", "confidence"):
            schema.get(b, name, "number", where, here)
        schema.get(b, "count", "int", where, here)


def _check_fit_info(info: Mapping[str, Any], where: str, path: str) -> None:
    curve = schema.get(info, "risk_coverage", "object", where, path, optional=True)
    if curve is not None:
        here = f"{path}.risk_coverage"
        schema.get(curve, "measure", "str", where, here)
        xs = schema.numbers(curve, "coverage", where, here, non_empty=True)
        schema.numbers(curve, "values", where, here, length=len(xs))


def fit_trust(
    lists: Sequence[RankedList],
    qrels: Qrels,
    ranker: Mapping[str, Any],
    calibration: str | None = "platt",
    relevance_level: int = 2,
    unjudged: str = "nonrelevant",
    abstention: str | None = None,
    abstain_rate: float | None = None,
    abstain_quality: float | None = None,
    confidence_k: int = 10,
    metric_k: int = 10,
    cutoff_alpha: float | None = None,
    cutoff_kind: str = "topk",
    cutoff_method: str = "crc",
    delta: float = 0.1,
    scope: str = "candidates",
    source: str | Sequence[str] = "",
) -> TrustArtifact:
    """Fit the requested trust components on ranked lists of labelled queries.

    The lists are not modified.  Abstention is fitted against nDCG@``metric_k`` of each query.
    ``source`` names the file(s) the lists came from (recorded in ``fitted_on``).
    """
    labelled = label_lists(lists, qrels, relevance_level)
    artifact = TrustArtifact(ranker=dict(ranker), relevance_level=relevance_level)
    scores, labels = calibration_pairs(labelled, unjudged=unjudged)
    sources = [source] if isinstance(source, str) else [str(s) for s in source]
    artifact.fitted_on = {"source": ", ".join(s for s in sources if s), "queries": len(labelled),
                          "pairs": int(scores.size), "relevant_pairs": int(labels.sum()),
                          "unjudged": unjudged, "queries_without_judgments": len(lists) - len(labelled)}
    if calibration:
        artifact.calibration = fit_calibrator(calibration, scores, labels)
        predicted = artifact.calibration.predict(scores)
        artifact.fitted_on["calibration_in_sample"] = {**calibration_report(predicted, labels),
                                                       "reliability": reliability_bins(predicted, labels)}
        for lab in labelled:
            lab.probabilities = artifact.calibration.predict(lab.scores)
    if abstention:
        by_qid = {r.query.id: r for r in lists}
        metric = np.array([ndcg_from_qrels(by_qid[lab.qid].ids, qrels[lab.qid], metric_k)
                           for lab in labelled])
        if abstain_rate is None and abstain_quality is None:
            abstain_rate = 0.1
        artifact.abstention = Abstainer(confidence=abstention, k=confidence_k).fit(
            [lab.scores for lab in labelled], metric, target_rate=abstain_rate,
            target_quality=abstain_quality)
        artifact.abstention.fit_info["metric"] = f"nDCG@{metric_k}"
        coverage, quality = coverage_curve(
            artifact.abstention.confidences([lab.scores for lab in labelled]), metric)
        step = max(1, coverage.size // CURVE_POINTS)
        keep = np.unique(np.r_[np.arange(0, coverage.size, step), coverage.size - 1])  # always full coverage
        artifact.abstention.fit_info["risk_coverage"] = {
            "measure": f"nDCG@{metric_k}", "coverage": coverage[keep].tolist(), "values": quality[keep].tolist()}
    if cutoff_alpha is not None:
        use = "probability" if artifact.calibration is not None else "score"
        artifact.cutoff = ConformalCutoff(alpha=cutoff_alpha, kind=cutoff_kind, method=cutoff_method,
                                          delta=delta, scope=scope, use=use).fit(labelled)
    return artifact


__all__ = ["KIND", "VERSION", "FitSummary", "TrustArtifact", "fit_trust", "validate"]
