"""Connection limits uvicorn does not have: a cap on the request head and deadlines for reading it and
the body.

uvicorn's httptools protocol keeps whatever header bytes a client sends until the head is complete, and
never times out a connection that is still sending its head or body (its keep-alive timer runs only
between requests), so a client could hold memory (a 64 MiB header line) or a connection slot forever
(slowloris).  :func:`guarded_protocol` mixes :class:`ConnectionGuard` into that protocol (the one
``uvicorn[standard]`` runs):

- ``max_header_bytes``: bytes of request line + headers; past it 431 and the connection is closed;
- ``header_timeout_s``: from the connection (or the first byte of the next request) to the end of the
  head; past it 408 and closed;
- ``body_timeout_s``: from the end of the head to the end of the body; past it 408 (or just a close once
  an answer was sent, e.g. an early 413) and closed.

Each close is counted (``surerank_connections_closed_total{reason}``) and logged, at most one line per
reason a second.  Concurrent connections are capped by uvicorn's own ``limit_concurrency`` (503); this
protocol counts those refusals under the same metric.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from surerank.serve.errors import error_body

logger = logging.getLogger(__name__)

_PHRASES = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class RateLimitedLog:
    """One log line per reason a second at most; lines say how many were not logged since."""

    def __init__(self, log: logging.Logger, interval_s: float = 1.0) -> None:
        self.log = log
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def warning(self, reason: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(reason, -self.interval_s) < self.interval_s:
            self._skipped[reason] = self._skipped.get(reason, 0) + 1
            return
        skipped = self._skipped.pop(reason, 0)
        self._last[reason] = now
        suffix = f" ({skipped} more like it not logged in the last {self.interval_s:g} s)" if skipped else ""
        self.log.warning("%s%s", message, suffix)


def error_bytes(status: int, message: str, error_type: str) -> bytes:
    """A whole HTTP/1.1 response in the service's error shape, closing the connection."""
    body = json.dumps(error_body(message, error_type)).encode()
    return b"".join([
        b"HTTP/1.1 %d %s\r\n" % (status, _PHRASES.get(status, b"")),
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n",
        body,
    ])


class ConnectionGuard:
    """The limits above, mixed into uvicorn's httptools protocol by :func:`guarded_protocol`, which sets the
    class attributes; every other attribute used here is the protocol's own."""

    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    on_limit_close: Callable[[str], None]  # counts each close by reason
    limit_log: RateLimitedLog
    # the protocol's own attributes
    transport: Any
    cycle: Any
    client: Any
    loop: asyncio.AbstractEventLoop
    connections: Any
    tasks: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_bytes = 0
        self.in_head = True
        self.head_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None

    # -- limits ------------------------------------------------------------------------------

    def refuse(self, status: int | None, reason: str, message: str) -> None:
        """Answer ``status`` (None: nothing, an answer was sent already), close, count, log."""
        self.cancel_timers()
        if self.transport is None or self.transport.is_closing():
            return
        cycle = self.cycle  # the request being read, or (in the head phase) the previous one
        writable = cycle is None or cycle.response_complete or not cycle.response_started
        if status is not None and writable:
            self.transport.write(error_bytes(status, message, "too_large" if status == 431 else "timeout"))
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app, if it waits for the body, sees http.disconnect
            cycle.message_event.set()
        self.transport.close()
        self.on_limit_close(reason)
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        self.limit_log.warning(reason, f"closed the connection of {client}: {message}")

    def head_expired(self) -> None:
        self.head_timer = None
        self.refuse(408, "header_timeout",
                    f"request head not received within header_timeout_s={self.header_timeout_s:g}")

    def body_expired(self) -> None:
        self.body_timer = None
        answered = self.cycle is not None and self.cycle.response_started
        self.refuse(None if answered else 408, "body_timeout",
                    f"request body not received within body_timeout_s={self.body_timeout_s:g}")

    def cancel_timers(self) -> None:
        for timer in (self.head_timer, self.body_timer):
            if timer is not None:
                timer.cancel()
        self.head_timer = self.body_timer = None

    # -- uvicorn's protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self.head_timer = self.loop.call_later(self.header_timeout_s, self.head_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel_timers()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self.in_head:
            self.head_bytes += len(data)
        super().data_received(data)  # type: ignore[misc]
        if self.in_head and self.head_bytes > self.max_header_bytes:
            self.refuse(431, "header_too_large",
                        f"request head over the limit max_header_bytes={self.max_header_bytes}")

    def on_message_begin(self) -> None:
        super().on_message_begin()  # type: ignore[misc]
        if self.head_timer is None:  # the next request on a kept-alive connection
            self.head_timer = self.loop.call_later(self.header_timeout_s, self.head_expired)

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        self.body_timer = self.loop.call_later(self.body_timeout_s, self.body_expired)
        if len(self.connections) >= self.max_connections or len(self.tasks) >= self.max_connections:
            self.on_limit_close("max_connections")  # uvicorn answers 503 itself (limit_concurrency) and logs it
        super().on_headers_complete()  # type: ignore[misc]

    def on_message_complete(self) -> None:
        super().on_message_complete()  # type: ignore[misc]
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None
        self.in_head = True
        self.head_bytes = 0

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self.on_limit_close("keepalive_timeout")
        super().timeout_keep_alive_handler()  # type: ignore[misc]


def guarded_protocol(max_header_bytes: int, header_timeout_s: float, body_timeout_s: float,
                     max_connections: int, on_close: Callable[[str], None]) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the limits above; ``on_close(reason)`` counts each close."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # the serve extra, loaded to serve

    limits = {"max_header_bytes": max_header_bytes, "header_timeout_s": header_timeout_s,
              "body_timeout_s": body_timeout_s, "max_connections": max_connections,
              "on_limit_close": staticmethod(on_close), "limit_log": RateLimitedLog(logger)}
    return type("GuardedHttpToolsProtocol", (ConnectionGuard, HttpToolsProtocol), limits)
