"""Rankers that run other rankers (fusion's members, QE models, an MBR utility) take each one the same way.

A user names the inner ranker as a registered name (``"embedding"``), a mapping with its options
(``{"name": "cross-encoder", "model": ...}``) or a ranker object; :func:`make_ranker` turns any of them into
a ranker, through :func:`surerank.registry.create` for the first two.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from surerank.errors import InputError
from surerank.ranker import BaseRanker
from surerank.registry import create

RankerRef = str | Mapping[str, Any] | BaseRanker


def make_ranker(ref: RankerRef, what: str) -> BaseRanker:
    """A ranker from a registered name, a ``{"name": ..., **options}`` mapping, or a ranker object.

    ``what`` names the option in errors (``"qe"``, ``"rankers[1]"``)."""
    if isinstance(ref, str):
        return create(ref)
    if isinstance(ref, Mapping):
        options = dict(ref)
        if not isinstance(options.get("name"), str):
            raise InputError(f"{what}: a mapping needs a string field 'name' (the registered ranker)")
        return create(options.pop("name"), **options)
    if hasattr(ref, "rank_many"):
        return ref  # type: ignore[return-value]
    raise InputError(f"{what}: expected a ranker name, a mapping with 'name', or a ranker, got {type(ref).__name__}")
