"""The FastAPI app: Cohere / Jina / TEI rerank endpoints over the batching engine.

Built by :func:`create_app` from a :class:`~surerank.serve.config.ServeConfig`; started by :func:`run`
(``surerank serve``).  Only the public ranker API is used: ``rank_many`` on :class:`~surerank.types.Query`
objects, results as :class:`~surerank.types.RankedList`.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import hmac
import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from surerank.errors import InputError, LimitExceededError, SureRankError
from surerank.ranker import Ranker
from surerank.scores import sigmoid
from surerank.serve import schemas
from surerank.serve.body import BodyLimits, BodyRefusedError, BodyShape
from surerank.serve.body import parse as parse_body
from surerank.serve.config import ModelConfig, ServeConfig
from surerank.serve.engine import BatchingEngine, ClientGoneError, OverloadedError
from surerank.serve.metrics import ServeMetrics
from surerank.serve.protocol import RateLimitedLog
from surerank.serve.tokens import budget_tokens, count_tokens, truncate_tokens
from surerank.serve.trust_hook import TrustHook, TrustRequest, load_trust_hook, no_calibration
from surerank.types import Candidate, Query, RankedList

logger = logging.getLogger(__name__)

RERANK_PATHS = ("/v1/rerank", "/v2/rerank", "/rerank")
KNOWN_PATHS = frozenset(
    (*RERANK_PATHS, "/v1/models", "/health", "/ready", "/metrics", "/openapi.json", "/docs"))
TRUNCATED_HEADER = "X-Surerank-Truncated-Documents"
BearerCredentials = Annotated[
    HTTPAuthorizationCredentials | None,
    Depends(HTTPBearer(auto_error=False, description="an API key, when the server has keys configured")),
]
# the union-member tags pydantic puts in an error's location ("documents", 3, "DocumentObject", "text")
_UNION_TAGS = frozenset(("str", "DocumentObject", "list[str]"))
MAX_CHUNK_VARIANTS = 32  # per-request passage caps kept as ranker variants (least recently used dropped)


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


def _error_response(status: int, message: str, error_type: str,
                    headers: Mapping[str, str] | None = None) -> JSONResponse:
    """One error shape for every status: ``message`` (Cohere), ``detail`` (Jina, FastAPI: llama-index's
    JinaRerank raises KeyError without it), ``error``; all three carry the same text."""
    body = {"message": message, "detail": message, "error": message, "error_type": error_type}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


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


def document_texts(documents: Sequence[str | schemas.DocumentObject], rank_fields: Sequence[str] | None) -> list[str]:
    """The text ranked for each document; an object without the field(s) it is ranked by is a 422.

    Cohere v1 ``rank_fields``: the named fields, in order; one field ranks its value as is (so
    ``["text"]`` is the default), several are joined as ``field: value`` lines, the YAML-like form Cohere
    recommends for structured documents.  String documents are ranked as they are.
    """
    names = list(rank_fields) if rank_fields else ["text"]
    texts = []
    for i, document in enumerate(documents):
        if isinstance(document, str):
            texts.append(document)
            continue
        sent = document.model_dump(exclude_unset=True)
        values = []
        for name in names:
            if name not in sent:
                hint = ("rank_fields names it" if rank_fields else
                        "a document object needs a string 'text' (or rank_fields naming the fields to rank)")
                raise InputError(f"documents[{i}].{name}: missing; {hint}")
            if not isinstance(sent[name], str):
                raise InputError(f"documents[{i}].{name}: expected a string, got {describe_value(sent[name])}")
            values.append(sent[name])
        texts.append(values[0] if len(names) == 1 else
                     "\n".join(f"{name}: {value}" for name, value in zip(names, values, strict=True)))
    return texts


# -- model loading -------------------------------------------------------------------------------------


def build_ranker(model: ModelConfig) -> Ranker:
    """Create the ranker behind a served model; a bad option is a user error naming the model."""
    from surerank import Reranker
    from surerank.registry import RankerSpec, all_specs, register

    if ":" in model.ranker and model.ranker not in all_specs():
        # a ranker class by import path ("package.module:Class"), for rankers not registered by name
        register(RankerSpec(model.ranker, model.ranker, f"ranker class {model.ranker}"))
    try:
        return Reranker(model.ranker, **dict(model.options))
    except TypeError as error:
        raise InputError(
            f"model {model.name!r}: ranker {model.ranker!r} refused its options: {error}") from None


def build_rankers(config: ServeConfig) -> dict[str, Ranker]:
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


# -- request preparation ------------------------------------------------------------------------------


@dataclass
class Prepared:
    query: Query
    tokens: int
    cut: dict[int, int] = field(default_factory=dict)  # index -> original estimated tokens


def prepare(
    config: ServeConfig,
    query: str,
    texts: Sequence[str],
    field_name: str,
    cut_tokens: int | None,
    left: bool = False,
    cut_hint: str = "max_tokens_per_doc",
) -> Prepared:
    """Check every per-request limit (413 naming it), cut documents only where the request asked."""
    limits = config.limits
    if len(texts) > limits.max_documents:
        raise LimitExceededError(
            f"{field_name}: {len(texts)} documents is over the limit max_documents={limits.max_documents}")
    if len(query) > limits.max_query_chars:
        raise LimitExceededError(
            f"query: {len(query)} characters is over the limit max_query_chars={limits.max_query_chars}")
    total_chars = len(query)
    for i, text in enumerate(texts):
        if len(text) > limits.max_document_chars:
            raise LimitExceededError(
                f"{field_name}[{i}]: {len(text)} characters is over the limit "
                f"max_document_chars={limits.max_document_chars}")
        total_chars += len(text)
    if total_chars > limits.max_total_chars:
        raise LimitExceededError(
            f"{field_name}: {total_chars} characters in all is over the limit "
            f"max_total_chars={limits.max_total_chars}")
    query_tokens = budget_tokens(query)
    total_tokens = 0
    cut: dict[int, int] = {}
    candidates = []
    doc_limit = limits.max_document_tokens
    for i, text in enumerate(texts):
        # exact word-piece counts only where a text is long enough to cross a limit or a requested cut
        if cut_tokens is not None and len(text) > cut_tokens:
            kept, original = truncate_tokens(text, cut_tokens, left=left)
            if original > cut_tokens:
                text = kept
                cut[i] = original
        if len(text) > doc_limit and (tokens := count_tokens(text)) > doc_limit:
            raise LimitExceededError(
                f"{field_name}[{i}]: {tokens} estimated tokens is over the limit max_document_tokens="
                f"{doc_limit}; set {cut_hint} to cut long documents")
        total_tokens += budget_tokens(text) + query_tokens
        candidates.append(Candidate(id=str(i), text=text))
    if total_tokens > limits.max_request_tokens:
        raise LimitExceededError(
            f"{field_name}: {total_tokens} estimated tokens (query + documents) is over the limit "
            f"max_request_tokens={limits.max_request_tokens}")
    query_object = Query(text=query, candidates=tuple(candidates), id=uuid.uuid4().hex)
    return Prepared(query_object, max(1, total_tokens), cut)


def _finite(value: float, warnings: list[str], index: int) -> float:
    if math.isfinite(value):
        return value
    warnings.append(f"documents[{index}]: the ranker gave a non-finite score ({value}); sent as -1e30")
    return -1e30


def _truncation_notes(ranked: RankedList, prepared: Prepared, cut_name: str,
                      chunks: int | None = None) -> tuple[list[int], list[str]]:
    notes: list[str] = []
    by_model = sorted(item.index for item in ranked.items
                      if item.truncation is not None and item.truncation.truncated)
    if prepared.cut:
        notes.append(f"documents {sorted(prepared.cut)} were cut to {cut_name} estimated tokens as requested")
    if by_model:
        dropped = sum(item.truncation.tokens_dropped for item in ranked.items
                      if item.truncation is not None and item.truncation.truncated)
        if chunks is None:
            notes.append(f"documents {by_model} were longer than the model's input and truncated by the ranker "
                         f"({dropped} model tokens not scored)")
        else:
            notes.append(f"documents {by_model} were longer than max_chunks_per_doc={chunks} model windows; "
                         f"only those were scored ({dropped} model tokens not scored)")
    return sorted(set(prepared.cut) | set(by_model)), notes


def chunk_cap(model: str, ranker: Ranker, chunks: int) -> tuple[int | None, int, str | None]:
    """Map Cohere v1 ``max_chunks_per_doc`` onto the ranker's passage policy, or refuse (422 naming it).

    Returns the passage cap to rank with (None: the ranker as served already means this), the most chunks
    a document gets scored, and a warning when the model's own cap is lower than the request's.
    Cohere's meaning: a document is split into model-window chunks, at most ``chunks`` are scored, the
    best one decides.
    """
    policy = getattr(ranker, "policy", None)
    if not dataclasses.is_dataclass(policy) or not hasattr(policy, "max_passages"):
        raise InputError(f"max_chunks_per_doc: model {model!r} does not split documents into chunks (its "
                         f"ranker has no long_documents option); leave the field out")
    if policy.mode != "passages":
        if chunks == 1:
            return None, 1, None  # truncate mode scores exactly the first window: one chunk
        raise InputError(f"max_chunks_per_doc: model {model!r} scores one window per document "
                         f"(long_documents={policy.mode!r}), not {chunks} chunks; serve it with "
                         f"--option {model}.long_documents=passages, or send max_chunks_per_doc=1")
    if policy.aggregate != "max":
        raise InputError(f"max_chunks_per_doc: model {model!r} combines chunk scores by "
                         f"{policy.aggregate!r}, not by the best chunk as Cohere does; serve it with "
                         f"--option {model}.aggregate=max")
    if policy.max_passages is not None and policy.max_passages <= chunks:
        if policy.max_passages == chunks:
            return None, chunks, None
        return None, policy.max_passages, (
            f"max_chunks_per_doc: {chunks} is over model {model!r}'s max_passages={policy.max_passages}; "
            f"at most {policy.max_passages} chunks per document were scored")
    return chunks, chunks, None


# -- the body guard -----------------------------------------------------------------------------------

# objects whose keys are fixed (extra="forbid"): the guard names unknown keys before pydantic would build
# one error per key
_COHERE_SHAPE = BodyShape("documents", objects=True, closed={
    (): frozenset(schemas.RerankRequest.model_fields), ("surerank",): frozenset(schemas.SureRankOptions.model_fields)})
_TEI_SHAPE = BodyShape("texts", objects=False, closed={(): frozenset(schemas.TEIRerankRequest.model_fields)})
BODY_SHAPES = {"/v1/rerank": _COHERE_SHAPE, "/v2/rerank": _COHERE_SHAPE, "/rerank": _TEI_SHAPE}
INLINE_BODY_BYTES = 64 * 1024  # scanned and parsed on the event loop (well under a millisecond)
CLIENT_GONE = 499  # nginx's "client closed request": what the metrics record for an answer nobody reads
_UNSET: Any = object()


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


def guarded_route(config: ServeConfig) -> type[APIRoute]:
    """The route class of the app: rerank bodies go through the body guard, after the API key is checked
    (a client without a key never gets its body read)."""
    limits = BodyLimits(config.limits.max_documents, config.limits.max_json_depth, config.limits.max_json_values)
    keys = [k.encode() for k in config.api_keys]

    class GuardedRoute(APIRoute):
        def get_route_handler(self) -> Any:
            handle = super().get_route_handler()
            shape = BODY_SHAPES.get(self.path)
            if shape is None:
                return handle

            async def guarded(request: Request) -> Response:
                check_key(keys, request.headers.get("authorization"))
                return await handle(_GuardedRequest(request.scope, request.receive, shape, limits))

            return guarded

    return GuardedRoute


async def client_gone(receive: Any) -> None:
    """Returns once the client has disconnected: after the body was read, the only message an ASGI server
    sends is ``http.disconnect``."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


