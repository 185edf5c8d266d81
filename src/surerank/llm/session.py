"""Per-query accounting: every model call goes through a :class:`Session`, which enforces the budget and
builds the cost trace (calls sent, retries, cache hits, prompt/completion tokens, sequential rounds, latency)
that each :class:`~surerank.types.RankedList` carries, and counts what went wrong by cause (failed calls,
retried attempts, fallbacks, answers without log-probabilities) for ``info`` and the one warning per list.

A *round* is one batch of independent calls sent together; the number of rounds is the sequential depth
of a method (what bounds its latency when the server has capacity), the number of calls its total work.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from surerank.errors import InputError
from surerank.llm.backend import LLMBackend
from surerank.llm.types import LLMRequest, LLMResponse
from surerank.types import Cost


@dataclass(frozen=True)
class Budget:
    """Limits per query; ``None`` means unlimited.  A method that reaches a limit stops and returns the
    best order it has, flagged ``info['budget_exhausted']``.

    Calls and tokens answered from the judgment cache count against the budget like sent ones, so a rerun
    makes the same decisions (and returns the same order) as the run that filled the cache."""

    max_calls: int | None = None
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_calls", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"budget {name}: must be >= 1 or None, got {value}")


class BudgetExhaustedError(Exception):
    """Internal signal: the next round does not fit the budget."""


class Session:
    """One query's calls: budget, cost trace, and counts by cause.

    ``failures``: failed calls by cause (``http_500``, ``deadline``, ...); ``retry_causes``: retried attempts
    by cause; ``fallback_causes``: answers that could not be used and were replaced by the method's neutral
    default (input order kept, tie, neutral score), by cause (``failed_call``, ``unparsable``, ...);
    ``no_logprobs``: answers that came without usable first-token log-probabilities and were read from their
    text instead (``missing``, ``no_label``, ``non_finite``).
    """

    def __init__(self, backend: LLMBackend, budget: Budget | None = None) -> None:
        self.backend = backend
        self.budget = budget or Budget()
        self.cost = Cost()
        self.errors: list[str] = []
        self.failures: Counter[str] = Counter()
        self.retry_causes: Counter[str] = Counter()
        self.fallback_causes: Counter[str] = Counter()
        self.no_logprobs: Counter[str] = Counter()
        self.repairs = 0
        self.budget_exhausted = False
        self.notes: dict[str, Any] = {}
        self.requests = 0  # calls made, sent or answered from the cache: what the budget counts
        self._budget_tokens = 0

    @property
    def fallbacks(self) -> int:
        return sum(self.fallback_causes.values())

    @property
    def cache_hits(self) -> int:
        return self.cost.cache_hits

    def fallback(self, cause: str, count: int = 1) -> None:
        """Record that an answer could not be used and the method's neutral default replaced it."""
        if count > 0:
            self.fallback_causes[cause] += count

    def fallback_for(self, response: LLMResponse) -> None:
        """A fallback for this response: ``failed_call`` when the call failed, else its text was unusable."""
        self.fallback("failed_call" if not response.ok else "unparsable")

    def calls_left(self) -> int | None:
        """Calls the budget still allows (None: unlimited)."""
        if self.budget.max_calls is None:
            return None
        return max(0, self.budget.max_calls - self.requests)

    def allowance(self, requests: Sequence[LLMRequest]) -> int:
        """How many of these requests (in order) fit the remaining budget, by estimated tokens."""
        fit = len(requests)
        left_calls = self.calls_left()
        if left_calls is not None:
            fit = min(fit, left_calls)
        if self.budget.max_tokens is not None:
            left = self.budget.max_tokens - self._budget_tokens
            count = 0
            for request in requests[:fit]:
                left -= request.estimated_prompt_tokens() + request.max_tokens
                if left < 0:
                    break
                count += 1
            fit = count
        return fit

    def run(self, requests: Sequence[LLMRequest], partial: bool = False) -> list[LLMResponse]:
        """Send one round.  If it does not fit the budget: with ``partial`` send the prefix that fits,
        else raise :class:`BudgetExhaustedError` (the method then stops and keeps its current order)."""
        if not requests:
            return []
        requests = requests[:self._fitting(requests, partial)]
        start = time.perf_counter()
        responses = self.backend.generate(requests)
        self._account(responses, time.perf_counter() - start)
        return responses

    def score_continuations(self, pairs: Sequence[tuple[str, str]], partial: bool = True) -> list[LLMResponse]:
        """One round of log P(continuation | prefix) calls (query likelihood)."""
        pairs = pairs[:self._fitting([LLMRequest(prompt=p + c, max_tokens=1) for p, c in pairs], partial)]
        start = time.perf_counter()
        responses = self.backend.continuation_logprobs(pairs)
        self._account(responses, time.perf_counter() - start)
        return responses

    def _fitting(self, requests: Sequence[LLMRequest], partial: bool) -> int:
        """How many of the requests to send: all that fit the budget; fewer than all only with ``partial``."""
        fit = self.allowance(requests)
        if fit < len(requests):
            self.budget_exhausted = True
            if not partial or fit == 0:
                raise BudgetExhaustedError
        return fit

    def _account(self, responses: Sequence[LLMResponse], elapsed: float) -> None:
        sent = [r for r in responses if not r.cached]
        self.requests += len(responses)
        self.cost.calls += len(sent)
        self.cost.cache_hits += len(responses) - len(sent)
        if sent:
            self.cost.rounds += 1
            self.cost.latency_s += elapsed
        for response in responses:
            tokens = response.prompt_tokens + response.completion_tokens
            self._budget_tokens += tokens
            if response.cached:
                continue
            self.cost.prompt_tokens += response.prompt_tokens
            self.cost.completion_tokens += response.completion_tokens
            self.cost.retries += max(0, response.attempts - 1)
            self.retry_causes.update(response.retry_causes)
            if response.error:
                self.errors.append(response.error)
                self.failures[response.cause or "error"] += 1

    def finish(self) -> Cost:
        self.cost.details.update(self.summary())
        if self.errors:
            self.cost.details["first_error"] = self.errors[0]
        return self.cost

    def summary(self) -> dict[str, Any]:
        """The counts by cause, for ``info`` and ``cost.details``."""
        return {
            "errors": len(self.errors), "failures": dict(self.failures),
            "retries": self.cost.retries, "retry_causes": dict(self.retry_causes),
            "repairs": self.repairs, "fallbacks": self.fallbacks, "fallback_causes": dict(self.fallback_causes),
            "no_logprobs": sum(self.no_logprobs.values()), "no_logprobs_causes": dict(self.no_logprobs),
            "cache_hits": self.cost.cache_hits, "budget_exhausted": self.budget_exhausted,
        }


class DryRunBackend(LLMBackend):
    """Answers nothing and costs nothing: running a method against it counts the calls, rounds and
    (estimated, upper-bound) tokens a real run would use.  Methods fall back to the input order on its empty
    answers, which is also what keeps adaptive methods (setwise) on their most expensive path."""

    name = "dry-run"

    def __init__(self) -> None:
        super().__init__(model="dry-run", concurrency=1)

    def _generate_one(self, request: LLMRequest) -> LLMResponse:
        return LLMResponse(text="", prompt_tokens=request.estimated_prompt_tokens(),
                           completion_tokens=request.max_tokens, info={"dry_run": True})

    def _continuation_logprob(self, prefix: str, continuation: str) -> LLMResponse:
        return LLMResponse(prompt_tokens=LLMRequest(prompt=prefix + continuation).estimated_prompt_tokens(),
                           info={"logprob": 0.0, "tokens": 0, "dry_run": True})
