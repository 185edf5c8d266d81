"""The one place where the service meets the trust layer (calibration, keep flags, abstention, cutoffs).

The app only knows :class:`TrustHook`: ``check`` refuses, before any model work, what a request asks
for that this model cannot give (422 naming the field); ``apply`` fills ``item.probability``,
``item.keep``, ``ranked.abstain`` / ``ranked.confidence`` and ``ranked.info["cutoff"]`` without
reordering.  :class:`ArtifactTrustHook` is backed by a ``surerank.trust`` artifact (or by none, in which
case only the reference-free cutoffs ``gap``, ``zscore`` and ``elbow`` are offered).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from surerank.errors import InputError
from surerank.trust import AdaptiveCutoff, TrustArtifact
from surerank.trust.cutoffs import NEEDS_PROBABILITY, PARAMETER_NAMES, parse_cutoff
from surerank.types import RankedList


@dataclass(frozen=True)
class TrustRequest:
    """What one request asks of its model's trust layer (the ``surerank`` options that need it)."""

    probability: bool = False
    keep: bool = False
    cutoff: str | None = None  # "conformal", or an adaptive method, optionally "method:parameter"


@runtime_checkable
class TrustHook(Protocol):
    def check(self, request: TrustRequest) -> None:
        """Raise :class:`InputError` naming the field when the request cannot be served (before ranking)."""

    def apply(self, ranked: RankedList, request: TrustRequest) -> RankedList:
        """Fill probabilities, keep flags, abstention and the cutoff; never reorder the list."""


class ArtifactTrustHook:
    """Trust for one served model, from its artifact (``None``: no calibration configured)."""

    def __init__(self, model: str, artifact: Any = None) -> None:
        self.model = model
        self.artifact = artifact

    def _missing(self, field_name: str, what: str) -> InputError:
        where = "has no calibration artifact configured (serve it with NAME.calibration=PATH)" \
            if self.artifact is None else "has a trust artifact without " + what
        return InputError(f"surerank.{field_name}: model {self.model!r} {where}")

    def check(self, request: TrustRequest) -> None:
        calibration = self.artifact is not None and self.artifact.calibration is not None
        if request.probability and not calibration:
            raise self._missing("probability", "a calibration map")
        if request.cutoff is None:
            if request.keep and (self.artifact is None or self.artifact.cutoff is None):
                raise self._missing("keep", "a fitted cutoff; name a reference-free one in surerank.cutoff "
                                            "(gap, zscore, elbow)")
            return
        method, _ = parse_cutoff(request.cutoff, "surerank.cutoff")
        if method == "conformal" and (self.artifact is None or self.artifact.cutoff is None):
            raise self._missing("cutoff", "a fitted conformal cutoff")
        if method in NEEDS_PROBABILITY and not calibration:
            raise self._missing("cutoff", f"a calibration map, which cutoff {method!r} needs")

    def apply(self, ranked: RankedList, request: TrustRequest) -> RankedList:
        self.check(request)
        artifact = self.artifact
        lists = [ranked]
        wants_keep = request.keep or request.cutoff is not None
        method, value = parse_cutoff(request.cutoff or "conformal", "surerank.cutoff")
        needs_probability = wants_keep and (method in NEEDS_PROBABILITY or (
            method == "conformal" and artifact is not None and artifact.cutoff is not None
            and artifact.cutoff.use == "probability"))
        if artifact is not None and artifact.calibration is not None and (
                request.probability or needs_probability):
            artifact.calibration.apply(lists)
        if wants_keep and artifact is not None and artifact.abstention is not None:
            artifact.abstention.apply(lists)
        if wants_keep:
            if method == "conformal":
                artifact.cutoff.apply(lists)
            else:
                options: dict[str, Any] = {"method": method}
                if value is not None:
                    options[PARAMETER_NAMES[method]] = value
                AdaptiveCutoff(**options).apply(lists)
        if not request.probability:
            for item in ranked.items:  # computed only for the cutoff; the client did not ask for it
                item.probability = None
        return ranked


def load_trust_hook(model: str, path: str, ranker_description: Mapping[str, Any] | None = None) -> TrustHook:
    """A hook backed by a ``surerank.trust`` artifact; refuses an artifact fitted for another ranker."""
    artifact = TrustArtifact.load(path)
    if ranker_description is not None:
        artifact.check_ranker(ranker_description, strict=True)
    return ArtifactTrustHook(model, artifact)


def no_calibration(model: str) -> TrustHook:
    """The hook of a model served without an artifact: only the reference-free cutoffs."""
    return ArtifactTrustHook(model, None)
