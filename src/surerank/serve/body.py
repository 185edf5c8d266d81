"""The request-body guard: limits enforced while the JSON is read, before anything is built from it.

pydantic and FastAPI validate a parsed body item by item and build one error object per bad item (a few
KB each), so 16 MiB of ``null`` documents cost gigabytes before the handler could count them.  This module
streams the body once through yajl (:mod:`ijson`, a C tokenizer that builds nothing), counting and
checking as it goes, and refuses at the first limit crossed:

- the document list (``documents``, TEI ``texts``): more than ``max_documents`` items is a 413 with the
  count; items of the wrong shape are a 422 naming the first few and how many there are;
- nesting deeper than ``max_json_depth`` (a 422), more than ``max_json_values`` JSON values in all (a 413);
- unknown keys in objects whose keys are fixed (the request itself, ``surerank``): a 422 naming them;
- strings that are not valid Unicode (lone surrogate escapes such as ``\\ud800``): a 422 naming the field.

Only a body that passes is parsed into Python objects (``json.loads``), so what pydantic sees afterwards
can fail only in a bounded number of places, and the parsed body costs at most a few times its size.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import ijson

# a \uD800-\uDFFF escape somewhere in the raw bytes: the only way a lone surrogate gets into parsed JSON
# (raw surrogate bytes are invalid UTF-8 and refused by the parser); a match only means "look closer"
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_FULL = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")
# a number token (not one inside a \uXXXX escape or a word): yajl refuses integers past 64 bits and floats
# past a double, which JSON allows; for a second scan after such a refusal every number becomes 0
_NUMBER = re.compile(rb"(?<![0-9A-Za-z\\.])-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_GOT = {"null": "null", "boolean": "a boolean", "number": "a number", "string": "a string",
        "start_map": "an object", "start_array": "a list"}
_STARTS = frozenset(("start_map", "start_array"))
_ENDS = frozenset(("end_map", "end_array"))
NAMED = 5  # bad items named in a message; the rest are counted


class BodyRefusedError(ValueError):
    """The body crossed a limit or has bad items; ``status`` is 413 (a limit) or 422 (bad input)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class BodyShape:
    """What one endpoint's body looks like, as far as the guard checks it.

    ``closed``: object paths (``()`` the body, ``("surerank",)``) whose keys are fixed, with those keys.
    """

    list_field: str
    objects: bool  # list items may be objects with a string (or null) 'text'; else strings only
    closed: Mapping[tuple[str, ...], frozenset[str]] = field(default_factory=dict)

    @property
    def expected(self) -> str:
        return "a string or an object with a string 'text'" if self.objects else "a string"


@dataclass(frozen=True)
class BodyLimits:
    max_documents: int
    max_json_depth: int
    max_json_values: int


