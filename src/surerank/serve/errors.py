"""Error answers: one JSON shape for every status, messages that name the field at fault, and the exception
handlers that turn every failure of a request into that shape.

A client of any of the wire formats finds the message where it looks (Cohere ``message``, Jina and FastAPI
``detail``, OpenAI-style ``error``); a fault of the service itself is logged with an id and answered with
the id only, never the exception text.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from surerank.errors import InputError, LimitExceededError, SureRankError
from surerank.serve import schemas
from surerank.serve.telemetry import ServeMetrics, path_label

logger = logging.getLogger(__name__)

CLIENT_GONE = 499  # nginx's "client closed request": what the metrics record for an answer nobody reads
# the union-member tags pydantic puts in an error's location ("documents", 3, "DocumentObject", "text")
_UNION_TAGS = frozenset(("str", "DocumentObject", "list[str]"))
# the error statuses in the OpenAPI schema, each with the shape every error has
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorBody, "description": text}
    for code, text in [(400, "unreadable body"), (401, "missing or wrong API key"), (404, "model not served"),
                       (413, "over a limit"), (422, "invalid request"), (429, "queue full, retry later"),
                       (503, "shutting down or timed out, retry later")]
}


class ApiError(StarletteHTTPException):
    """An error with its HTTP status; the message names the field or limit at fault.

    An HTTPException, so FastAPI lets it out of body parsing (where the body guard raises it) as it is.
    """

    def __init__(self, status: int, message: str, error_type: str, headers: Mapping[str, str] | None = None):
        super().__init__(status, message, dict(headers or {}))
        self.status = status
        self.message = message
        self.error_type = error_type
        self.headers = dict(headers or {})


def error_body(message: str, error_type: str) -> dict[str, str]:
    """One error shape for every status: ``message`` (Cohere), ``detail`` (Jina, FastAPI: llama-index's
    JinaRerank raises KeyError without it), ``error``; all three carry the same text."""
    return {"message": message, "detail": message, "error": message, "error_type": error_type}


def error_response(status: int, message: str, error_type: str,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    """:func:`error_body` as an answer."""
    return JSONResponse(error_body(message, error_type), status_code=status, headers=dict(headers or {}))


def describe_value(value: Any) -> str:
    """What a client sent, in JSON words, for 'expected a string, got null'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def field_path(loc: Sequence[Any]) -> str:
    """``("body", "documents", 3, "DocumentObject", "text")`` -> ``documents[3].text``."""
    path = ""
    for position, part in enumerate(loc):
        if position == 0 and part == "body":
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in _UNION_TAGS:
            path += f".{part}" if path else str(part)
    return path or "body"


def _expected(item: Mapping[str, Any]) -> str:
    """A pydantic type error as what was expected: 'a string', 'an object with a string 'text''."""
    if "DocumentObject" in item.get("loc", ()) and item.get("type") == "model_attributes_type":
        return "an object with a string 'text'"
    text = str(item.get("msg", "valid input"))
    return text.removeprefix("Input should be ").replace("a valid ", "a ")


def _json_position(item: Mapping[str, Any], body: Any) -> str:
    """Where a body failed to parse: ``body, byte 29`` (json counts characters; the byte offset is what a
    client can look up in what it sent)."""
    loc = item.get("loc", ())
    position = loc[-1] if loc and isinstance(loc[-1], int) else None
    if position is None:
        return "body"
    offset = len(body[:position].encode("utf-8")) if isinstance(body, str) else position
    return f"body, byte {offset}"


def validation_message(errors: Sequence[Mapping[str, Any]], body: Any = None) -> str:
    """pydantic's errors as one line naming each field path (``documents[3].text``) and what was sent.

    A union (a document is a string or an object) fails once per member: where a member's error lies
    deeper (``documents[3].text``), the shallower one (``documents[3]``: not a string) is noise and dropped.
    """
    items = list(errors)[:20]
    paths = [field_path(item.get("loc", ())) for item in items]
    by_field: dict[str, list[str]] = {}
    got: dict[str, str] = {}
    for item, path in zip(items, paths, strict=True):
        kind = str(item.get("type", ""))
        if kind == "json_invalid":
            reason = (item.get("ctx") or {}).get("error")
            by_field.setdefault(_json_position(item, body), []).append(
                f"JSON decode error ({reason})" if reason else "JSON decode error")
            continue
        if any(other.startswith((path + ".", path + "[")) for other in paths):
            continue
        if kind.endswith("_type"):
            text = _expected(item)
            got[path] = describe_value(item.get("input"))
        else:
            text = str(item.get("msg", "invalid"))
        messages = by_field.setdefault(path, [])
        if text not in messages:
            messages.append(text)
    parts = []
    for path, messages in by_field.items():
        if path in got:
            parts.append(f"{path}: expected {' or '.join(messages)}, got {got[path]}")
        else:
            parts.append(f"{path}: {' or '.join(messages)}")
    return "; ".join(parts)


class ErrorAnswers:
    """The exception handlers of one app: every failure answered in :func:`error_body`'s shape."""

    def __init__(self, metrics: ServeMetrics) -> None:
        self.metrics = metrics

    def install(self, app: FastAPI) -> None:
        app.add_exception_handler(ApiError, self.api_error)  # type: ignore[arg-type]
        app.add_exception_handler(RequestValidationError, self.validation_error)  # type: ignore[arg-type]
        app.add_exception_handler(SureRankError, self.surerank_error)  # type: ignore[arg-type]
        app.add_exception_handler(StarletteHTTPException, self.http_error)  # type: ignore[arg-type]
        app.add_exception_handler(Exception, self.unexpected)

    async def api_error(self, request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.message, error.error_type, error.headers)

    async def validation_error(self, request: Request, error: RequestValidationError) -> JSONResponse:
        message = validation_message(error.errors(), getattr(error, "body", None))
        return error_response(422, message or "invalid request", "validation")

    async def surerank_error(self, request: Request, error: SureRankError) -> JSONResponse:
        if isinstance(error, LimitExceededError):
            return error_response(413, str(error), "too_large")
        if isinstance(error, InputError):  # about what the client sent: its message names the field
            return error_response(422, str(error), "validation")
        return await self.unexpected(request, error)  # a missing dependency, a broken model: the service's fault

    async def http_error(self, request: Request, error: StarletteHTTPException) -> JSONResponse:
        detail = str(error.detail)
        if error.status_code == 400:  # the body could not be read as JSON (bad encoding)
            detail = f"body: {detail}"
        return error_response(error.status_code, detail, "http", getattr(error, "headers", None))

    async def unexpected(self, request: Request, error: Exception) -> JSONResponse:
        """A fault of the service, not of the request: the answer carries an id to find the logged
        traceback, never the exception text (which may quote internals)."""
        error_id = uuid.uuid4().hex[:16]
        self.metrics.internal_errors.labels(path_label(request.url.path)).inc()
        logger.error("internal error %s on %s: %s: %s", error_id, request.url.path, type(error).__name__, error,
                     exc_info=error)
        return error_response(500, f"internal error (id {error_id}); the server log has the details",
                              "internal", {"X-Surerank-Error-Id": error_id})
