"""Token estimates for limits, batching budgets and ``max_tokens_per_doc``.

The service only uses the public ranker API, so it cannot see each model's tokenizer.  It counts
word pieces the way BERT-style pre-tokenizers split text (runs of word characters, and every other
non-space character alone), which tracks WordPiece counts of English closely and is cheap enough to
run on the event loop.  Every figure it produces is reported as an estimate.
"""

from __future__ import annotations

import re

_PIECE = re.compile(r"\w+|[^\w\s]")


def budget_tokens(text: str) -> int:
    """A constant-time estimate (characters / 4) for batching budgets and usage figures.

    Counting word pieces of every document on the event loop cost as much as the whole HTTP layer, so the
    exact count (:func:`count_tokens`) is kept for limits and cuts, and only run where a text is long
    enough to cross one (a text never has more word pieces than characters).
    """
    return len(text) // 4 + 1


def count_tokens(text: str) -> int:
    """Estimated tokens of ``text`` (at least 1, so empty texts still cost something)."""
    return max(1, len(_PIECE.findall(text)))


def truncate_tokens(text: str, max_tokens: int, left: bool = False) -> tuple[str, int]:
    """Cut ``text`` after ``max_tokens`` estimated tokens (``left``: keep the last ones instead).

    Returns the kept text and the token count of the original.
    """
    if left:
        matches = list(_PIECE.finditer(text))
        if len(matches) <= max_tokens:
            return text, max(1, len(matches))
        return text[matches[len(matches) - max_tokens].start():], len(matches)
    end = None
    total = 0
    for total, match in enumerate(_PIECE.finditer(text), start=1):
        if total == max_tokens:
            end = match.end()
    if total <= max_tokens or end is None:
        return text, max(1, total)
    return text[:end], total
