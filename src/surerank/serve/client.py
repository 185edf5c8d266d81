"""A small client for ``surerank serve`` (sync and async, httpx), with timeouts and retries.

Retries cover what a retry can fix: connection failures, timeouts, 429 and 503 (honouring the
server's ``Retry-After``).  Other errors raise :class:`ServeError` with the server's message, which
names the field or limit at fault.  Reranking is idempotent, so retrying a POST is safe.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from surerank.errors import SureRankError

RETRY_STATUSES = frozenset((429, 502, 503, 504))


class ServeError(SureRankError):
    """The service answered with an error (``status``) or could not be reached (``status`` 0)."""

    def __init__(self, message: str, status: int = 0, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass
class RerankResult:
    index: int
    relevance_score: float
    document: dict[str, Any] | None = None
    probability: float | None = None
    keep: bool | None = None
    truncated: bool = False


@dataclass
class RerankResponse:
    id: str
    model: str
    results: list[RerankResult]
    meta: dict[str, Any] = field(default_factory=dict)
    surerank: dict[str, Any] | None = None

    @property
    def indices(self) -> list[int]:
        return [r.index for r in self.results]


def _payload(query: str, documents: Sequence[str | Mapping[str, Any]], model: str | None,
             top_n: int | None, return_documents: bool, max_tokens_per_doc: int | None,
             probability: bool, keep: bool, cutoff: str | None) -> dict[str, Any]:
    docs = [d if isinstance(d, str) else dict(d) for d in documents]
    body: dict[str, Any] = {"query": query, "documents": docs, "return_documents": return_documents}
    if model is not None:
        body["model"] = model
    if top_n is not None:
        body["top_n"] = top_n
    if max_tokens_per_doc is not None:
        body["max_tokens_per_doc"] = max_tokens_per_doc
    if probability or keep or cutoff:
        body["surerank"] = {"probability": probability, "keep": keep, "cutoff": cutoff}
    return body


def _parse(data: Mapping[str, Any]) -> RerankResponse:
    results = [RerankResult(index=r["index"], relevance_score=r["relevance_score"],
                            document=r.get("document"), probability=r.get("probability"), keep=r.get("keep"),
                            truncated=bool(r.get("truncated", False)))
               for r in data["results"]]
    return RerankResponse(id=data.get("id", ""), model=data.get("model", ""), results=results,
                          meta=data.get("meta") or {}, surerank=data.get("surerank"))


def _error(response: Any) -> ServeError:
    try:
        body = response.json()
        message = body.get("message") or body.get("detail") or str(body)
    except Exception:
        body, message = response.text, response.text
    return ServeError(f"HTTP {response.status_code}: {message}", status=response.status_code, body=body)


class _Policy:
    def __init__(self, max_retries: int, backoff_s: float, max_backoff_s: float) -> None:
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s

    def delay(self, attempt: int, response: Any = None) -> float:
        if response is not None:
            retry_after = response.headers.get("retry-after")
            if retry_after and retry_after.replace(".", "", 1).isdigit():
                return min(self.max_backoff_s, float(retry_after))
        base = min(self.max_backoff_s, self.backoff_s * (2 ** attempt))
        return base * (0.5 + random.random() / 2)  # jitter, so shed clients do not return in step


class _Connection:
    """What both clients hold: the httpx client (their own unless one is passed), the retry policy, the
    default model.  ``_HTTPX_CLASS`` names the httpx client class a subclass makes."""

    _HTTPX_CLASS = "Client"

    def __init__(self, base_url: str = "http://127.0.0.1:8080", api_key: str | None = None,
                 model: str | None = None, timeout: float = 30.0, max_retries: int = 3,
                 backoff_s: float = 0.25, max_backoff_s: float = 10.0, http_client: Any = None) -> None:
        import httpx  # the serve extra: `import surerank.serve` stays light

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self._policy = _Policy(max_retries, backoff_s, max_backoff_s)
        self._own = http_client is None
        self._http = http_client or getattr(httpx, self._HTTPX_CLASS)(
            base_url=base_url.rstrip("/"), timeout=timeout, headers=headers)
        self._transport_errors = (httpx.TransportError,)


class SureRankClient(_Connection):
    """``SureRankClient("http://127.0.0.1:8080").rerank("query", ["doc a", "doc b"], top_n=1)``."""

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(self._policy.max_retries + 1):
            last = attempt == self._policy.max_retries
            try:
                response = self._http.request(method, path, **kwargs)
            except self._transport_errors as error:
                if last:
                    raise ServeError(f"{method} {path}: {type(error).__name__}: {error}") from error
                time.sleep(self._policy.delay(attempt))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                time.sleep(self._policy.delay(attempt, response))
                continue
            if response.status_code >= 400:
                raise _error(response)
            return response.json()
        raise AssertionError("unreachable")

    def rerank(self, query: str, documents: Sequence[str | Mapping[str, Any]], *,
               top_n: int | None = None, return_documents: bool = False,
               max_tokens_per_doc: int | None = None, model: str | None = None,
               probability: bool = False, keep: bool = False, cutoff: str | None = None) -> RerankResponse:
        body = _payload(query, documents, model or self.model, top_n, return_documents, max_tokens_per_doc,
                        probability, keep, cutoff)
        return _parse(self._request("POST", "/v2/rerank", json=body))

    def models(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/v1/models")["data"])

    def ready(self) -> bool:
        try:
            return self._http.get("/ready").status_code == 200
        except self._transport_errors:
            return False

    def close(self) -> None:
        if self._own:
            self._http.close()

    def __enter__(self) -> SureRankClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSureRankClient(_Connection):
    """The same calls as :class:`SureRankClient`, awaited."""

    _HTTPX_CLASS = "AsyncClient"

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(self._policy.max_retries + 1):
            last = attempt == self._policy.max_retries
            try:
                response = await self._http.request(method, path, **kwargs)
            except self._transport_errors as error:
                if last:
                    raise ServeError(f"{method} {path}: {type(error).__name__}: {error}") from error
                await asyncio.sleep(self._policy.delay(attempt))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                await asyncio.sleep(self._policy.delay(attempt, response))
                continue
            if response.status_code >= 400:
                raise _error(response)
            return response.json()
        raise AssertionError("unreachable")

    async def rerank(self, query: str, documents: Sequence[str | Mapping[str, Any]], *,
                     top_n: int | None = None, return_documents: bool = False,
                     max_tokens_per_doc: int | None = None, model: str | None = None,
                     probability: bool = False, keep: bool = False,
                     cutoff: str | None = None) -> RerankResponse:
        body = _payload(query, documents, model or self.model, top_n, return_documents, max_tokens_per_doc,
                        probability, keep, cutoff)
        return _parse(await self._request("POST", "/v2/rerank", json=body))

    async def models(self) -> list[dict[str, Any]]:
        return list((await self._request("GET", "/v1/models"))["data"])

    async def ready(self) -> bool:
        try:
            return (await self._http.get("/ready")).status_code == 200
        except self._transport_errors:
            return False

    async def aclose(self) -> None:
        if self._own:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncSureRankClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
