"""Requests to and answers from an LLM backend, independent of the wire protocol."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class LLMRequest:
    """One model call: a chat (``messages``) or a raw completion (``prompt``)."""

    messages: tuple[tuple[str, str], ...] = ()
    prompt: str | None = None
    max_tokens: int = 128
    temperature: float = 0.0
    top_logprobs: int = 0
    stop: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    """Candidate first tokens (``Yes``/``No``, ``A``/``B``, ids) whose log-probabilities the caller wants."""
    template: str | None = None
    """A named reranker template (:mod:`surerank.llm.templates`): score the next token by its published
    formula (``response.info['score']``) instead of answering."""
    pieces: tuple[str, ...] = ()
    """The template's prompt in the pieces its reference tokenizes separately (``prompt`` is their join)."""

    @classmethod
    def chat(cls, user: str, system: str | None = None, **kwargs: Any) -> LLMRequest:
        messages = ((("system", system),) if system else ()) + (("user", user),)
        return cls(messages=messages, **kwargs)

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]

    def text(self) -> str:
        """All the prompt text, for token estimates and judges."""
        if self.prompt is not None:
            return self.prompt
        return "\n".join(content for _, content in self.messages)

    def estimated_prompt_tokens(self) -> int:
        """A tokenizer-free estimate (about 4 characters a token) for budgets and dry runs."""
        return max(1, len(self.text()) // 4 + 4 * len(self.messages))

    def cache_key(self, model: str, extra: dict[str, Any] | None = None) -> str:
        payload = {"model": model, **asdict(self), "extra": extra or {}}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class CallFailedError(RuntimeError):
    """A model call that failed for good (after any retries), with a short machine-readable ``cause``
    (``http_500``, ``deadline``, ``connection``, ``bad_json``, ``no_choices``, ``empty_answer``,
    ``no_scored_tokens``, ``non_finite``, ...) that the cost trace and the per-list warning count by."""

    def __init__(self, cause: str, message: str, attempts: int = 1, retry_causes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.cause = cause
        self.attempts = attempts
        self.retry_causes = tuple(retry_causes)


_NOT_CACHED = ("cached", "latency_s", "attempts", "cause", "retry_causes")


@dataclass
class LLMResponse:
    """What came back: text with reasoning stripped, token counts, first-token log-probabilities.

    ``error``/``cause``: why the call failed (None when it did not).  ``attempts``: requests sent for this
    call (1 + retries); ``retry_causes``: why each retried attempt failed.  ``cached``: answered from the
    judgment cache, nothing sent.
    """

    text: str = ""
    raw_text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_logprobs: dict[str, float] | None = None
    error: str | None = None
    cached: bool = False
    latency_s: float = 0.0
    attempts: int = 1
    info: dict[str, Any] = field(default_factory=dict)
    cause: str | None = None
    retry_causes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in _NOT_CACHED}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LLMResponse:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
