"""Any OpenAI-compatible endpoint (vLLM, SGLang, llama.cpp server, Ollama, hosted APIs) over httpx.

Timeouts, retries with exponential backoff (and ``Retry-After``) on 429/5xx/timeouts/connection errors, a
concurrency limit (the backend's thread pool), first-token ``top_logprobs`` from chat completions or legacy
completions, control of reasoning output, and the judgment cache.  httpx is imported lazily.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from typing import Any

from surerank.errors import InputError, MissingDependencyError
from surerank.llm.backend import LLMBackend, map_label_logprobs
from surerank.llm.cache import JudgmentCache
from surerank.llm.types import LLMRequest, LLMResponse

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class HTTPStatusError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status


class OpenAICompatibleBackend(LLMBackend):
    """A chat/completions client for one model on one OpenAI-compatible server.

    ``thinking``: None leaves the server default; False/True sends ``chat_template_kwargs.enable_thinking``
    (vLLM, SGLang, llama.cpp server for Qwen3-style templates).  Whatever the server does, ``<think>`` blocks
    are stripped from answers.  ``extra_body`` is merged into every request body (e.g. ``reasoning_effort``).
    """

    name = "openai"

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 4, backoff: float = 0.5, max_backoff: float = 20.0,
                 concurrency: int = 8, cache: JudgmentCache | str | None = None, thinking: bool | None = None,
                 extra_body: dict[str, Any] | None = None, max_top_logprobs: int = 20,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(model=model, concurrency=concurrency, cache=cache)
        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise InputError("base_url: an OpenAI-compatible backend needs a base URL, e.g. "
                             "http://localhost:8000/v1 (or set OPENAI_BASE_URL)")
        if timeout <= 0:
            raise InputError(f"timeout: must be positive, got {timeout}")
        if max_retries < 0:
            raise InputError(f"max_retries: must be >= 0, got {max_retries}")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = float(timeout)
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
        return {"thinking": self.thinking, "extra_body": self.extra_body}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "base_url": self.base_url, "timeout": self.timeout,
                "max_retries": self.max_retries, "thinking": self.thinking}

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
            return self._client

    def _post(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """POST with retries; returns (json, attempts).  Raises after the last failed attempt."""
        import httpx

        client = self._http()
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            delay = None
            try:
                reply = client.post(path, json=body)
                if reply.status_code < 400:
                    return reply.json(), attempt + 1
                failure = HTTPStatusError(reply.status_code, reply.text)
                if reply.status_code not in RETRY_STATUS:
                    raise failure
                last = failure
                retry_after = reply.headers.get("retry-after")
                if retry_after:
                    try:
                        delay = min(float(retry_after), self.max_backoff)
                    except ValueError:
                        delay = None
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = exc
            if attempt == self.max_retries:
                break
            if delay is None:
                delay = min(self.max_backoff, self.backoff * (2 ** attempt)) * (0.5 + random.random() / 2)
            self.retries += 1
            logger.info("retrying %s after %s (attempt %d, sleeping %.2fs)", path, last, attempt + 1, delay)
            time.sleep(delay)
        assert last is not None
        raise last

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
        path, body = self._body(request)
        data, attempts = self._post(path, body)
        try:
            choice = data["choices"][0]
        except (KeyError, IndexError, TypeError):
            return LLMResponse(error=f"malformed reply: no choices in {str(data)[:200]}", attempts=attempts)
        if request.prompt is not None:
            text = choice.get("text") or ""
            top = _completion_first_top(choice.get("logprobs"))
        else:
            message = choice.get("message") or {}
            text = message.get("content") or ""
            top = _chat_first_top(choice.get("logprobs"))
        usage = data.get("usage") or {}
        response = LLMResponse(
            text=text if isinstance(text, str) else str(text), raw_text=text if isinstance(text, str) else "",
            prompt_tokens=int(usage.get("prompt_tokens") or request.estimated_prompt_tokens()),
            completion_tokens=int(usage.get("completion_tokens") or max(1, len(str(text)) // 4)),
            attempts=attempts,
        )
        if top is not None:
            response.first_token_logprobs = map_label_logprobs(top, request.labels) if request.labels else top
        return response

    def _continuation_logprob(self, prefix: str, continuation: str) -> LLMResponse:
        body = {"model": self.model, "prompt": prefix + continuation, "max_tokens": 1, "echo": True,
                "logprobs": 1, "temperature": 0.0, **self.extra_body}
        data, attempts = self._post("/completions", body)
        try:
            lp = data["choices"][0]["logprobs"]
            tokens = lp["tokens"]
            token_logprobs = lp["token_logprobs"]
        except (KeyError, IndexError, TypeError):
            return LLMResponse(error="malformed reply: no echoed prompt logprobs", attempts=attempts)
        offsets = lp.get("text_offset")
        if not offsets:
            offsets, position = [], 0
            for token in tokens:
                offsets.append(position)
                position += len(token)
        usage = data.get("usage") or {}
        n_prompt = int(usage.get("prompt_tokens") or len(tokens))
        total, count = 0.0, 0
        for index, (offset, logprob) in enumerate(zip(offsets, token_logprobs)):
            if index >= n_prompt:
                break
            if offset >= len(prefix) and logprob is not None:
                total += float(logprob)
                count += 1
        return LLMResponse(prompt_tokens=n_prompt, completion_tokens=int(usage.get("completion_tokens") or 0),
                           attempts=attempts, info={"logprob": total, "tokens": count})

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
    top = {}
    for entry in first.get("top_logprobs") or []:
        if isinstance(entry, dict) and "token" in entry and entry.get("logprob") is not None:
            top[str(entry["token"])] = max(float(entry["logprob"]), top.get(str(entry["token"]), -1e30))
    if "token" in first and first.get("logprob") is not None:
        top.setdefault(str(first["token"]), float(first["logprob"]))
    return top or None


def _completion_first_top(logprobs: Any) -> dict[str, float] | None:
    try:
        first = logprobs["top_logprobs"][0]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(first, dict):
        return None
    return {str(k): float(v) for k, v in first.items() if v is not None} or None
