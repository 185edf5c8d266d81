"""What one app serves: the rankers behind the served model names, their trust hooks and schedulers, the
per-request passage-cap variants, and the lifecycle (ready, draining, stopped) the routes answer from.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from surerank import Reranker
from surerank.errors import InputError
from surerank.ranker import Ranker
from surerank.registry import RankerSpec, all_specs, register
from surerank.serve.body import BodyLimits
from surerank.serve.config import ModelConfig, ServeConfig
from surerank.serve.errors import CLIENT_GONE, ApiError
from surerank.serve.prepare import Prepared
from surerank.serve.protocol import RateLimitedLog
from surerank.serve.scheduler import BatchingEngine, ClientGoneError, OverloadedError
from surerank.serve.telemetry import ServeMetrics
from surerank.serve.trust_hook import TrustHook, load_trust_hook, no_calibration
from surerank.types import Query, RankedList

logger = logging.getLogger(__name__)

MAX_CHUNK_VARIANTS = 32  # per-request passage caps kept as ranker variants (least recently used dropped)


def build_ranker(model: ModelConfig) -> Ranker:
    """Create the ranker behind a served model; a bad option is a user error naming the model."""
    if ":" in model.ranker and model.ranker not in all_specs():
        # a ranker class by import path ("package.module:Class"), for rankers not registered by name
        register(RankerSpec(model.ranker, model.ranker, f"ranker class {model.ranker}"))
    try:
        return Reranker(model.ranker, **dict(model.options))
    except TypeError as error:
        raise InputError(
            f"model {model.name!r}: ranker {model.ranker!r} refused its options: {error}") from None


def build_rankers(config: ServeConfig) -> dict[str, Ranker]:
    """Every served model's ranker, by served name."""
    return {m.name: build_ranker(m) for m in config.served_models()}


def build_trust_hooks(config: ServeConfig, rankers: Mapping[str, Ranker]) -> dict[str, TrustHook]:
    """One hook per served model; an artifact fitted for another ranker configuration is refused."""
    hooks: dict[str, TrustHook] = {}
    for m in config.served_models():
        if m.calibration:
            describe = getattr(rankers[m.name], "describe", None)
            hooks[m.name] = load_trust_hook(m.name, m.calibration, describe() if describe else None)
        else:
            hooks[m.name] = no_calibration(m.name)
    return hooks


class ChunkVariants:
    """Served rankers with another passage cap (``max_chunks_per_doc``), kept for reuse so requests with
    the same cap batch together; the least recently used are dropped past :data:`MAX_CHUNK_VARIANTS`."""

    def __init__(self, limit: int = MAX_CHUNK_VARIANTS) -> None:
        self.limit = limit
        self._variants: OrderedDict[tuple[str, int], Ranker] = OrderedDict()

    def get(self, model: str, base: Ranker, cap: int) -> Ranker:
        """``base`` with ``max_passages=cap``: a shallow copy sharing the loaded model."""
        key = (model, cap)
        ranker = self._variants.get(key)
        if ranker is None:
            ranker = copy.copy(base)
            ranker.policy = dataclasses.replace(base.policy, max_passages=cap)  # type: ignore[attr-defined]
            self._variants[key] = ranker
            while len(self._variants) > self.limit:
                self._variants.popitem(last=False)
        else:
            self._variants.move_to_end(key)
        return ranker


