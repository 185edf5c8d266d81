"""What every LLM ranker shares: backend construction, per-query sessions (budget + cost trace), passage
clipping with reported truncation, error policy, and the dry-run cost estimate."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np

from surerank.errors import InputError, SureRankError
from surerank.llm import Budget, DryRunBackend, LLMBackend, LLMResponse, Session, make_backend
from surerank.llm.prompts import clip
from surerank.llm.session import BudgetExhaustedError
from surerank.ranker import BaseRanker
from surerank.types import Cost, Query, RankedList, Truncation

logger = logging.getLogger(__name__)

LOGPROB_FLOOR = -30.0


class LLMBackendError(SureRankError, RuntimeError):
    """Model calls failed (after retries) and the ranker was asked to raise rather than fall back."""


def answer_label_scores(session: Session, response: LLMResponse, labels: Sequence[str]) -> np.ndarray | None:
    """:func:`label_scores` of a response; when a usable answer has none, count why in
    ``session.no_logprobs`` (``missing``: the server sent none; ``no_label``: none of the labels among the
    top tokens; ``non_finite``: NaN/inf values, dropped) -- the caller then reads the answer text."""
    lp = label_scores(response.first_token_logprobs, labels)
    if lp is None and response.ok and not response.info.get("dry_run"):
        if response.info.get("logprobs_issue") == "non_finite":
            cause = "non_finite"
        elif response.first_token_logprobs is None:
            cause = "missing"
        else:
            cause = "no_label"
        session.no_logprobs[cause] += 1
    return lp


def label_scores(logprobs: dict[str, float] | None, labels: Sequence[str]) -> np.ndarray | None:
    """Log-probabilities of ``labels`` from a first-token map; labels not seen get a floor below the lowest
    seen value.  None when no label was seen at all (the caller then parses the text)."""
    if not logprobs:
        return None
    seen = [logprobs[label] for label in labels if label in logprobs]
    if not seen:
        return None
    floor = min(min(seen) - 5.0, LOGPROB_FLOOR)
    return np.array([logprobs.get(label, floor) for label in labels], dtype=float)


class LLMRanker(BaseRanker):
    """Base of the LLM rankers.

    Options shared by all: ``backend`` (``"openai"``, ``"llama-cpp"``, ``"judge"`` or an instance) with
    ``backend_options`` or the common ones inline (``model``, ``base_url``, ``model_path``, ``api_key``,
    ``timeout``, ``deadline``, ``max_retries``, ``concurrency``, ``thinking``, ``cache``); ``max_words`` per passage;
    a per-query budget (``max_calls``, ``max_total_tokens``); ``on_error`` (``"fallback"`` keeps the input
    order where calls failed and reports it, ``"raise"`` raises :class:`LLMBackendError`); ``seed``.
    """

    name: ClassVar[str] = "llm"
    fallback_effect: ClassVar[str] = "kept the input order for {n} answers"
    """What a fallback does in this method, for the one warning per list (``{n}``: how many)."""
    no_logprobs_effect: ClassVar[str] = "read from the answer text"
    _BACKEND_KEYS = ("model", "base_url", "model_path", "api_key", "timeout", "deadline", "max_retries", "backoff",
                     "max_backoff",
                     "concurrency", "thinking", "cache", "extra_body", "headers", "max_top_logprobs",
                     "n_ctx", "n_threads", "extra_buffers", "device", "dtype", "judge",
                     "trust_remote_code", "batch_size", "score_endpoint", "score_inputs")

    def __init__(self, backend: str | LLMBackend = "openai", *, backend_options: dict[str, Any] | None = None,
                 max_words: int | None = 100, max_calls: int | None = None, max_total_tokens: int | None = None,
                 on_error: str = "fallback", seed: int = 0, **options: Any) -> None:
        inline = {k: options.pop(k) for k in list(options) if k in self._BACKEND_KEYS}
        if options:
            raise InputError(f"{self.name}: unknown option(s) {', '.join(sorted(options))}")
        if on_error not in ("fallback", "raise"):
            raise InputError(f"on_error: expected 'fallback' or 'raise', got {on_error!r}")
        if max_words is not None and max_words < 1:
            raise InputError(f"max_words: must be >= 1 or None, got {max_words}")
        self.backend = make_backend(backend, **{**(backend_options or {}), **inline})
        self.max_words = max_words
        self.budget = Budget(max_calls=max_calls, max_tokens=max_total_tokens)
        self.on_error = on_error
        self.seed = seed

    # --- subclasses --------------------------------------------------------------------------------------
    def _rank_one(self, query: Query, passages: list[str], session: Session
                  ) -> tuple[list[int], np.ndarray | None, dict[str, Any]]:
        """Order (best first) and optional scores for one query; may raise BudgetExhaustedError only through
        helpers that catch it themselves."""
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        return {}

    # --- shared ------------------------------------------------------------------------------------------
    def _passages(self, query: Query) -> tuple[list[str], list[Truncation | None]]:
        clipped = [clip(c.text, self.max_words) for c in query.candidates]
        return [text for text, _ in clipped], [t for _, t in clipped]

    def _rank_with(self, query: Query, session: Session) -> RankedList:
        passages, truncations = self._passages(query)
        try:
            order, scores, info = self._rank_one(query, passages, session)
        except BudgetExhaustedError:  # a method that did not handle it: keep the input order
            order, scores, info = list(range(len(passages))), None, {"budget_fallback": True}
        if self.on_error == "raise" and session.errors:
            raise LLMBackendError(f"{self.name}: {len(session.errors)} model call(s) failed for query "
                                  f"{query.id!r}; first: {session.errors[0]}")
        cost = session.finish()
        if scores is not None:
            ranked = RankedList.from_scores(query, [float(s) for s in scores], ranker=self.name, cost=cost,
                                            truncations=truncations)
            if ranked.ids != [query.candidates[i].id for i in order]:  # method order wins over score ties
                ranked = RankedList.from_order(query, order, ranker=self.name, cost=cost)
                for item in ranked.items:
                    item.score = float(scores[item.index])
                    item.truncation = truncations[item.index]
        else:
            ranked = RankedList.from_order(query, order, ranker=self.name, cost=cost)
            for item in ranked.items:
                item.truncation = truncations[item.index]
        ranked.info.update(info)
        ranked.info.update(session.summary())
        message = "" if isinstance(session.backend, DryRunBackend) else self._problems(session)
        if message:
            logger.warning("%s, query %s: %s", self.name, query.id, message)
        return ranked

    def _problems(self, session: Session) -> str:
        """Everything that went wrong for one list, by cause, in one sentence ('' when nothing did)."""

        def causes(counter: Any) -> str:
            ordered = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
            return ", ".join(f"{cause}: {count}" for cause, count in ordered)

        parts = []
        if session.errors:
            parts.append(f"{len(session.errors)} of {session.cost.calls} calls failed ({causes(session.failures)})")
        if session.cost.retries:
            parts.append(f"{session.cost.retries} attempts retried ({causes(session.retry_causes)})")
        if session.fallbacks:
            parts.append(f"{self.fallback_effect.format(n=session.fallbacks)} ({causes(session.fallback_causes)})")
        if session.no_logprobs:
            n = sum(session.no_logprobs.values())
            parts.append(f"{n} answers without usable log-probabilities ({causes(session.no_logprobs)}) were "
                         f"{self.no_logprobs_effect}")
        if session.budget_exhausted:
            parts.append("the call/token budget ran out before the method finished")
        return "; ".join(parts)

    def _rank_queries(self, queries: list[Query]) -> list[RankedList]:
        """Queries run side by side up to the backend's ``concurrency`` (calls in flight stay within it):
        a method with sequential rounds (sliding window, setwise) keeps the server busy with other queries.
        Each query has its own session, budget and cost trace; results do not depend on the interleaving."""
        workers = min(getattr(self.backend, "concurrency", 1), len(queries))
        if workers <= 1:
            return [self._rank_with(q, Session(self.backend, self.budget)) for q in queries]
        with ThreadPoolExecutor(workers, thread_name_prefix=f"{self.name}-query") as pool:
            return list(pool.map(lambda q: self._rank_with(q, Session(self.backend, self.budget)), queries))

    def estimate(self, queries: Query | Sequence[Query]) -> Cost:
        """Dry run: the calls, sequential rounds and tokens ranking these queries would cost, without calling
        the model.  Prompt tokens are estimated (~4 characters a token, input order), completion tokens are
        bounded by ``max_tokens``; adaptive methods (setwise) are costed on their longest path."""
        qs = [queries] if isinstance(queries, Query) else list(queries)
        dry = DryRunBackend()
        real, self.backend = self.backend, dry
        total = Cost()
        try:
            for q in qs:
                if not q.candidates:
                    continue
                session = Session(dry, self.budget)
                self._rank_with(q, session)
                total = total.add(Cost(calls=session.cost.calls, prompt_tokens=session.cost.prompt_tokens,
                                       completion_tokens=session.cost.completion_tokens,
                                       rounds=session.cost.rounds))
        finally:
            self.backend = real
        total.details = {"dry_run": True, "queries": len(qs),
                         "tokens": "prompt: ~4 characters a token; completion: upper bound (max_tokens a call)"}
        return total

    def describe(self) -> dict[str, Any]:
        return {"ranker": self.name, **self.backend.describe(), "max_words": self.max_words,
                "max_calls": self.budget.max_calls, "max_total_tokens": self.budget.max_tokens,
                **self.options()}

