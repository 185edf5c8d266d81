"""Admission of a rerank request before FastAPI reads it: the API key first (a client without a key never
gets its body read), then the body guard (:mod:`surerank.serve.body`: limits checked while the JSON is
read, before pydantic builds anything from it).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any, ClassVar

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import ClientDisconnect

from surerank.serve.body import BodyLimits, BodyRefusedError, BodyShape
from surerank.serve.body import parse as parse_body
from surerank.serve.errors import CLIENT_GONE, ApiError
from surerank.serve.state import serve_state

INLINE_BODY_BYTES = 64 * 1024  # scanned and parsed on the event loop (well under a millisecond)
BearerCredentials = Annotated[
    HTTPAuthorizationCredentials | None,
    Depends(HTTPBearer(auto_error=False, description="an API key, when the server has keys configured")),
]
_UNSET: Any = object()


def check_key(keys: Sequence[bytes], authorization: str | None) -> None:
    """401 unless ``authorization`` is ``Bearer KEY`` with a configured key (none configured: open)."""
    if not keys:
        return
    scheme, _, offered = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not offered.strip():
        raise ApiError(401, "authorization: a Bearer API key is required", "unauthorized",
                       {"WWW-Authenticate": "Bearer"})
    token = offered.strip().encode()
    if not any(hmac.compare_digest(token, k) for k in keys):
        raise ApiError(401, "authorization: the API key is not valid", "unauthorized",
                       {"WWW-Authenticate": "Bearer"})


async def require_key(request: Request, credentials: BearerCredentials) -> None:
    """The key check as a route dependency: the rerank routes checked the key before reading the body;
    this covers the others (and documents the scheme in the OpenAPI schema)."""
    keys = serve_state(request).keys
    if keys:
        check_key(keys, None if credentials is None else f"Bearer {credentials.credentials}")


class _GuardedRequest(Request):
    """A request whose JSON body passes :func:`surerank.serve.body.parse` (limits checked while the body
    is read) before FastAPI validates it."""

    def __init__(self, scope: Any, receive: Any, shape: BodyShape, limits: BodyLimits) -> None:
        super().__init__(scope, receive)
        self.shape = shape
        self.limits = limits
        self.parsed: Any = _UNSET

    async def json(self) -> Any:
        if self.parsed is _UNSET:
            try:
                body = await self.body()
            except ClientDisconnect:
                raise ApiError(CLIENT_GONE, "the client closed the connection before its body was read",
                               "client_gone") from None
            try:
                if len(body) <= INLINE_BODY_BYTES:
                    self.parsed = parse_body(body, self.shape, self.limits)
                else:  # a 16 MiB body takes tens of milliseconds to scan and parse: off the event loop
                    self.parsed = await asyncio.to_thread(parse_body, body, self.shape, self.limits)
            except BodyRefusedError as error:
                raise ApiError(error.status, error.message,
                               "too_large" if error.status == 413 else "validation") from None
        return self.parsed


class GuardedRoute(APIRoute):
    """The route class of a rerank router: the key, then the body guard for the body ``shape`` (set by a
    subclass per wire format), then FastAPI's own handling."""

    shape: ClassVar[BodyShape]

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        shape = self.shape

        async def guarded(request: Request) -> Response:
            state = serve_state(request)
            check_key(state.keys, request.headers.get("authorization"))
            return await handle(_GuardedRequest(request.scope, request.receive, shape, state.body_limits))

        return guarded
