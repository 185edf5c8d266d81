"""The JSON documents surerank writes and reads back: small hand-written checks of their fields.

The core carries no pydantic, and a hand check names exactly what is wrong: a hand-edited or truncated
file fails with ``x.json: field 'calibration.params.a' must be a number, got 'abc'`` instead of a
``KeyError: 'coef'`` deep inside a constructor.  Every helper takes ``where`` (the file, or a label)
and ``path`` (the dotted field path inside the document).

The documents (each ``{"kind": ..., "version": ..., ...}``): ``surerank.trust`` (the trust artifact,
:mod:`surerank.trust.artifact`), ``surerank.calibration`` (what ``surerank calibrate`` prints),
``surerank.eval`` (``surerank eval --json``), ``surerank.trust-figures`` and ``surerank.throughput``
(:mod:`surerank.report.documents`, written by the benchmarks) and ``surerank.robustness`` (what
``surerank robustness --output`` writes: :class:`surerank.robustness.RobustnessResult`, whose files of
before version 1's header, ``"schema": "surerank.robustness/1"``, are read as version 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from surerank.errors import InputError

_MISSING = object()


def is_number(value: Any) -> bool:
    """A finite int or float (JSON's numbers), never a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(where: str, path: str, expected: str, value: Any) -> InputError:
    if value is _MISSING:
        return InputError(f"{where}: field '{path}' is missing ({expected})")
    return InputError(f"{where}: field '{path}' must be {expected}, got {_show(value)}")


_KINDS: dict[str, tuple[str, Any]] = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "number": ("a finite number", is_number),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "object": ("a JSON object", lambda v: isinstance(v, Mapping)),
    "list": ("a list", lambda v: isinstance(v, list)),
}


def get(data: Mapping[str, Any], name: str, kind: str, where: str, path: str = "", *,
        optional: bool = False, nullable: bool = False, choices: Sequence[Any] | None = None,
        default: Any = None, minimum: float | None = None, maximum: float | None = None) -> Any:
    """``data[name]`` checked to be of ``kind`` (see ``_KINDS``); errors name ``path.name`` and ``where``.

    ``optional``: absent → ``default``; ``nullable``: JSON null allowed; ``choices``: allowed values;
    ``minimum``/``maximum``: inclusive bounds for numbers.
    """
    full = f"{path}.{name}" if path else name
    value = data.get(name, _MISSING) if isinstance(data, Mapping) else _MISSING
    expected, check = _KINDS[kind]
    if choices is not None:
        expected = "one of " + ", ".join(repr(c) for c in choices)
    if value is _MISSING:
        if optional:
            return default
        raise _fail(where, full, expected, value)
    if value is None:
        if nullable:
            return None
        raise _fail(where, full, expected, value)
    if not check(value) or (choices is not None and value not in choices):
        raise _fail(where, full, expected, value)
    if minimum is not None and value < minimum:
        raise _fail(where, full, f"{expected} >= {minimum}", value)
    if maximum is not None and value > maximum:
        raise _fail(where, full, f"{expected} <= {maximum}", value)
    return value


def numbers(data: Mapping[str, Any], name: str, where: str, path: str = "", *, length: int | None = None,
            non_empty: bool = False) -> list[float]:
    """A list of finite numbers (of ``length`` items when given)."""
    full = f"{path}.{name}" if path else name
    value = get(data, name, "list", where, path)
    for i, v in enumerate(value):
        if not is_number(v):
            raise _fail(where, f"{full}[{i}]", "a finite number", v)
    if length is not None and len(value) != length:
        raise _fail(where, full, f"a list of {length} numbers", value)
    if non_empty and not value:
        raise _fail(where, full, "a non-empty list of numbers", value)
    return [float(v) for v in value]


def header(data: Any, kind: str, versions: Sequence[int], where: str) -> int:
    """Check ``{"kind": kind, "version": v, ...}`` and return ``v``; errors say what the file is instead."""
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: expected a JSON object with \"kind\": {kind!r}, got {type(data).__name__}")
    found = data.get("kind", _MISSING)
    if found != kind:
        raise _fail(where, "kind", repr(kind), found)
    version = data.get("version", _MISSING)
    if version not in versions or isinstance(version, bool):
        raise _fail(where, "version", "one of " + ", ".join(map(str, versions)) + f" for {kind}", version)
    return int(version)


__all__ = ["get", "header", "is_number", "numbers"]
