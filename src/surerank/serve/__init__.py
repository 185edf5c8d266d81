"""surerank.serve: the rerank HTTP service, its client and RAG-framework adapters.

Nothing heavy is imported here: ``create_app`` / ``run`` load FastAPI and uvicorn when called, the clients
load httpx, the adapters their frameworks (``surerank.serve.integrations.langchain`` / ``.llamaindex``).
"""

from __future__ import annotations

import importlib
from typing import Any

from surerank.serve.config import Batching, Limits, ModelConfig, ServeConfig

_LAZY = {
    "create_app": "surerank.serve.app",
    "run": "surerank.serve.server",
    "SureRankClient": "surerank.serve.client",
    "AsyncSureRankClient": "surerank.serve.client",
    "ServeError": "surerank.serve.client",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'surerank.serve' has no attribute {name!r}")


__all__ = ["AsyncSureRankClient", "Batching", "Limits", "ModelConfig", "ServeConfig", "ServeError",
           "SureRankClient", "create_app", "run"]