def format_path(parts: tuple[Any, ...] | list[Any]) -> str:
    """``("documents", 3, "text")`` -> ``documents[3].text``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def _listing(messages: list[str], count: int, total: int, what: str) -> str:
    text = "; ".join(messages)
    if count > len(messages):
        text += f"; and {count - len(messages)} more ({count} of {total} {what} invalid)"
    return text


class _Frame:
    __slots__ = ("array", "is_document", "is_list", "known", "position", "unknown", "unknown_count")

    def __init__(self, array: bool, known: frozenset[str] | None = None, is_list: bool = False,
                 is_document: bool = False) -> None:
        self.array = array
        self.position: Any = -1 if array else None  # the index of the current item, or the current key
        self.known = known
        self.unknown: list[str] = []
        self.unknown_count = 0
        self.is_list = is_list
        self.is_document = is_document


def _path(frames: list[_Frame]) -> list[Any]:
    return [f.position for f in frames]


class _BadItems:
    """Items of the wrong shape: the first :data:`NAMED` named, the rest counted (one refusal for them all)."""

    __slots__ = ("count", "messages")

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.count = 0

    def add(self, where: str, expected: str, event: str) -> None:
        self.count += 1
        if len(self.messages) < NAMED:
            self.messages.append(f"{where}: expected {expected}, got {_GOT[event]}")


def _close(frames: list[_Frame], bad: _BadItems, shape: BodyShape) -> None:
    """At the end of an object or list: refuse its unknown keys, or (the document list) its bad items."""
    done = frames.pop()
    if done.unknown_count:
        prefix = f"{format_path(_path(frames))}." if frames else ""
        names = ", ".join(prefix + name for name in done.unknown)
        more = (f" and {done.unknown_count - len(done.unknown)} more"
                if done.unknown_count > len(done.unknown) else "")
        raise BodyRefusedError(422, f"{names}{more}: Extra inputs are not permitted")
    if done.is_list and bad.count:
        raise BodyRefusedError(422, _listing(bad.messages, bad.count, done.position + 1, shape.list_field))


def _unknown_key(top: _Frame, name: str) -> None:
    """A key that an object with fixed keys does not have: counted, and the first few named."""
    top.unknown_count += 1
    if len(top.unknown) < NAMED:
        top.unknown.append(name)


def _open(frames: list[_Frame], event: str, shape: BodyShape, limits: BodyLimits, closed_depth: int) -> _Frame:
    """The frame of an object or list starting here: its fixed keys, whether it is the document list or a
    document; nesting past ``max_json_depth`` is refused."""
    if len(frames) >= limits.max_json_depth:
        raise BodyRefusedError(422, f"{format_path(_path(frames))}: nested deeper than the limit "
                               f"max_json_depth={limits.max_json_depth}")
    array = event == "start_array"
    parent = frames[-1] if frames else None
    known = None
    if not array and len(frames) <= closed_depth:
        key = tuple(_path(frames))
        known = shape.closed.get(key) if all(isinstance(k, str) for k in key) else None
    is_list = (array and len(frames) == 1 and parent is not None and not parent.array
               and parent.position == shape.list_field)
    is_document = not array and parent is not None and parent.is_list
    return _Frame(array, known, is_list, is_document)


def _not_unicode(frames: list[_Frame]) -> BodyRefusedError:
    """yajl turns some lone surrogate escapes into bytes that are not UTF-8: the refusal names the container."""
    parts = _path(frames)
    if frames and frames[-1].array:
        parts[-1] += 1  # the item being read when the tokenizer failed
    where = format_path([p for p in parts if p is not None])
    return BodyRefusedError(422, f"{where}: a string is not valid Unicode (a lone surrogate escape such as "
                            f"\\ud800)")


def scan(body: bytes, shape: BodyShape, limits: BodyLimits) -> str | None:
    """Stream ``body`` once and refuse it (:class:`BodyRefusedError`) at the first limit it crosses.

    Returns None for a body read to its end, else the tokenizer's complaint: a body that is not JSON is
    left to the caller's parser, which names the byte where it stopped (what came before was in limits).
    """
    frames: list[_Frame] = []
    values = 0
    bad = _BadItems()
    closed_depth = max((len(path) for path in shape.closed), default=-1)
    events = ijson.basic_parse(body, use_float=True)
    try:
        for event, value in events:
            if event in _ENDS:
                _close(frames, bad, shape)
                continue
            values += 1
            if values > limits.max_json_values:
                raise BodyRefusedError(413, f"body: more than {limits.max_json_values} JSON values is over the "
                                       f"limit max_json_values={limits.max_json_values}")
            top = frames[-1] if frames else None
            if event == "map_key":  # (a key is always inside an object: top is set)
                top.position = value  # type: ignore[union-attr]
                if top.known is not None and value not in top.known:  # type: ignore[union-attr]
                    _unknown_key(top, value)  # type: ignore[arg-type]
                continue
            if top is not None and top.array:
                top.position += 1
                if top.is_list:
                    if top.position >= limits.max_documents:
                        _refuse_count(events, top.position + 1, event, shape, limits)
                    if not (event == "string" or (event == "start_map" and shape.objects)):
                        bad.add(f"{shape.list_field}[{top.position}]", shape.expected, event)
            elif top is not None and top.is_document and top.position == "text" and event not in (
                    "string", "null"):
                bad.add(f"{shape.list_field}[{frames[-2].position}].text", "a string", event)
            if event in _STARTS:
                frames.append(_open(frames, event, shape, limits, closed_depth))
    except UnicodeDecodeError:
        raise _not_unicode(frames) from None
    except ijson.JSONError as error:
        return str(error).strip().splitlines()[0] if str(error).strip() else "not JSON"
    return None


def _refuse_count(events: Any, count: int, event: str, shape: BodyShape, limits: BodyLimits) -> None:
    """Count the rest of an over-long list without building it (up to a bound of events), then refuse."""
    depth = 1 if event in _STARTS else 0  # inside the list item that crossed the limit
    budget = limits.max_json_values
    exact = False
    try:
        for seen, (kind, _) in enumerate(events):
            if seen >= budget:
                break
            if kind in _STARTS:
                if depth == 0:
                    count += 1
                depth += 1
            elif kind in _ENDS:
                if depth == 0:  # the list itself closed
                    exact = True
                    break
                depth -= 1
            elif depth == 0 and kind != "map_key":
                count += 1
    except (ijson.JSONError, UnicodeDecodeError):
        pass
    said = f"{count}" if exact else f"more than {count}"
    raise BodyRefusedError(413, f"{shape.list_field}: {said} documents is over the limit "
                           f"max_documents={limits.max_documents}")


def check_unicode(data: Any) -> None:
    """Refuse strings (values or keys) holding lone surrogates: they cannot be encoded, so a tokenizer or
    the response encoder would fail on them.  A walk over the parsed body (bounded by max_json_values),
    run only when the raw bytes hold a surrogate escape at all."""
    found: list[str] = []
    count = 0
    stack: list[tuple[tuple[Any, ...], Any]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            hit = _SURROGATE.search(value)
            if hit is not None:
                count += 1
                if len(found) < NAMED:
                    found.append(f"{format_path(path)}: not valid Unicode (a lone surrogate "
                                 f"\\u{ord(hit.group()):04x} at character {hit.start()})")
        elif isinstance(value, dict):
            for key, item in reversed(list(value.items())):
                if _SURROGATE.search(key):
                    count += 1
                    if len(found) < NAMED:
                        found.append(f"{format_path(path)}: a key is not valid Unicode (a lone surrogate)")
                stack.append(((*path, key), item))
        elif isinstance(value, list):
            stack.extend(((*path, i), item) for i, item in reversed(list(enumerate(value))))
    if count:
        message = "; ".join(found)
        if count > len(found):
            message += f"; and {count - len(found)} more"
        raise BodyRefusedError(422, message)


def parse(body: bytes, shape: BodyShape, limits: BodyLimits) -> Any:
    """The body as Python objects, or :class:`BodyRefusedError`; a body that is not JSON raises
    :class:`json.JSONDecodeError` (with the position) as ``json.loads`` would."""
    # yajl mangles surrogate escapes (one becomes '?', a pair of a high one and a letter one character);
    # the scan checks structure only, so it reads them as '?' and check_unicode names them exactly
    has_surrogates = _SURROGATE_ESCAPE.search(body) is not None
    scanned = _SURROGATE_ESCAPE_FULL.sub(rb"\\u003f", body) if has_surrogates else body
    complaint = scan(scanned, shape, limits)
    if complaint is not None and "overflow" in complaint:  # a big number: the scan checks structure only
        complaint = scan(_NUMBER.sub(b"0", scanned), shape, limits)
    data = json.loads(body, parse_constant=_no_constant, parse_float=_finite_float)
    if complaint is not None:  # json accepted what yajl refused: nothing past that point was checked
        raise BodyRefusedError(422, f"body: JSON decode error ({complaint})")
    if has_surrogates:
        check_unicode(data)
    return data


def _no_constant(name: str) -> Any:
    raise BodyRefusedError(422, f"body: {name} is not JSON")


def _finite_float(text: str) -> float:
    """JSON numbers past a double (``1e999``) would parse as inf, which no JSON answer can carry back."""
    value = float(text)
    if value in (math.inf, -math.inf):
        raise BodyRefusedError(422, f"body: the number {text[:40]} is out of range (over 1.8e308)")
    return value
