"""The backend contract every LLM ranker talks to, plus the shared cache / concurrency / thinking handling.

A backend answers :class:`LLMRequest` objects.  Rankers need three things from it:

* ``generate`` — text answers (listwise permutations, setwise choices), many requests at once;
* first-token log-probabilities over a few labels (``request.labels``: yes/no, A/B, window ids) — filled
  into ``LLMResponse.first_token_logprobs`` where the backend can (logits in-process, ``top_logprobs``
  over HTTP); rankers fall back to parsing the text where it cannot;
* ``continuation_logprob`` — log P(continuation | prefix), for query likelihood (UPR).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from surerank.llm.cache import JudgmentCache
from surerank.llm.parse import strip_thinking
from surerank.llm.types import CallFailedError, LLMRequest, LLMResponse

logger = logging.getLogger(__name__)


def _normalise_token(token: str) -> str:
    return token.replace("Ġ", " ").replace("▁", " ").strip().strip("[](){}<>\"'*:.").lower()


def map_label_logprobs(top: Mapping[str, float] | None, labels: Sequence[str]) -> dict[str, float]:
    """Fold a token → log-probability map (``top_logprobs``) onto the requested labels.

    Variants of one label (``Yes``, `` yes``, ``YES``, ``[A``) are summed in probability space; labels that
    do not appear are left out (the caller decides the floor).
    """
    if not top:
        return {}
    wanted = {label.lower(): label for label in labels}
    mass: dict[str, float] = {}
    for token, logprob in top.items():
        key = _normalise_token(token)
        if key in wanted and logprob is not None and math.isfinite(logprob):
            label = wanted[key]
            mass[label] = mass.get(label, 0.0) + math.exp(logprob)
    return {label: math.log(p) for label, p in mass.items() if p > 0}


def continuation_start(prefix_tokens: Sequence[int], full_tokens: Sequence[int]) -> int:
    """Where the continuation's tokens begin in the tokens of prefix + continuation.

    Tokenising the two texts together can merge tokens across the boundary, so this is the length of the
    prefix the two token lists share, and at least 1 (the first token has no prediction to score).
    """
    k = 0
    while k < min(len(prefix_tokens), len(full_tokens)) and prefix_tokens[k] == full_tokens[k]:
        k += 1
    return max(1, k)


def exception_cause(exc: BaseException) -> str:
    """A short cause for an unexpected exception: ``timeout``, ``connection``, else the snake-cased type."""
    if isinstance(exc, CallFailedError):
        return exc.cause
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionError):
        return "connection"
    name = type(exc).__name__
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))


def check_continuation(response: LLMResponse) -> LLMResponse:
    """Turn a continuation score that is no score (no token scored, non-finite) into a failed call."""
    if not response.ok or response.info.get("dry_run"):
        return response
    logprob, tokens = response.info.get("logprob"), response.info.get("tokens")
    cause = None
    if logprob is None or (tokens is not None and int(tokens) < 1):
        cause, message = "no_scored_tokens", "no continuation token was scored (does the server ignore echo?)"
    elif not math.isfinite(float(logprob)):
        cause, message = "non_finite", f"the continuation's log-probability is {logprob}"
    if cause is None:
        return response
    response.error, response.cause = message, cause
    response.info = {k: v for k, v in response.info.items() if k != "logprob"}
    return response


class LLMBackend(ABC):
    """Shared machinery: judgment cache, thread-pool concurrency limit, thinking stripped from answers."""

    name = "llm"

    def __init__(self, model: str, concurrency: int = 4, cache: JudgmentCache | str | None = None,
                 strip_reasoning: bool = True) -> None:
        self.model = model
        self.concurrency = max(1, int(concurrency))
        # the cap on calls in flight, whichever thread makes them (the pool's, or a query's own thread)
        self._slots = threading.BoundedSemaphore(self.concurrency)
        if isinstance(cache, str):
            cache = JudgmentCache(cache)
        self.cache = cache
        self.strip_reasoning = strip_reasoning
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # --- what subclasses implement -------------------------------------------------------------------
    @abstractmethod
    def _generate_one(self, request: LLMRequest) -> LLMResponse:
        """Answer one request; may raise for transport errors (the caller records them)."""

    def _continuation_logprob(self, prefix: str, continuation: str) -> LLMResponse:
        raise NotImplementedError(f"{type(self).__name__} cannot score a continuation (query likelihood)")

    def cache_extra(self) -> dict[str, Any]:
        """Backend settings that change answers and so belong in the cache key."""
        return {}

    @property
    def supports_logprobs(self) -> bool:
        return True

    # --- shared --------------------------------------------------------------------------------------
    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=self.name)
            return self._pool

    def _call(self, fn: Any, *args: Any) -> LLMResponse:
        """Run one call under the concurrency cap; a raised error becomes a failed response with its cause
        (counted by the session and named in the ranker's one warning per list, not logged per call)."""
        start = time.perf_counter()
        try:
            with self._slots:
                response = fn(*args)
        except NotImplementedError:
            raise
        except CallFailedError as exc:
            logger.debug("%s call failed (%s): %s", self.name, exc.cause, exc)
            response = LLMResponse(error=str(exc), cause=exc.cause, attempts=exc.attempts,
                                   retry_causes=exc.retry_causes)
        except Exception as exc:
            logger.debug("%s call failed: %s", self.name, exc)
            response = LLMResponse(error=f"{type(exc).__name__}: {exc}", cause=exception_cause(exc))
        if response.error and not response.cause:
            response.cause = "error"
        response.latency_s = response.latency_s or time.perf_counter() - start
        return response

    def _answer(self, request: LLMRequest) -> LLMResponse:
        key = request.cache_key(self.model, self.cache_extra()) if self.cache is not None else None
        if key is not None:
            hit = self.cache.get(key)  # type: ignore[union-attr]
            if hit is not None:
                return hit
        response = self._call(self._generate_one, request)
        if not response.raw_text:
            response.raw_text = response.text
        if self.strip_reasoning:
            response.text = strip_thinking(response.raw_text)
        if key is not None and response.ok:
            self.cache.put(key, response)  # type: ignore[union-attr]
        return response

    def generate(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        """Answer many independent requests, at most ``concurrency`` in flight; order is kept."""
        if not requests:
            return []
        if len(requests) == 1 or self.concurrency == 1:
            return [self._answer(r) for r in requests]
        return list(self._executor().map(self._answer, requests))

    def continuation_logprobs(self, pairs: Sequence[tuple[str, str]]) -> list[LLMResponse]:
        """log P(continuation | prefix) for each pair, in ``response.info['logprob']`` (and ``['tokens']``).

        A reply that scored no continuation token, or a non-finite log-probability, is a failed call (causes
        ``no_scored_tokens``, ``non_finite``), never a score: 0.0 would rank best and NaN breaks the order."""

        def one(pair: tuple[str, str]) -> LLMResponse:
            return check_continuation(self._call(self._continuation_logprob, *pair))

        if len(pairs) <= 1 or self.concurrency == 1:
            return [one(p) for p in pairs]
        return list(self._executor().map(one, pairs))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model, "concurrency": self.concurrency}
