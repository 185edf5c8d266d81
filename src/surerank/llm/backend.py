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
from surerank.llm.types import LLMRequest, LLMResponse

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

    def _answer(self, request: LLMRequest) -> LLMResponse:
        key = request.cache_key(self.model, self.cache_extra()) if self.cache is not None else None
        if key is not None:
            hit = self.cache.get(key)  # type: ignore[union-attr]
            if hit is not None:
                return hit
        start = time.perf_counter()
        try:
            with self._slots:
                response = self._generate_one(request)
        except Exception as exc:
            logger.warning("%s call failed: %s", self.name, exc)
            response = LLMResponse(error=f"{type(exc).__name__}: {exc}")
        response.latency_s = response.latency_s or time.perf_counter() - start
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
        """log P(continuation | prefix) for each pair, in ``response.info['logprob']`` (and ``['tokens']``)."""

        def one(pair: tuple[str, str]) -> LLMResponse:
            start = time.perf_counter()
            try:
                with self._slots:
                    response = self._continuation_logprob(*pair)
            except NotImplementedError:
                raise
            except Exception as exc:
                logger.warning("%s scoring call failed: %s", self.name, exc)
                response = LLMResponse(error=f"{type(exc).__name__}: {exc}")
            response.latency_s = response.latency_s or time.perf_counter() - start
            return response

        if len(pairs) <= 1 or self.concurrency == 1:
            return [one(p) for p in pairs]
        return list(self._executor().map(one, pairs))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model, "concurrency": self.concurrency}
