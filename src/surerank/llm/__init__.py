"""LLM backends for the LLM rankers: OpenAI-compatible HTTP, llama.cpp in-process, a stand-in judge.

Nothing heavy is imported here: httpx and llama_cpp load when a backend is created.
"""

from __future__ import annotations

from typing import Any

from surerank.errors import InputError
from surerank.llm.backend import LLMBackend
from surerank.llm.cache import JudgmentCache
from surerank.llm.parse import parse_permutation, strip_thinking
from surerank.llm.session import Budget, DryRunBackend, Session
from surerank.llm.types import LLMRequest, LLMResponse

BACKENDS = ("openai", "llama-cpp", "transformers", "judge")


def make_backend(backend: str | LLMBackend = "openai", **options: Any) -> LLMBackend:
    """Build a backend by name (``openai``, ``llama-cpp``, ``judge``) or pass an instance through.

    ``openai`` takes ``model``, ``base_url``, ``api_key``, ``timeout``, ``max_retries``, ``concurrency``,
    ``thinking``, ``cache``; ``llama-cpp`` takes ``model_path`` (a GGUF file), ``n_ctx``, ``n_threads``, ``cache``.
    """
    if isinstance(backend, LLMBackend):
        if options:
            raise InputError(f"backend options {sorted(options)} given with a backend instance; set them on it")
        return backend
    if backend == "openai":
        from surerank.llm.openai import OpenAICompatibleBackend

        if "model" not in options:
            raise InputError("model: the openai backend needs the served model name")
        return OpenAICompatibleBackend(**options)
    if backend == "llama-cpp":
        from surerank.llm.llama_cpp import LlamaCppBackend

        return LlamaCppBackend(**options)
    if backend == "transformers":
        from surerank.llm.hf import TransformersBackend

        return TransformersBackend(**options)
    if backend == "judge":
        from surerank.llm.judge import JudgeBackend

        return JudgeBackend(**options)
    raise InputError(f"backend: unknown LLM backend {backend!r}; choose one of {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS", "Budget", "DryRunBackend", "JudgmentCache", "LLMBackend", "LLMRequest", "LLMResponse", "Session",
    "make_backend", "parse_permutation", "strip_thinking",
]
