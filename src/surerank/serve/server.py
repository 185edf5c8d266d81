"""Serving the app on uvicorn: the guarded connection protocol (:mod:`.protocol`) and the drain on SIGTERM.

uvicorn loads only here, when :func:`run` is called: building or testing the app needs no server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from surerank.ranker import Ranker
from surerank.serve.app import create_app
from surerank.serve.config import ServeConfig
from surerank.serve.protocol import guarded_protocol
from surerank.serve.state import ServeState
from surerank.serve.trust_hook import TrustHook

logger = logging.getLogger(__name__)


class DrainOnSignal:
    """Mixed into ``uvicorn.Server``: the first SIGINT/SIGTERM starts a drain with the listener open (new
    requests 503 + Retry-After, ``/ready`` 503), ended on a tick once :meth:`ServeState.drained`; a second
    signal stops at once (uvicorn's own graceful shutdown)."""

    config: Any  # uvicorn's Config, set by uvicorn.Server
    should_exit: bool

    def __init__(self, config: Any, state: ServeState) -> None:
        super().__init__(config)  # type: ignore[call-arg]
        self.serve_state = state
        self.pending_signal: int | None = None
        self.drain_logged = False

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.pending_signal is None and not self.should_exit:
            # first signal: drain with the listener open; on_tick ends the drain
            self.serve_state.begin_drain()
            self.pending_signal = sig  # logged from on_tick: no logging inside a signal handler
            return
        super().handle_exit(sig, frame)  # type: ignore[misc]

    async def on_tick(self, counter: int) -> bool:
        state = self.serve_state
        if self.pending_signal is not None and not self.should_exit and state.drain_started is not None:
            if not self.drain_logged:
                self.drain_logged = True
                logger.info("signal %d: draining, new requests get 503 until in-flight work is done "
                            "(drain_s=%g)", self.pending_signal, state.config.drain_s)
            if state.drained():
                elapsed = time.monotonic() - state.drain_started
                self.config.timeout_graceful_shutdown = max(1.0, state.config.graceful_timeout_s - elapsed)
                # uvicorn re-raises the signal after its shutdown: the exit status says how the process ended
                super().handle_exit(self.pending_signal, None)  # type: ignore[misc]
        result: bool = await super().on_tick(counter)  # type: ignore[misc]
        return result


def run(config: ServeConfig, rankers: Mapping[str, Ranker] | None = None,
        trust_hooks: Mapping[str, TrustHook] | None = None, access_log: bool = False) -> None:
    """Serve until SIGINT/SIGTERM, then drain: answer new requests 503 + Retry-After (``/ready`` 503) while
    the requests already taken are finished, for at least ``drain_s``; then close the listener and exit.

    A load balancer sees 503s (and retries elsewhere) instead of refused connections while in-flight work
    ends.  A second signal ends the drain at once.  The port opens only after the models are loaded, so
    there is no starting phase to answer: until then connections are refused.
    """
    import uvicorn  # the serve extra, loaded only to serve

    gate = create_app(config, rankers, trust_hooks)
    limits = config.limits
    closed = gate.state.metrics.connections_closed
    protocol = guarded_protocol(limits.max_header_bytes, limits.header_timeout_s, limits.body_timeout_s,
                                limits.max_connections, lambda reason: closed.labels(reason).inc())
    server_class = type("DrainingServer", (DrainOnSignal, uvicorn.Server), {})
    server = server_class(uvicorn.Config(
        gate, host=config.host, port=config.port, log_level=config.log_level, access_log=access_log,
        timeout_graceful_shutdown=config.graceful_timeout_s, lifespan="on", http=protocol,
        limit_concurrency=limits.max_connections, timeout_keep_alive=limits.keepalive_timeout_s,  # type: ignore[arg-type]
    ), gate.state)
    server.run()
