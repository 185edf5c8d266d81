"""Long documents: overlapping token windows, per-window scores, aggregation, and the truncation report.

A document longer than the model's window is either truncated (``long_documents="truncate"``, reported
in :class:`~surerank.types.Truncation`) or split into overlapping windows (``"passages"``) whose scores
are aggregated: ``max`` (the best passage decides, MaxP), ``first`` (FirstP), ``mean``, or
``topk-mean`` (mean of the ``top_k`` best).  Nothing is ever dropped without being reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from surerank.engine.text.tokenize import windows
from surerank.errors import InputError
from surerank.types import Truncation

AGGREGATES = ("max", "first", "mean", "topk-mean")
LONG_MODES = ("truncate", "passages")


@dataclass(frozen=True)
class PassagePolicy:
    """How the rankers treat documents longer than their token window."""

    mode: str = "truncate"
    aggregate: str = "max"
    top_k: int = 3
    overlap: int | None = None  # tokens shared by neighbouring windows; default a quarter window
    max_passages: int | None = None  # cap per document; windows past it are reported as dropped

    def __post_init__(self) -> None:
        if self.mode not in LONG_MODES:
            raise InputError(f"long_documents: {self.mode!r} is unknown; choose from {', '.join(LONG_MODES)}")
        if self.aggregate not in AGGREGATES:
            raise InputError(f"aggregate: {self.aggregate!r} is unknown; choose from {', '.join(AGGREGATES)}")
        if self.top_k < 1:
            raise InputError("top_k: must be >= 1")
        if self.overlap is not None and self.overlap < 0:
            raise InputError("passage_overlap: must be >= 0")
        if self.max_passages is not None and self.max_passages < 1:
            raise InputError("max_passages: must be >= 1")

    @property
    def strategy(self) -> str:
        return "truncate" if self.mode == "truncate" else f"passages-{self.aggregate}"

    def spans(self, n_tokens: int, window: int, extra_tokens: int = 0) -> tuple[list[tuple[int, int]], Truncation]:
        """Token spans of one document to score and the report of what they cover.

        ``extra_tokens`` are the query and special tokens that go with every window; they count in
        ``tokens_total`` / ``tokens_used`` so the report matches what the model saw.
        """
        if window < 1:
            raise InputError("max_length: leaves no room for document tokens after the query and special tokens")
        if self.mode == "truncate" or n_tokens <= window:
            used = min(n_tokens, window)
            spans = [(0, used)]
        else:
            overlap = window // 4 if self.overlap is None else min(self.overlap, window - 1)
            spans = windows(n_tokens, window, window - overlap)
            if self.max_passages is not None and len(spans) > self.max_passages:
                spans = spans[: self.max_passages]
            used = covered(spans)
        report = Truncation(
            truncated=used < n_tokens, tokens_total=n_tokens + extra_tokens, tokens_used=used + extra_tokens,
            passages_scored=len(spans), strategy=self.strategy,
        )
        return spans, report

    def combine(self, scores: np.ndarray) -> float:
        return aggregate_scores(scores, self.aggregate, self.top_k)


def covered(spans: list[tuple[int, int]]) -> int:
    """Number of distinct tokens inside the union of ``[start, end)`` spans."""
    total = 0
    reach = 0
    for start, end in sorted(spans):
        start = max(start, reach)
        if end > start:
            total += end - start
            reach = end
    return total


def aggregate_scores(scores: np.ndarray, how: str, top_k: int = 3) -> float:
    """One document score from its passages' scores (in document order)."""
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no passage scores to aggregate")
    if how == "max":
        return float(values.max())
    if how == "first":
        return float(values[0])
    if how == "mean":
        return float(values.mean())
    if how == "topk-mean":
        k = min(top_k, values.size)
        return float(np.sort(values)[-k:].mean())
    raise InputError(f"aggregate: {how!r} is unknown; choose from {', '.join(AGGREGATES)}")
