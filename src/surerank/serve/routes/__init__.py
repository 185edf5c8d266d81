"""The routers, one module per wire format: Cohere v1 / v2 and Jina (:mod:`.cohere`), Text Embeddings
Inference (:mod:`.tei`), and the service's own health, metrics and model list (:mod:`.info`)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends

from surerank.serve.errors import ERROR_RESPONSES
from surerank.serve.guard import require_key

TRUNCATED_HEADER = "X-Surerank-Truncated-Documents"
# what every rerank route shares: None-valued fields left out of the answer (absent, as the wire formats
# have them, not null), the error statuses in the schema, the key check
RERANK_OPTIONS: dict[str, Any] = {"tags": ["rerank"], "response_model_exclude_none": True,
                                  "responses": ERROR_RESPONSES, "dependencies": [Depends(require_key)]}
