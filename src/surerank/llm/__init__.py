"""LLM backends for the LLM rankers: OpenAI-compatible HTTP, llama.cpp in-process, a stand-in judge.

Nothing heavy is imported here: httpx and llama_cpp load when a backend is created.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from surerank.errors import InputError
from surerank.llm.backend import LLMBackend
from surerank.llm.cache import JudgmentCache
from surerank.llm.parse import parse_permutation, strip_thinking
from surerank.llm.session import Budget, DryRunBackend, Session
from surerank.llm.types import LLMRequest, LLMResponse

_BACKEND_CLASSES = {
    "openai": "surerank.llm.openai:OpenAICompatibleBackend",
    "llama-cpp": "surerank.llm.llama_cpp:LlamaCppBackend",
    "transformers": "surerank.llm.hf:TransformersBackend",
    "judge": "surerank.testing.judge:JudgeBackend",
}
BACKENDS = tuple(_BACKEND_CLASSES)


def make_backend(backend: str | LLMBackend = "openai", **options: Any) -> LLMBackend:
    """Build a backend by name (``openai``, ``llama-cpp``, ``judge``) or pass an instance through.

    ``openai`` takes ``model``, ``base_url``, ``api_key``, ``timeout``, ``max_retries``, ``concurrency``,
    ``thinking``, ``cache``; ``llama-cpp`` takes ``model_path`` (a GGUF file), ``n_ctx``, ``n_threads``, ``cache``.
    """
    if isinstance(backend, LLMBackend):
        if options:
            raise InputError(f"backend options {sorted(options)} given with a backend instance; set them on it")
        return backend
    if backend not in _BACKEND_CLASSES:
        raise InputError(f"backend: unknown LLM backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "openai" and "model" not in options:
        raise InputError("model: the openai backend needs the served model name")
    module, _, attr = _BACKEND_CLASSES[backend].partition(":")
    backend_class = getattr(importlib.import_module(module), attr)  # heavy imports happen only here
    _check_options(backend, backend_class, options)
    return backend_class(**options)


def _check_options(name: str, cls: type, options: dict[str, Any]) -> None:
    """An option the backend does not take is an InputError naming it and the ones it does (not a TypeError)."""
    parameters = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    known = [p for p in parameters if p != "self"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InputError(f"{', '.join(unknown)}: not an option of the {name} backend; it takes {', '.join(known)}")


__all__ = [
    "BACKENDS", "Budget", "DryRunBackend", "JudgmentCache", "LLMBackend", "LLMRequest", "LLMResponse", "Session",
    "make_backend", "parse_permutation", "strip_thinking",
]
