"""Prompt templates for every LLM ranking method, in one place.

Each passage sits on one line (whitespace collapsed) behind a stable marker (``Passage:``, ``Passage A:``,
``[C]``), so answers map back unambiguously and the deterministic stand-in judge (:mod:`surerank.testing.judge`)
can read the prompts it is sent.  Passages are cut to ``max_words`` words; the cut is reported, never silent.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from surerank.types import Truncation

SYSTEM = "You are a search relevance judge. Follow the answer format exactly."
_SPACE = re.compile(r"\s+")


def clip(text: str, max_words: int | None) -> tuple[str, Truncation | None]:
    """One line of at most ``max_words`` words, and the truncation record when words were dropped."""
    words = _SPACE.sub(" ", text).strip().split(" ") if text.strip() else []
    if max_words is None or len(words) <= max_words:
        return " ".join(words), None
    return " ".join(words[:max_words]), Truncation(truncated=True, tokens_total=len(words),
                                                   tokens_used=max_words, strategy="head-words")


def window_labels(n: int) -> list[str]:
    """Letters for windows up to 26 (single tokens in every tokenizer: what FIRST needs), else numbers."""
    if n <= 26:
        return list(string.ascii_uppercase[:n])
    return [str(i + 1) for i in range(n)]


def pointwise_yes_no(query: str, passage: str) -> str:
    return (f"Query: {one_line(query)}\nPassage: {passage}\n"
            "Does the passage answer the query? Answer Yes or No.")


def pointwise_grade(query: str, passage: str, max_grade: int) -> str:
    return (f"Query: {one_line(query)}\nPassage: {passage}\n"
            f"How relevant is the passage to the query, on a scale from 0 to {max_grade} "
            f"(0 = not relevant, {max_grade} = perfectly relevant)? Answer with a single number.")


def query_likelihood(passage: str) -> tuple[str, str]:
    """UPR: the prefix, and the template the query is appended with (``prefix + ' ' + query``)."""
    return (f"Passage: {passage}\nPlease write a question based on this passage.\nQuestion:", " {query}")


def pairwise(query: str, passage_a: str, passage_b: str) -> str:
    return (f"Query: {one_line(query)}\nPassage A: {passage_a}\nPassage B: {passage_b}\n"
            "Which passage is more relevant to the query? Answer A or B.")


def setwise(query: str, passages: Sequence[str], labels: Sequence[str]) -> str:
    body = "\n".join(f"[{label}] {text}" for label, text in zip(labels, passages))
    return (f"Query: {one_line(query)}\n{body}\n"
            "Which passage is the most relevant to the query? Answer with its identifier only, e.g. "
            f"{labels[0]}.")


def listwise(query: str, passages: Sequence[str], labels: Sequence[str], bare: bool = False) -> str:
    """``bare``: ask for ``C > A > B`` rather than ``[C] > [A] > [B]``, so that the first generated token is
    an identifier (what FIRST reads), not a bracket."""
    body = "\n".join(f"[{label}] {text}" for label, text in zip(labels, passages))
    example = " > ".join(label if bare else f"[{label}]" for label in list(labels)[:3])
    return (f"Rank the {len(passages)} passages below by relevance to the query.\n"
            f"Query: {one_line(query)}\n{body}\n"
            f"Query: {one_line(query)}\n"
            f"Answer with all identifiers, most relevant first, in the format {example}. "
            "Only the ranking, no explanation.")


def one_line(text: str) -> str:
    return _SPACE.sub(" ", text).strip()