async def client_gone(receive: Any) -> None:
    """Returns once the client has disconnected: after the body was read, the only message an ASGI server
    sends is ``http.disconnect``."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class ServeState:
    """The served models of one app and its lifecycle; the routes find it with :func:`serve_state`."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.metrics = ServeMetrics()
        self.keys = [k.encode() for k in config.api_keys]
        limits = config.limits
        self.body_limits = BodyLimits(limits.max_documents, limits.max_json_depth, limits.max_json_values)
        self.engines: dict[str, BatchingEngine] = {}
        self.hooks: dict[str, TrustHook] = {}
        self.rankers: dict[str, Ranker] = {}
        self.variants = ChunkVariants()
        self.ready = False
        self.draining = False
        self.drain_started: float | None = None
        self.log = RateLimitedLog(logger)

    def load(self, rankers: Mapping[str, Ranker] | None, hooks: Mapping[str, TrustHook] | None) -> None:
        """Build (or take) the rankers and hooks, warm each model up, start one scheduler per model."""
        self.rankers = dict(rankers) if rankers is not None else build_rankers(self.config)
        self.hooks = dict(hooks) if hooks is not None else build_trust_hooks(self.config, self.rankers)
        for model in self.config.served_models():
            self.hooks.setdefault(model.name, no_calibration(model.name))
        for model in self.config.served_models():
            ranker = self.rankers[model.name]
            if self.config.warmup:
                ranker.rank_many([Query.from_texts("warm up", ["a short warm-up document"])])
            engine = BatchingEngine(ranker, self.config.batching, name=model.name,
                                    on_batch=self.metrics.batch_callback(model.name),
                                    on_drop=self.metrics.drop_callback(model.name))
            engine.start()
            self.engines[model.name] = engine
        self.ready = True
        logger.info("serving models %s", ", ".join(self.engines))

    def begin_drain(self) -> None:
        """Refuse new work with 503 + Retry-After from now on; the listener stays open (see
        :func:`surerank.serve.server.run`)."""
        if self.drain_started is None:
            self.drain_started = time.monotonic()
        self.draining = True

    def drained(self) -> bool:
        """True once the drain may end: at least ``drain_s`` passed and no request queued or in the model
        (or ``max(drain_s, graceful_timeout_s)`` passed, whatever is left)."""
        if self.drain_started is None:
            return False
        elapsed = time.monotonic() - self.drain_started
        if elapsed >= max(self.config.drain_s, self.config.graceful_timeout_s):
            return True
        return elapsed >= self.config.drain_s and all(e.idle for e in self.engines.values())

    def variant(self, model: str, cap: int) -> Ranker:
        """The served ranker of ``model`` with the passage cap ``cap`` (see :class:`ChunkVariants`)."""
        return self.variants.get(model, self.rankers[model], cap)

    def stop(self) -> None:
        self.ready = False
        for engine in self.engines.values():
            engine.stop(timeout=self.config.graceful_timeout_s)

    def engine(self, model: str | None) -> tuple[str, BatchingEngine]:
        """The served name and scheduler a request goes to (404 for a model not served, 503 while not
        ready or draining)."""
        name = model or self.config.default_model
        if name not in self.engines:
            if not self.ready:
                raise ApiError(503, "the server is starting", "unavailable", {"Retry-After": "1"})
            served = ", ".join(self.engines)
            raise ApiError(404, f"model: {name!r} is not served; served models: {served}", "not_found")
        if self.draining:
            raise ApiError(503, "the server is shutting down", "unavailable", {"Retry-After": "5"})
        return name, self.engines[name]

    async def rank(self, model: str, engine: BatchingEngine, prepared: Prepared, request: Request,
                   ranker: Ranker | None = None) -> RankedList:
        """Queue the request; a client that disconnects while it waits is answered 499 (to nobody), and
        its request is dropped from the queue if no batch has taken it yet."""
        try:
            return await engine.submit(prepared.query, prepared.tokens, ranker,
                                       gone=lambda: client_gone(request.receive))
        except ClientGoneError as error:
            n = len(prepared.query.candidates)
            what = f"dropped from the queue, {n} documents not ranked" if error.dropped else \
                f"already in a batch, {n} documents ranked for nobody"
            self.log.warning("client_gone", f"model {model}: a client disconnected while waiting; {what}")
            raise ApiError(CLIENT_GONE, "the client closed the connection before the answer",
                           "client_gone") from None
        except OverloadedError as error:
            self.metrics.shed.labels(model, str(error.status)).inc()
            headers = {"Retry-After": str(error.retry_after)}
            raise ApiError(error.status, str(error), "overloaded", headers) from None

    def refresh_queue_gauges(self) -> None:
        """Queue depth and queued tokens per model, read when ``/metrics`` is scraped."""
        for name, engine in self.engines.items():
            self.metrics.queue_depth.labels(name).set(engine.queue_depth)
            self.metrics.queue_tokens.labels(name).set(engine.queued_tokens)


def serve_state(request: Request) -> ServeState:
    """The state of the app a request came to (:func:`surerank.serve.app.create_app` puts it there)."""
    state: ServeState = request.app.state.surerank
    return state
