"""Coder-Reviewer reranking of generated programs (Zhang et al. 2022) through the LLM backends.

score = log p(code | instruction) ("coder") + log p(instruction | code) ("reviewer"), each optionally divided
by its token count.  Both terms are continuation log-probabilities, the machinery query likelihood (UPR) uses:
any backend that scores continuations serves (an OpenAI-compatible ``/v1/completions`` server with ``echo``,
llama.cpp, transformers).  The reviewer term penalises programs that are likely in general but do not explain the
instruction — degenerate, short, or off-task code the coder term alone favours.

A call that fails or scores nothing is never a score: that candidate goes below every scored one, counted in
``info`` and named in the one warning per list, like every LLM ranker.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from surerank.errors import InputError
from surerank.llm import Session
from surerank.llm.session import BudgetExhaustedError
from surerank.rankers.llm.base import LLMRanker
from surerank.types import Query, Truncation

MODES = ("coder-reviewer", "coder", "reviewer")
CODER_PREFIX = "{instruction}"
REVIEWER_PREFIX = "{code}\n\n# Write the instruction (the docstring) for the code above.\n"


class CoderReviewerRanker(LLMRanker):
    """Options: ``mode`` (``coder-reviewer``, ``coder`` or ``reviewer``), ``normalize`` (divide each term by its
    scored tokens; the paper's normalised variant), ``coder_prefix`` / ``reviewer_prefix`` (templates with
    ``{instruction}`` / ``{code}``), plus the LLM options of every LLM ranker.  Code is scored verbatim (its
    indentation and line breaks intact) and never clipped: a clipped program is another program, so there is no
    ``max_words``; a program longer than the model's context fails its call and is counted like any failure."""

    name: ClassVar[str] = "coder-reviewer"
    fallback_effect: ClassVar[str] = "ranked {n} candidates that got no score last, in input order"

    def __init__(self, backend: Any = "openai", *, mode: str = "coder-reviewer", normalize: bool = True,
                 coder_prefix: str = CODER_PREFIX, reviewer_prefix: str = REVIEWER_PREFIX, **options: Any) -> None:
        if mode not in MODES:
            raise InputError(f"mode: must be one of {', '.join(MODES)}, got {mode!r}")
        if "{instruction}" not in coder_prefix:
            raise InputError("coder_prefix: must contain {instruction}")
        if "{code}" not in reviewer_prefix:
            raise InputError("reviewer_prefix: must contain {code}")
        if "max_words" in options:
            raise InputError("max_words: coder-reviewer scores programs verbatim and never clips them")
        super().__init__(backend, max_words=None, **options)
        self.mode, self.normalize = mode, normalize
        self.coder_prefix, self.reviewer_prefix = coder_prefix, reviewer_prefix

    def options(self) -> dict[str, Any]:
        return {"mode": self.mode, "normalize": self.normalize, "coder_prefix": self.coder_prefix,
                "reviewer_prefix": self.reviewer_prefix}

    def _passages(self, query: Query) -> tuple[list[str], list[Truncation | None]]:
        return [c.text for c in query.candidates], [None] * len(query.candidates)

    def pairs(self, instruction: str, programs: list[str]) -> list[tuple[str, str]]:
        """The (prefix, continuation) pairs scored: coder terms first, then reviewer terms."""
        out = []
        if self.mode in ("coder-reviewer", "coder"):
            out += [(self.coder_prefix.replace("{instruction}", instruction), code) for code in programs]
        if self.mode in ("coder-reviewer", "reviewer"):
            out += [(self.reviewer_prefix.replace("{code}", code), instruction) for code in programs]
        return out

    def _rank_one(self, query: Query, passages: list[str], session: Session):
        n = len(passages)
        pairs = self.pairs(query.text, passages)
        try:
            responses = session.score_continuations(pairs, partial=False)
        except BudgetExhaustedError:
            responses = []
        terms = np.full((len(pairs) // n, n), np.nan)
        for k, response in enumerate(responses):
            if response.ok and "logprob" in response.info and np.isfinite(response.info["logprob"]):
                value = float(response.info["logprob"])
                if self.normalize:
                    value /= max(1, int(response.info.get("tokens") or 1))
                terms[k // n, k % n] = value
            else:
                session.fallback_for(response)
        scored = ~np.isnan(terms).any(axis=0)
        scores = np.where(scored, np.nansum(terms, axis=0), -1e9 - np.arange(n) * 1e-6)
        order = [int(i) for i in np.argsort(-scores, kind="stable")]
        info = {"unscored": int((~scored).sum())}
        if self.mode == "coder-reviewer":
            info["terms"] = {name: [None if np.isnan(v) else float(v) for v in row]
                             for name, row in zip(("coder", "reviewer"), terms)}
        return order, scores, info