# -- the app ------------------------------------------------------------------------------------------


class _State:
    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.metrics = ServeMetrics()
        self.engines: dict[str, BatchingEngine] = {}
        self.hooks: dict[str, TrustHook] = {}
        self.rankers: dict[str, Ranker] = {}
        self.ready = False
        self.draining = False
        self.drain_started: float | None = None
        self._variants: OrderedDict[tuple[str, int], Ranker] = OrderedDict()
        self.log = RateLimitedLog(logger)

    def load(self, rankers: Mapping[str, Ranker] | None, hooks: Mapping[str, TrustHook] | None) -> None:
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
        """Refuse new work with 503 + Retry-After from now on; the listener stays open (see :func:`run`)."""
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
        """The served ranker with another passage cap (``max_chunks_per_doc``): a shallow copy sharing the
        loaded model, kept for reuse so requests with the same cap batch together."""
        key = (model, cap)
        ranker = self._variants.get(key)
        if ranker is None:
            base = self.rankers[model]
            ranker = copy.copy(base)
            ranker.policy = dataclasses.replace(base.policy, max_passages=cap)  # type: ignore[attr-defined]
            self._variants[key] = ranker
            while len(self._variants) > MAX_CHUNK_VARIANTS:
                self._variants.popitem(last=False)
        else:
            self._variants.move_to_end(key)
        return ranker

    def stop(self) -> None:
        self.ready = False
        for engine in self.engines.values():
            engine.stop(timeout=self.config.graceful_timeout_s)

    def engine(self, model: str | None) -> tuple[str, BatchingEngine]:
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


