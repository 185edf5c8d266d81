"""The trust artifact: everything fitted on labelled queries, stored as JSON next to the ranker's config.

A calibration map is only valid for the ranker (and options) whose scores it was fitted on, so the
artifact records ``ranker.describe()`` and :meth:`TrustArtifact.check_ranker` refuses a different one.
Applying an artifact fills ``probability``, ``abstain``/``confidence`` and ``keep``; it never reorders.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from surerank.errors import InputError
from surerank.trust.abstention import Abstainer
from surerank.trust.calibration import Calibrator, calibrator_from_dict, fit_calibrator
from surerank.trust.conformal import ConformalCutoff
from surerank.trust.labels import Qrels, calibration_pairs, label_lists, ndcg_from_qrels
from surerank.trust.metrics import calibration_report
from surerank.types import RankedList

logger = logging.getLogger(__name__)
FORMAT = "surerank.trust"
VERSION = 1


@dataclass
class TrustArtifact:
    ranker: dict[str, Any]
    relevance_level: int = 2
    calibration: Calibrator | None = None
    abstention: Abstainer | None = None
    cutoff: ConformalCutoff | None = None
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def check_ranker(self, description: Mapping[str, Any], strict: bool = True) -> None:
        """Refuse (or, with ``strict=False``, warn about) a ranker configured unlike the fitted one."""
        mine, theirs = dict(self.ranker), dict(description)
        differing = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if not differing:
            return
        detail = ", ".join(f"{k}: fitted {mine.get(k)!r}, now {theirs.get(k)!r}" for k in differing)
        message = f"trust artifact was fitted for another ranker configuration ({detail})"
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
            "format": FORMAT, "version": VERSION, "ranker": self.ranker,
            "relevance_level": self.relevance_level,
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "abstention": self.abstention.to_dict() if self.abstention else None,
            "cutoff": self.cutoff.to_dict() if self.cutoff else None,
            "fitted_on": self.fitted_on,
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrustArtifact:
        if data.get("format") != FORMAT:
            raise InputError(f"trust artifact: field 'format' must be {FORMAT!r}, got {data.get('format')!r}")
        if data.get("version") != VERSION:
            raise InputError(
                f"trust artifact: version {data.get('version')!r} is not supported (want {VERSION})")
        if not isinstance(data.get("ranker"), Mapping):
            raise InputError("trust artifact: field 'ranker' must be the ranker's description object")
        return cls(
            ranker=dict(data["ranker"]),
            relevance_level=int(data.get("relevance_level", 2)),
            calibration=calibrator_from_dict(data["calibration"]) if data.get("calibration") else None,
            abstention=Abstainer.from_dict(data["abstention"]) if data.get("abstention") else None,
            cutoff=ConformalCutoff.from_dict(data["cutoff"]) if data.get("cutoff") else None,
            fitted_on=dict(data.get("fitted_on") or {}),
        )

    @classmethod
    def load(cls, path: str | Path) -> TrustArtifact:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise InputError(f"{path}: not a JSON trust artifact ({error})") from error
        if not isinstance(data, dict):
            raise InputError(f"{path}: a trust artifact is a JSON object")
        return cls.from_dict(data)


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
    source: str = "",
) -> TrustArtifact:
    """Fit the requested trust components on ranked lists of labelled queries.

    The lists are not modified.  Abstention is fitted against nDCG@``metric_k`` of each query.
    """
    labelled = label_lists(lists, qrels, relevance_level)
    artifact = TrustArtifact(ranker=dict(ranker), relevance_level=relevance_level)
    scores, labels = calibration_pairs(labelled, unjudged=unjudged)
    artifact.fitted_on = {"source": source, "queries": len(labelled), "pairs": int(scores.size),
                          "relevant_pairs": int(labels.sum()), "unjudged": unjudged,
                          "queries_without_judgments": len(lists) - len(labelled)}
    if calibration:
        artifact.calibration = fit_calibrator(calibration, scores, labels)
        artifact.fitted_on["calibration_in_sample"] = calibration_report(
            artifact.calibration.predict(scores), labels)
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
    if cutoff_alpha is not None:
        use = "probability" if artifact.calibration is not None else "score"
        artifact.cutoff = ConformalCutoff(alpha=cutoff_alpha, kind=cutoff_kind, method=cutoff_method,
                                          delta=delta, scope=scope, use=use).fit(labelled)
    return artifact
