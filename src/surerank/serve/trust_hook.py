"""The one place where the service meets the trust layer (calibration, keep flags, abstention, cutoffs).

The app only knows :class:`TrustHook`: given a ranked list and what the request asked for, fill
``item.probability``, ``item.keep``, ``ranked.abstain`` / ``ranked.confidence`` and, for the cutoff,
``ranked.info["cutoff"]``.  :func:`load_trust_hook` builds one from a calibration artifact with
``surerank.trust``; anything else that follows the protocol can be passed to ``create_app``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from surerank.errors import InputError, MissingDependencyError
from surerank.types import RankedList


@dataclass(frozen=True)
class TrustRequest:
    probability: bool = False
    keep: bool = False
    cutoff: str | None = None


@runtime_checkable
class TrustHook(Protocol):
    def check(self, request: TrustRequest) -> None:
        """Raise :class:`InputError` naming the field when the request cannot be served (before ranking)."""

    def apply(self, ranked: RankedList, request: TrustRequest) -> RankedList:
        """Fill probabilities, keep flags, abstention and the cutoff; never reorder the list."""


def load_trust_hook(path: str) -> TrustHook:
    """A hook backed by a ``surerank.trust`` calibration artifact."""
    try:
        from surerank.trust import serving  # type: ignore[attr-defined]
    except ImportError as error:
        raise MissingDependencyError(
            f"calibration artifact {path!r}: this build has no surerank.trust serving support ({error})"
        ) from None
    return serving.load_hook(path)


def no_calibration(model: str) -> TrustHook:
    """The hook of a model without an artifact: every extra that needs calibration is refused."""
    return _Uncalibrated(model)


class _Uncalibrated:
    def __init__(self, model: str) -> None:
        self.model = model

    def check(self, request: TrustRequest) -> None:
        for field_name, wanted in (("probability", request.probability), ("keep", request.keep),
                                   ("cutoff", request.cutoff is not None)):
            if wanted:
                raise InputError(
                    f"surerank.{field_name}: model {self.model!r} has no calibration artifact configured "
                    f"(serve it with NAME.calibration=PATH)")

    def apply(self, ranked: RankedList, request: TrustRequest) -> RankedList:
        self.check(request)
        return ranked
