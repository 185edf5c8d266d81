"""The outermost ASGI layer: the body-size limit and the request metrics, without Starlette's middleware
overhead.  It runs before routing, so a body over ``max_body_bytes`` is refused without being read (a
declared length) or while it is read (chunked), and every answer, errors included, is counted.
"""

from __future__ import annotations

import time
from typing import Any

from surerank.serve.errors import error_response
from surerank.serve.state import ServeState
from surerank.serve.telemetry import path_label

_BODY_METHODS = ("POST", "PUT", "PATCH")


class _StatusRecorder:
    """Passes an app's messages on, keeping the status it answered (500 until it starts an answer)."""

    def __init__(self, send: Any) -> None:
        self.send_on = send
        self.status = 500

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send_on(message)


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that gives the app ``body`` (already read) as one message, then the real ones."""
    replayed = False

    async def replay() -> dict[str, Any]:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class Gate:
    """Wraps the FastAPI app; ``state`` is the app's :class:`~surerank.serve.state.ServeState`."""

    def __init__(self, app: Any, state: ServeState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        recorder = _StatusRecorder(send)
        start = time.perf_counter()
        try:
            await self.admit(scope, receive, recorder.send)
        finally:
            path = path_label(scope["path"])
            metrics = self.state.metrics
            metrics.requests.labels(path, str(recorder.status)).inc()
            metrics.latency.labels(path).observe(time.perf_counter() - start)

    async def admit(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Refuse a declared length over the limit, read a body of no declared length within it, or pass
        the request on as it is."""
        limit = self.state.config.limits.max_body_bytes
        length = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > limit:
            response = error_response(
                413, f"body: {int(length)} bytes is over the limit max_body_bytes={limit}", "too_large")
            await response(scope, receive, send)
            return
        if length is None and scope["method"] in _BODY_METHODS:
            await self.read_then_pass(scope, receive, send, limit)
            return
        await self.app(scope, receive, send)

    async def read_then_pass(self, scope: dict[str, Any], receive: Any, send: Any, limit: int) -> None:
        """No declared length (chunked): read the body here, within the limit, then replay it to the app."""
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > limit:
                response = error_response(413, f"body: over the limit max_body_bytes={limit}", "too_large")
                await response(scope, receive, send)
                return
        await self.app(scope, _replay(b"".join(chunks), receive), send)
