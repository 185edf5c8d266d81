"""What every reader and writer of :mod:`surerank.formats` shares: file checks, text checks, atomic writes.

Every parse error names the file and the line; a text field must be a string, checked while reading
(before any model is loaded), so a fault of the input is never ranked as "".
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from surerank.errors import InputError
from surerank.storage import atomic_open


def existing(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a Path if it is an existing file; else an InputError saying ``what`` was looked for."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} file not found: {p}")
    if p.is_dir():
        raise InputError(f"{what} path is a directory, expected a file: {p}")
    return p


def open_text(path: Path) -> IO[str]:
    """The file as UTF-8 text; a ``.gz`` name is decompressed on the fly (the packaged demo set is)."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def describe_value(value: Any) -> str:
    """A value's JSON kind for an error message: null, a number (3), a list, an object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def check_text(value: Any, where: str, field: str) -> str:
    """``value`` if it is a string; else an InputError naming ``where`` and the field.

    Ranking a null or a number as "" (or crashing inside a model, or on a Ray worker) would hide a fault
    of the input, so readers call this before building a :class:`Candidate` or :class:`Query`.
    """
    if isinstance(value, str):
        return value
    raise InputError(f"{where}: field {field!r} is {describe_value(value)}; expected a string (\"\" for an "
                     "empty text)")


def require_text(record: Mapping[str, Any], where: str, field: str, *aliases: str) -> str:
    """The string under ``field`` (or the first of ``aliases`` present); missing or not a string is an error."""
    for name in (field, *aliases):
        if name in record:
            return check_text(record[name], where, name)
    names = " or ".join(repr(name) for name in (field, *aliases))
    raise InputError(f"{where}: field {names} is missing; expected a string (\"\" for an empty text)")


def json_error(error: json.JSONDecodeError, line: bool = True) -> str:
    """``Expecting value at line 3, column 5`` (json's own messages may end in "starting at")."""
    message = error.msg.removesuffix(" at")
    where = f"line {error.lineno}, column {error.colno}" if line else f"column {error.colno}"
    return f"{message} at {where}"


def json_object(line: str, where: str, expected: str = "a JSON object") -> dict[str, Any]:
    """One JSONL line as a dict; invalid JSON, or a JSON value that is not an object, names ``where``."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise InputError(f"{where}: invalid JSON: {json_error(error, line=False)}") from None
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected {expected}, got {type(record).__name__}")
    return record


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of every non-blank line."""
    with open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line


# Write to a temporary file and rename, so a crash never leaves half a result file (surerank.storage's rule).
AtomicFile = atomic_open


__all__ = ["AtomicFile", "check_text", "describe_value", "existing", "json_error", "json_object", "open_text",
           "require_text", "text_lines"]
