"""Any OpenAI-compatible endpoint (vLLM, SGLang, llama.cpp server, Ollama, hosted APIs) over httpx.

A wall-clock limit per attempt (``timeout``) and per call, retries included (``deadline``), enforced on
every socket operation; retries with exponential backoff (and ``Retry-After``) on 429/5xx/timeouts/connection
errors while time allows; every failure raised as a :class:`CallFailedError` with its cause; a concurrency
limit (the backend's thread pool), first-token ``top_logprobs`` from chat completions or legacy completions,
control of reasoning output, and the judgment cache.  httpx is imported lazily.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from email.utils import parsedate_to_datetime
from typing import Any

from surerank.errors import InputError, MissingDependencyError
from surerank.llm.backend import LLMBackend, map_label_logprobs
from surerank.llm.cache import JudgmentCache
from surerank.llm.templates import RerankTemplate, get_template, label_values, template_request
from surerank.llm.types import CallFailedError, LLMRequest, LLMResponse

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


# --- the wall-clock deadline ------------------------------------------------------------------------
# httpx's timeouts bound each socket operation, not a request: a server that sends a byte every second
# holds a call forever.  The client's network streams are wrapped so that every connect, read and write
# waits at most until the end of the current attempt, read from a thread-local (each call runs in one
# thread, pooled connections included).
_attempt = threading.local()


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    end = getattr(_attempt, "end", None)
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise error("the call's wall-clock deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream:
    """An httpcore network stream whose every operation ends by the current attempt's end."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        import httpcore

        return self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        import httpcore

        self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        import httpcore

        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname,
                                                     _left(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineNetwork:
    """An httpcore network backend handing out :class:`_DeadlineStream` objects."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> _DeadlineStream:
        import httpcore

        return _DeadlineStream(self._inner.connect_tcp(host, port, _left(timeout, httpcore.ConnectTimeout),
                                                       local_address=local_address, socket_options=socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None
                            ) -> _DeadlineStream:
        import httpcore

        return _DeadlineStream(self._inner.connect_unix_socket(path, _left(timeout, httpcore.ConnectTimeout),
                                                               socket_options=socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _enforce_deadlines(client: Any) -> None:
    """Wrap the network backend of every transport of an httpx client (the default one and any proxy's).
    Refuses loudly if httpx ever stops exposing it: a deadline that is silently not enforced is worse."""
    transports = [client._transport, *(t for t in getattr(client, "_mounts", {}).values() if t is not None)]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        if pool is None or not hasattr(pool, "_network_backend"):
            raise RuntimeError(f"this httpx/httpcore version does not expose its network backend "
                               f"({type(transport).__name__}); surerank cannot enforce the call deadline")
        if not isinstance(pool._network_backend, _DeadlineNetwork):
            pool._network_backend = _DeadlineNetwork(pool._network_backend)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAICompatibleBackend(LLMBackend):
    """A chat/completions client for one model on one OpenAI-compatible server.

    ``thinking``: None leaves the server default; False/True sends ``chat_template_kwargs.enable_thinking``
    (vLLM, SGLang, llama.cpp server for Qwen3-style templates).  Whatever the server does, ``<think>`` blocks
    are stripped from answers.  ``extra_body`` is merged into every request body (e.g. ``reasoning_effort``).

    ``timeout``: wall-clock seconds one attempt may take, connect to last byte (a reply dribbled slowly is cut
    off too).  ``deadline``: wall-clock seconds one call may take, all attempts and back-off waits included
    (None: ``max_retries + 1`` attempts of at most ``timeout`` each); a retry is made only if it can start
    before the deadline.  A call cut off by the deadline fails with cause ``deadline``, by ``timeout`` with
    cause ``timeout``.

    Named reranker templates (:mod:`surerank.llm.templates`) go to ``/completions`` as the raw prompt with the
    next token's ``logprobs``, scored by the template's formula from the label tokens' log-probabilities
    (exact token text).  ``score_endpoint="score"`` or ``"rerank"`` sends each (query, document) pair to
    vLLM's ``/score`` or ``/rerank`` instead and takes the server's score as is; ``score_inputs`` says what
    is sent there: ``"template"`` (the template's query side and document side, for a server that joins the
    two itself) or ``"raw"`` (query and passage as given, for a server that applies the template itself).
    """

    name = "openai"

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, deadline: float | None = None, max_retries: int = 4,
                 backoff: float = 0.5, max_backoff: float = 20.0,
                 concurrency: int = 8, cache: JudgmentCache | str | None = None, thinking: bool | None = None,
                 extra_body: dict[str, Any] | None = None, max_top_logprobs: int = 20,
                 headers: dict[str, str] | None = None, score_endpoint: str | None = None,
                 score_inputs: str = "template") -> None:
        super().__init__(model=model, concurrency=concurrency, cache=cache)
        if score_endpoint not in (None, "score", "rerank"):
            raise InputError(f"score_endpoint: expected 'score', 'rerank' or null, got {score_endpoint!r}")
        if score_inputs not in ("template", "raw"):
            raise InputError(f"score_inputs: expected 'template' or 'raw', got {score_inputs!r}")
        self.score_endpoint = score_endpoint
        self.score_inputs = score_inputs
        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise InputError("base_url: an OpenAI-compatible backend needs a base URL, e.g. "
                             "http://localhost:8000/v1 (or set OPENAI_BASE_URL)")
        if timeout <= 0:
            raise InputError(f"timeout: must be positive, got {timeout}")
        if deadline is not None and deadline <= 0:
            raise InputError(f"deadline: must be positive or None, got {deadline}")
        if max_retries < 0:
            raise InputError(f"max_retries: must be >= 0, got {max_retries}")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = float(timeout)
        self.deadline = float(deadline) if deadline is not None else None
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.thinking = thinking
        self.extra_body = dict(extra_body or {})
        self.max_top_logprobs = int(max_top_logprobs)
        self.headers = dict(headers or {})
        self._client: Any = None
        self._client_lock = threading.Lock()
        self.retries = 0  # retries done over the backend's life, for reports and tests

    def cache_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"thinking": self.thinking, "extra_body": self.extra_body}
        if self.score_endpoint is not None:
            extra["score_endpoint"] = self.score_endpoint
        return extra

    def describe(self) -> dict[str, Any]:
        described = {**super().describe(), "base_url": self.base_url, "timeout": self.timeout,
                     "deadline": self.deadline, "max_retries": self.max_retries, "thinking": self.thinking}
        if self.score_endpoint is not None:
            described.update(score_endpoint=self.score_endpoint, score_inputs=self.score_inputs)
        return described

    # --- named templates ---------------------------------------------------------------------------
    def check_template(self, template: RerankTemplate) -> None:
        """Refuse a template whose formula a completion API cannot give (a raw logit), naming the ways out."""
        if self.score_endpoint is None and template.needs_raw_logits:
            raise InputError(
                f"template {template.name}: the score is the raw {template.labels[0]!r} logit, and an "
                "OpenAI-compatible completion API returns only normalised log-probabilities (a different "
                "ranking); use score_endpoint='score' or 'rerank' (vLLM serving the model as a classifier), or "
                "backend='transformers' / 'llama-cpp'")

    def template_request(self, template: RerankTemplate, query: str, document: str,
                         instruction: str | None = None) -> LLMRequest:
        """The request for one pair: the template's pieces, or for a score endpoint the pair it is sent."""
        if self.score_endpoint is None:
            return template_request(template, query, document, instruction)
        pair = template.pair(query, document, instruction) if self.score_inputs == "template" else (query, document)
        return LLMRequest(prompt="".join(pair), pieces=pair, template=template.name, labels=template.labels,
                          max_tokens=1)

    def _template_one(self, request: LLMRequest) -> LLMResponse:
        template = get_template(request.template or "")
        if self.score_endpoint is not None:
            return self._endpoint_score(request)
        k = min(20, self.max_top_logprobs)
        body = {"model": self.model, "prompt": request.prompt, "max_tokens": 1, "temperature": 0.0,
                "logprobs": k, **self.extra_body}
        data, attempts, retried = self._post("/completions", body)
        choice = _first_choice(data, attempts, retried)
        top = _completion_first_top(choice.get("logprobs"))
        if not top:
            raise CallFailedError("no_logprobs", "the reply has no next-token log-probabilities, which the "
                                  f"{template.name} formula needs", attempts, retried)
        values = label_values(top, template.labels)
        usage = data.get("usage") or {}
        response = LLMResponse(text=str(choice.get("text") or ""), prompt_tokens=int(usage.get("prompt_tokens") or
                               request.estimated_prompt_tokens()), completion_tokens=int(usage.get(
                               "completion_tokens") or 1), attempts=attempts, retry_causes=retried,
                               first_token_logprobs=values)
        response.raw_text = response.text
        absent = [label for label in template.labels if label not in values]
        if absent:  # not among the top log-probabilities (or NaN): no score, never a guessed one
            non_finite = any(label in top and not math.isfinite(float(top[label])) for label in absent)
            response.info["template_issue"] = "non_finite" if non_finite else "label_not_in_top_logprobs"
            response.info["missing_labels"] = absent
            return response
        response.info.update(score=template.score(values, normalised=True), text_from="template")
        return response

    def _endpoint_score(self, request: LLMRequest) -> LLMResponse:
        """One pair through vLLM's /score (``text_1``/``text_2``) or /rerank (``query``/``documents``)."""
        first, second = request.pieces
        if self.score_endpoint == "score":
            body = {"model": self.model, "text_1": first, "text_2": second, **self.extra_body}
        else:
            body = {"model": self.model, "query": first, "documents": [second], **self.extra_body}
        data, attempts, retried = self._post(f"/{self.score_endpoint}", body)
        try:
            if self.score_endpoint == "score":
                value = float(data["data"][0]["score"])
            else:
                value = float(data["results"][0]["relevance_score"])
        except (KeyError, IndexError, TypeError, ValueError):
            raise CallFailedError("no_score", f"malformed /{self.score_endpoint} reply: {str(data)[:200]}",
                                  attempts, retried) from None
        if not math.isfinite(value):
            raise CallFailedError("non_finite", f"the /{self.score_endpoint} score is {value}", attempts, retried)
        usage = data.get("usage") or {}
        return LLMResponse(prompt_tokens=int(usage.get("prompt_tokens") or request.estimated_prompt_tokens()),
                           attempts=attempts, retry_causes=retried,
                           info={"score": value, "text_from": self.score_endpoint})

    # --- transport ---------------------------------------------------------------------------------
    def _http(self) -> Any:
        with self._client_lock:
            if self._client is None:
                try:
                    import httpx
                except ImportError as exc:  # pragma: no cover - httpx is in the llm extra
                    raise MissingDependencyError.for_extra("httpx", "llm", "the OpenAI-compatible backend") from exc
                headers = {"Content-Type": "application/json", **self.headers}
                if self.api_key:
                    headers["Authorization"] = f"Bearer {self.api_key}"
                limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
                # plain-http endpoints (local servers) need no CA bundle, whose loading costs ~0.3 s a client
                plain = self.base_url.startswith("http://")
                self._client = httpx.Client(base_url=self.base_url, headers=headers, verify=not plain,
                                            timeout=httpx.Timeout(self.timeout), limits=limits)
                _enforce_deadlines(self._client)
            return self._client

    def _post(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, tuple[str, ...]]:
        """POST with retries within the deadline; returns (json, attempts, causes of the retried attempts).
        Raises :class:`CallFailedError` (with the last attempt's cause) when no attempt succeeded."""
        import httpx

        client = self._http()
        call_end = time.monotonic() + self.deadline if self.deadline is not None else None
        retry_causes: list[str] = []
        attempt = 0
        while True:
            attempt += 1
            attempt_end = time.monotonic() + self.timeout
            by_deadline = call_end is not None and call_end <= attempt_end
            _attempt.end = call_end if by_deadline else attempt_end
            delay = None
            try:
                reply = client.post(path, json=body)
                if reply.status_code < 400:
                    try:
                        return reply.json(), attempt, tuple(retry_causes)
                    except ValueError as exc:
                        raise CallFailedError("bad_json", f"the reply is not JSON ({exc}): {reply.text[:120]!r}",
                                              attempt, tuple(retry_causes)) from None
                cause, message = f"http_{reply.status_code}", f"HTTP {reply.status_code}: {reply.text[:200]}"
                if reply.status_code not in RETRY_STATUS:
                    raise CallFailedError(cause, message, attempt, tuple(retry_causes))
                delay = _retry_after(reply.headers.get("retry-after"))
            except httpx.TimeoutException as exc:
                limit = f"deadline of {self.deadline:g} s" if by_deadline else f"timeout of {self.timeout:g} s"
                cause, message = ("deadline" if by_deadline else "timeout"), f"no reply within the {limit} ({exc})"
            except httpx.TransportError as exc:
                cause, message = "connection", f"{type(exc).__name__}: {exc}"
            finally:
                _attempt.end = None
            if attempt > self.max_retries:
                break
            if delay is None:
                delay = min(self.max_backoff, self.backoff * (2 ** (attempt - 1))) * (0.5 + random.random() / 2)
            else:
                delay = min(delay, self.max_backoff)
            if call_end is not None and time.monotonic() + delay >= call_end:
                message += f"; no retry: waiting {delay:.2g} s would pass the {self.deadline:g} s deadline"
                break
            retry_causes.append(cause)
            with self._client_lock:
                self.retries += 1
            logger.debug("retrying %s after %s (attempt %d, sleeping %.2fs)", path, message, attempt, delay)
            time.sleep(delay)
        raise CallFailedError(cause, message, attempt, tuple(retry_causes))

    # --- requests ----------------------------------------------------------------------------------
    def _body(self, request: LLMRequest) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": request.max_tokens,
                                "temperature": request.temperature}
        if request.stop:
            body["stop"] = list(request.stop)
        k = min(request.top_logprobs, self.max_top_logprobs)
        if request.prompt is not None:
            path = "/completions"
            body["prompt"] = request.prompt
            if k > 0:
                body["logprobs"] = k
        else:
            path = "/chat/completions"
            body["messages"] = request.message_dicts()
            if k > 0:
                body["logprobs"] = True
                body["top_logprobs"] = k
            if self.thinking is not None:
                body["chat_template_kwargs"] = {"enable_thinking": bool(self.thinking)}
        body.update(self.extra_body)
        return path, body

    def _generate_one(self, request: LLMRequest) -> LLMResponse:
        if request.template:
            return self._template_one(request)
        path, body = self._body(request)
        data, attempts, retried = self._post(path, body)
        choice = _first_choice(data, attempts, retried)
        if request.prompt is not None:
            text = choice.get("text") or ""
            top = _completion_first_top(choice.get("logprobs"))
        else:
            message = choice.get("message") or {}
            text = message.get("content") or ""
            top = _chat_first_top(choice.get("logprobs"))
        if not isinstance(text, str):
            text = str(text)
        if not text.strip() and not top:
            raise CallFailedError("empty_answer", "the reply has no content and no log-probabilities", attempts,
                                  retried)
        usage = data.get("usage") or {}
        response = LLMResponse(
            text=text, raw_text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or request.estimated_prompt_tokens()),
            completion_tokens=int(usage.get("completion_tokens") or max(1, len(text) // 4)),
            attempts=attempts, retry_causes=retried,
        )
        if top is not None:
            finite = {k: v for k, v in top.items() if math.isfinite(v)}
            if len(finite) < len(top):
                response.info["logprobs_issue"] = "non_finite"
            response.first_token_logprobs = map_label_logprobs(finite, request.labels) if request.labels else finite
        return response

    def _continuation_logprob(self, prefix: str, continuation: str) -> LLMResponse:
        prompt = prefix + continuation
        body = {"model": self.model, "prompt": prompt, "max_tokens": 1, "echo": True,
                "logprobs": 1, "temperature": 0.0, **self.extra_body}
        data, attempts, retried = self._post("/completions", body)
        try:
            choice = data["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise CallFailedError("no_choices", f"malformed reply: no choices in {str(data)[:200]}", attempts,
                                  retried) from None
        try:
            lp = choice["logprobs"]
            tokens = lp["tokens"]
            token_logprobs = lp["token_logprobs"]
        except (KeyError, IndexError, TypeError):
            empty = isinstance(choice, dict) and not choice.get("text")
            raise CallFailedError("empty_answer" if empty else "no_logprobs",
                                  "the reply has no text and no log-probabilities" if empty
                                  else "the reply has no token log-probabilities", attempts, retried) from None
        offsets = lp.get("text_offset")
        if not offsets:
            offsets, position = [], 0
            for token in tokens:
                offsets.append(position)
                position += len(str(token))
        usage = data.get("usage") or {}
        n_prompt = int(usage.get("prompt_tokens") or len(tokens))
        total, count = 0.0, 0
        for index, (offset, logprob) in enumerate(zip(offsets, token_logprobs)):
            if index >= n_prompt:
                break
            # only the continuation's own tokens: a server that ignores echo returns the generated token,
            # which lies past the prompt, and must not be mistaken for a scored prompt token
            if len(prefix) <= offset < len(prompt) and logprob is not None:
                total += float(logprob)
                count += 1
        # check_continuation (in the base class) turns count == 0 or a non-finite total into a failed call
        return LLMResponse(prompt_tokens=n_prompt, completion_tokens=int(usage.get("completion_tokens") or 0),
                           attempts=attempts, retry_causes=retried, info={"logprob": total, "tokens": count})

    def close(self) -> None:
        super().close()
        if self._client is not None:
            self._client.close()
            self._client = None


def _chat_first_top(logprobs: Any) -> dict[str, float] | None:
    try:
        first = logprobs["content"][0]
    except (KeyError, IndexError, TypeError):
        return None
    top: dict[str, float] = {}
    for entry in first.get("top_logprobs") or []:
        if isinstance(entry, dict) and "token" in entry and entry.get("logprob") is not None:
            top[str(entry["token"])] = max(float(entry["logprob"]), top.get(str(entry["token"]), -1e30))
    if "token" in first and first.get("logprob") is not None:
        top.setdefault(str(first["token"]), float(first["logprob"]))
    return top or None


def _first_choice(data: Any, attempts: int, retried: Any) -> dict[str, Any]:
    """The reply's first choice, or a failed call of cause ``no_choices`` naming what came back."""
    try:
        choice = data["choices"][0]
        if isinstance(choice, dict):
            return choice
    except (KeyError, IndexError, TypeError):
        pass
    raise CallFailedError("no_choices", f"malformed reply: no choices in {str(data)[:200]}", attempts, retried)


def _completion_first_top(logprobs: Any) -> dict[str, float] | None:
    try:
        first = logprobs["top_logprobs"][0]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(first, dict):
        return None
    return {str(k): float(v) for k, v in first.items() if v is not None} or None
