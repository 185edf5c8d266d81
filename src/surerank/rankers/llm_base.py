"""Moved to :mod:`surerank.rankers.llm.base` (``sigmoid`` to :mod:`surerank.scores`); this alias keeps the old
import path working and warns once."""

from __future__ import annotations

import warnings

from surerank.rankers.llm.base import LOGPROB_FLOOR, LLMBackendError, LLMRanker, answer_label_scores, label_scores
from surerank.scores import sigmoid

warnings.warn("surerank.rankers.llm_base moved to surerank.rankers.llm.base",
              DeprecationWarning, stacklevel=2)

__all__ = ["LOGPROB_FLOOR", "LLMBackendError", "LLMRanker", "answer_label_scores", "label_scores", "sigmoid"]