class _Gate:
    """Outermost ASGI layer: body-size limit and request metrics, without Starlette's middleware overhead."""

    def __init__(self, app: Any, state: _State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
        limit = self.state.config.limits.max_body_bytes
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            length = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
            if length is not None and length.isdigit() and int(length) > limit:
                response = _error_response(
                    413, f"body: {int(length)} bytes is over the limit max_body_bytes={limit}", "too_large")
                await response(scope, receive, send_wrapper)
                return
            if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
                # no declared length (chunked): read the body here, within the limit, then replay it
                chunks, size, more = [], 0, True
                while more:
                    message = await receive()
                    if message["type"] != "http.request":
                        return  # the client went away
                    chunks.append(message.get("body", b""))
                    size += len(chunks[-1])
                    more = message.get("more_body", False)
                    if size > limit:
                        response = _error_response(
                            413, f"body: over the limit max_body_bytes={limit}", "too_large")
                        await response(scope, receive, send_wrapper)
                        return
                body = b"".join(chunks)
                replayed = [False]

                async def replay() -> dict[str, Any]:
                    if not replayed[0]:
                        replayed[0] = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                await self.app(scope, replay, send_wrapper)
                return
            await self.app(scope, receive, send_wrapper)
        finally:
            metrics = self.state.metrics
            metrics.requests.labels(path, str(status[0])).inc()
            metrics.latency.labels(path).observe(time.perf_counter() - start)


def create_app(
    config: ServeConfig,
    rankers: Mapping[str, Ranker] | None = None,
    trust_hooks: Mapping[str, TrustHook] | None = None,
) -> Any:
    """The ASGI app.  ``rankers`` (by served name) skips building them from the registry."""
    state = _State(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        await asyncio.to_thread(state.load, rankers, trust_hooks)
        try:
            yield
        finally:
            state.draining = True
            await asyncio.to_thread(state.stop)

    from surerank import __version__

    app = FastAPI(
        title="surerank", version=__version__, lifespan=lifespan,
        description="Rerank search results and RAG context (Cohere, Jina and TEI wire formats).",
    )
    app.state.surerank = state
    app.router.route_class = guarded_route(config)
    keys = [k.encode() for k in config.api_keys]

    async def require_key(credentials: BearerCredentials) -> None:
        # the rerank routes checked the key before reading the body; this covers the others (and
        # documents the scheme in the OpenAPI schema)
        if keys and credentials is None:
            check_key(keys, None)
        if keys and credentials is not None:
            check_key(keys, f"Bearer {credentials.credentials}")

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return _error_response(error.status, error.message, error.error_type, error.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        message = validation_message(error.errors(), getattr(error, "body", None))
        return _error_response(422, message or "invalid request", "validation")

    @app.exception_handler(SureRankError)
    async def _surerank_error(request: Request, error: SureRankError) -> JSONResponse:
        if isinstance(error, LimitExceededError):
            return _error_response(413, str(error), "too_large")
        if isinstance(error, InputError):  # about what the client sent: its message names the field
            return _error_response(422, str(error), "validation")
        return await _unexpected(request, error)  # a missing dependency, a broken model: the service's fault

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        detail = str(error.detail)
        if error.status_code == 400:  # the body could not be read as JSON (bad encoding)
            detail = f"body: {detail}"
        return _error_response(error.status_code, detail, "http", getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        """A fault of the service, not of the request: the answer carries an id to find the logged
        traceback, never the exception text (which may quote internals)."""
        error_id = uuid.uuid4().hex[:16]
        path = request.url.path if request.url.path in KNOWN_PATHS else "other"
        state.metrics.internal_errors.labels(path).inc()
        logger.error("internal error %s on %s: %s: %s", error_id, request.url.path, type(error).__name__, error,
                     exc_info=error)
        return _error_response(500, f"internal error (id {error_id}); the server log has the details",
                               "internal", {"X-Surerank-Error-Id": error_id})

    responses: dict[int | str, dict[str, Any]] = {
        code: {"model": schemas.ErrorBody, "description": text}
        for code, text in [(400, "unreadable body"), (401, "missing or wrong API key"), (404, "model not served"),
                           (413, "over a limit"), (422, "invalid request"), (429, "queue full, retry later"),
                           (503, "shutting down or timed out, retry later")]
    }

    def trust_request(options: schemas.SureRankOptions | None) -> TrustRequest | None:
        if options is None or not (options.probability or options.keep or options.cutoff):
            return None
        return TrustRequest(probability=options.probability, keep=options.keep, cutoff=options.cutoff)

    async def cohere_like(body: schemas.RerankRequest, request: Request, response: Response,
                          version: str) -> dict[str, Any]:
        model, engine = state.engine(body.model)
        if body.relevant_spans is not None and body.relevant_spans.mode == "enabled":
            raise InputError("relevant_spans: mode 'enabled' is not supported by surerank")
        trust = trust_request(body.surerank)
        hook = state.hooks[model]
        if trust is not None:
            hook.check(trust)
        texts = document_texts(body.documents, body.rank_fields)
        variant, scored_chunks, chunk_warning = None, None, None
        if body.max_chunks_per_doc is not None:
            cap, scored_chunks, chunk_warning = chunk_cap(model, state.rankers[model], body.max_chunks_per_doc)
            if cap is not None and trust is not None:  # fewer chunks scored = other scores than the fit saw
                raise InputError(f"max_chunks_per_doc: model {model!r} was calibrated scoring its own passage cap; "
                                 f"probabilities, keep flags and cutoffs for {cap} chunks per document would be "
                                 f"off; send either max_chunks_per_doc or surerank.probability/keep/cutoff")
            variant = state.variant(model, cap) if cap is not None else None
        prepared = prepare(config, body.query, texts, "documents", body.max_tokens_per_doc)
        ranked = await state.rank(model, engine, prepared, request, variant)
        if trust is not None:
            ranked = hook.apply(ranked, trust)
        truncated, warnings = _truncation_notes(ranked, prepared, str(body.max_tokens_per_doc), scored_chunks)
        if chunk_warning:
            warnings.append(chunk_warning)
        truncated_set = set(truncated)
        raw = bool(body.surerank and body.surerank.raw_scores)
        items = ranked.items[: body.top_n] if body.top_n is not None else ranked.items
        results = []
        for item in items:
            result: dict[str, Any] = {"index": item.index,
                                      "relevance_score": _finite(item.score, warnings, item.index)}
            if body.return_documents:
                document = body.documents[item.index]
                result["document"] = ({"text": document} if isinstance(document, str)
                                      else document.model_dump(exclude_unset=True))
            if raw:
                result["score"] = result["relevance_score"]
            if item.probability is not None:
                result["probability"] = item.probability
            if item.keep is not None:
                result["keep"] = item.keep
            if item.index in truncated_set:
                result["truncated"] = True
            results.append(result)
        if truncated:
            response.headers[TRUNCATED_HEADER] = ",".join(map(str, truncated))
        extras = None
        if body.surerank is not None or truncated:
            extras = {"abstain": ranked.abstain, "confidence": ranked.confidence,
                      "cutoff": ranked.info.get("cutoff"), "truncated_documents": truncated or None}
        n = len(texts)
        tokens = prepared.tokens if n else 0
        return {
            "id": prepared.query.id, "model": model, "results": results,
            "usage": {"total_tokens": tokens, "prompt_tokens": tokens},
            "meta": {"api_version": {"version": version},
                     "billed_units": {"search_units": math.ceil(n / 100)}, "warnings": warnings or None},
            "surerank": extras,
        }

    common = {"response_model_exclude_none": True, "responses": responses,
              "dependencies": [Depends(require_key)]}

    @app.post("/v2/rerank", response_model=schemas.RerankResponse, tags=["rerank"], **common)
    async def rerank_v2(body: schemas.RerankRequest, request: Request, response: Response) -> dict[str, Any]:
        """Cohere v2 rerank (the official SDK's ``ClientV2.rerank`` works unchanged)."""
        return await cohere_like(body, request, response, "2")

    @app.post("/v1/rerank", response_model=schemas.RerankResponse, tags=["rerank"], **common)
    async def rerank_v1(body: schemas.RerankRequest, request: Request, response: Response) -> dict[str, Any]:
        """Cohere v1 / Jina rerank."""
        return await cohere_like(body, request, response, "1")

    @app.post("/rerank", response_model=list[schemas.TEIRank], tags=["rerank"], **common)
    async def rerank_tei(body: schemas.TEIRerankRequest, request: Request,
                         response: Response) -> list[dict[str, Any]]:
        """Text Embeddings Inference rerank: a list of {index, score, text?}, best first."""
        model, engine = state.engine(body.model)
        cut = config.limits.max_document_tokens if body.truncate else None
        prepared = prepare(config, body.query, body.texts, "texts", cut,
                           left=body.truncation_direction.lower() == "left", cut_hint="truncate=true")
        ranked = await state.rank(model, engine, prepared, request)
        truncated, _ = _truncation_notes(ranked, prepared, str(cut))
        if truncated:
            response.headers[TRUNCATED_HEADER] = ",".join(map(str, truncated))
        warnings: list[str] = []
        out = []
        for item in ranked.items:
            score = _finite(item.score, warnings, item.index)
            rank: dict[str, Any] = {"index": item.index,
                                    "score": score if body.raw_scores else sigmoid(score)}
            if body.return_text:
                rank["text"] = body.texts[item.index]
            out.append(rank)
        return out

    @app.get("/v1/models", response_model=schemas.ModelList, tags=["info"],
             dependencies=[Depends(require_key)], responses={401: responses[401]})
    async def models() -> dict[str, Any]:
        """The served models; the first is used when a request names none."""
        return {"object": "list", "data": [
            {"id": m.name, "ranker": m.ranker, "calibrated": m.calibration is not None,
             "default": m.name == config.default_model} for m in config.served_models()]}

    @app.get("/health", response_model=schemas.Health, tags=["info"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", response_model=schemas.Health, tags=["info"],
             responses={503: {"model": schemas.Health}})
    async def ready() -> Any:
        """Readiness: models loaded, workers alive, not shutting down."""
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503, headers={"Retry-After": "5"})
        if not state.ready or not all(e.alive for e in state.engines.values()):
            return JSONResponse({"status": "not ready"}, status_code=503, headers={"Retry-After": "1"})
        return {"status": "ready"}

    @app.get("/metrics", tags=["info"], include_in_schema=False)
    async def metrics() -> Response:
        for name, engine in state.engines.items():
            state.metrics.queue_depth.labels(name).set(engine.queue_depth)
            state.metrics.queue_tokens.labels(name).set(engine.queued_tokens)
        payload, content_type = state.metrics.render()
        return Response(payload, media_type=content_type)

    return _Gate(app, state)


def run(config: ServeConfig, rankers: Mapping[str, Ranker] | None = None,
        trust_hooks: Mapping[str, TrustHook] | None = None, access_log: bool = False) -> None:
    """Serve until SIGINT/SIGTERM, then drain: answer new requests 503 + Retry-After (``/ready`` 503) while
    the requests already taken are finished, for at least ``drain_s``; then close the listener and exit.

    A load balancer sees 503s (and retries elsewhere) instead of refused connections while in-flight work
    ends.  A second signal ends the drain at once.  The port opens only after the models are loaded, so
    there is no starting phase to answer: until then connections are refused.
    """
    import uvicorn

    from surerank.serve.protocol import guarded_protocol

    gate = create_app(config, rankers, trust_hooks)
    state: _State = gate.state

    class _Server(uvicorn.Server):
        pending_signal: int | None = None
        drain_logged = False

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.pending_signal is None and not self.should_exit:
                # first signal: drain with the listener open; on_tick ends the drain
                state.begin_drain()
                self.pending_signal = sig  # logged from on_tick: no logging inside a signal handler
                return
            super().handle_exit(sig, frame)  # a second signal: stop now (uvicorn's own graceful shutdown)

        async def on_tick(self, counter: int) -> bool:
            if self.pending_signal is not None and not self.should_exit and state.drain_started is not None:
                if not self.drain_logged:
                    self.drain_logged = True
                    logger.info("signal %d: draining, new requests get 503 until in-flight work is done "
                                "(drain_s=%g)", self.pending_signal, config.drain_s)
                if state.drained():
                    elapsed = time.monotonic() - state.drain_started
                    self.config.timeout_graceful_shutdown = max(1.0, config.graceful_timeout_s - elapsed)
                    super().handle_exit(self.pending_signal, None)  # re-raised after shutdown: the exit status
            return await super().on_tick(counter)

    limits = config.limits
    closed = state.metrics.connections_closed
    protocol = guarded_protocol(limits.max_header_bytes, limits.header_timeout_s, limits.body_timeout_s,
                                limits.max_connections, lambda reason: closed.labels(reason).inc())
    server = _Server(uvicorn.Config(
        gate, host=config.host, port=config.port, log_level=config.log_level, access_log=access_log,
        timeout_graceful_shutdown=config.graceful_timeout_s, lifespan="on", http=protocol,
        limit_concurrency=limits.max_connections, timeout_keep_alive=limits.keepalive_timeout_s,  # type: ignore[arg-type]
    ))
    server.run()
