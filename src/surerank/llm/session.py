"""Per-query accounting: every model call goes through a :class:`Session`, which enforces the budget and
builds the cost trace (calls, prompt/completion tokens, sequential rounds, latency) that each
:class:`~surerank.types.RankedList` carries.

A *round* is one batch of independent calls sent together; the number of rounds is the sequential depth
of a method (what bounds its latency when the server has capacity), the number of calls its total work.
"""

from __future__ import annotations

import time
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
    best order it has, flagged ``info['budget_exhausted']``."""

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
    def __init__(self, backend: LLMBackend, budget: Budget | None = None) -> None:
        self.backend = backend
        self.budget = budget or Budget()
        self.cost = Cost()
        self.errors: list[str] = []
        self.repairs = 0
        self.fallbacks = 0
        self.cache_hits = 0
        self.budget_exhausted = False
        self.notes: dict[str, Any] = {}

    def _tokens_used(self) -> int:
        return self.cost.prompt_tokens + self.cost.completion_tokens

    def allowance(self, requests: Sequence[LLMRequest]) -> int:
        """How many of these requests (in order) fit the remaining budget, by estimated tokens."""
        fit = len(requests)
        if self.budget.max_calls is not None:
            fit = min(fit, max(0, self.budget.max_calls - self.cost.calls))
        if self.budget.max_tokens is not None:
            left = self.budget.max_tokens - self._tokens_used()
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
        fit = self.allowance(requests)
        if fit < len(requests):
            self.budget_exhausted = True
            if not partial or fit == 0:
                raise BudgetExhaustedError
            requests = requests[:fit]
        start = time.perf_counter()
        responses = self.backend.generate(requests)
        self._account(responses, time.perf_counter() - start)
        return responses

    def score_continuations(self, pairs: Sequence[tuple[str, str]], partial: bool = True) -> list[LLMResponse]:
        """One round of log P(continuation | prefix) calls (query likelihood)."""
        requests = [LLMRequest(prompt=p + c, max_tokens=1) for p, c in pairs]
        fit = self.allowance(requests)
        if fit < len(pairs):
            self.budget_exhausted = True
            if not partial or fit == 0:
                raise BudgetExhaustedError
            pairs = pairs[:fit]
        start = time.perf_counter()
        responses = self.backend.continuation_logprobs(pairs)
        self._account(responses, time.perf_counter() - start)
        return responses

    def _account(self, responses: Sequence[LLMResponse], elapsed: float) -> None:
        self.cost.calls += len(responses)
        self.cost.rounds += 1
        self.cost.latency_s += elapsed
        for response in responses:
            self.cost.prompt_tokens += response.prompt_tokens
            self.cost.completion_tokens += response.completion_tokens
            if response.cached:
                self.cache_hits += 1
            if response.error:
                self.errors.append(response.error)

    def finish(self) -> Cost:
        self.cost.details.update({
            "errors": len(self.errors), "repairs": self.repairs, "fallbacks": self.fallbacks,
            "cache_hits": self.cache_hits, "budget_exhausted": self.budget_exhausted,
        })
        if self.errors:
            self.cost.details["first_error"] = self.errors[0]
        return self.cost


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
