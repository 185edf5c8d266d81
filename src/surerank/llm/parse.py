"""Robust parsing of LLM answers: never an exception, always a usable (and reported) result.

Small models and reasoning models answer in every shape: ``[2] > [1] > [3]``, ``2, 1, 3``, prose,
duplicates, ids that were never offered, half-finished ``<think>`` blocks.  Every parser here returns a
value plus a note of what it had to repair, so rankers can record repairs instead of failing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

_THINK_BLOCK = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.IGNORECASE | re.DOTALL)
_THINK_OPEN = re.compile(r"<(think|thinking|reasoning)>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</(think|thinking|reasoning)>", re.IGNORECASE)


def strip_thinking(text: str | None) -> str:
    """Drop reasoning content: closed ``<think>…</think>`` blocks, text before a stray closing tag
    (servers that strip the opening tag), and an unclosed block running to the end."""
    if not text:
        return ""
    text = _THINK_BLOCK.sub(" ", text)
    close = list(_THINK_CLOSE.finditer(text))
    if close:
        text = text[close[-1].end():]
    opened = _THINK_OPEN.search(text)
    if opened:
        text = text[: opened.start()]
    return text.strip()


@dataclass
class ParsedPermutation:
    """A repaired permutation of window positions (0-based) and what was repaired."""

    order: list[int]
    parsed: int = 0
    duplicates: int = 0
    unknown: int = 0
    missing: int = 0
    fallback: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def repaired(self) -> bool:
        return self.fallback or bool(self.duplicates or self.unknown or self.missing)


def _label_to_index(token: str, labels: Sequence[str]) -> int | None:
    token = token.strip().strip("[]()<>.:,;*'\"").upper()
    for i, label in enumerate(labels):
        if token == label.upper():
            return i
    return None


_BRACKETED = re.compile(r"\[\s*([A-Za-z]{1,2}|\d{1,4})\s*\]")
_BARE = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]{1,2}|\d{1,4})(?![A-Za-z0-9])")


def parse_permutation(text: str | None, labels: Sequence[str]) -> ParsedPermutation:
    """Parse a listwise answer into an order of window positions, repairing what is wrong.

    Identifiers are read bracketed (``[3]``) when any are present, else bare (``3`` or ``C``); duplicates keep
    their first mention, unknown ids are skipped, and missing ids are appended in input order.  An answer
    with no usable id at all falls back to the input order.
    """
    n = len(labels)
    body = strip_thinking(text)
    tokens = _BRACKETED.findall(body)
    if not tokens:
        # bare tokens: only digits for numeric labels; for letters, only upper-case single letters so prose
        # ("a passage") does not parse as ids
        numeric = all(label.isdigit() for label in labels)
        cands = _BARE.findall(body)
        tokens = [t for t in cands if (t.isdigit() if numeric else (t.isalpha() and t.isupper()))]
    result = ParsedPermutation(order=[])
    seen: set[int] = set()
    for token in tokens:
        index = _label_to_index(token, labels)
        if index is None:
            result.unknown += 1
            continue
        if index in seen:
            result.duplicates += 1
            continue
        seen.add(index)
        result.order.append(index)
    result.parsed = len(result.order)
    if not result.order:
        result.fallback = True
        result.notes.append("no identifier found; kept the input order")
    missing = [i for i in range(n) if i not in seen]
    result.missing = len(missing) if result.order else 0
    result.order.extend(missing)
    return result


_YES = re.compile(r"\b(yes|relevant|true)\b", re.IGNORECASE)
_NO = re.compile(r"\b(no|not relevant|irrelevant|false)\b", re.IGNORECASE)


def parse_yes_no(text: str | None) -> float | None:
    """1.0 for a yes, 0.0 for a no, None when the answer says neither (or both, first mention wins)."""
    body = strip_thinking(text)
    yes, no = _YES.search(body), _NO.search(body)
    if yes and no:
        return 1.0 if yes.start() < no.start() else 0.0
    if yes:
        return 1.0
    if no:
        return 0.0
    return None


def parse_choice(text: str | None, labels: Sequence[str]) -> int | None:
    """Index of the first offered label the answer names (``Passage B``, ``[B]``, ``B``), else None."""
    body = strip_thinking(text)
    for pattern in (_BRACKETED, re.compile(r"(?:passage|document|doc)\s*([A-Za-z]{1,2}|\d{1,4})\b", re.I),
                    _BARE):
        for token in pattern.findall(body):
            if pattern is _BARE and not (token.isdigit() or (token.isalpha() and token.isupper())):
                continue
            index = _label_to_index(token, labels)
            if index is not None:
                return index
    return None


_NUMBER = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)")


def parse_grade(text: str | None, max_grade: int) -> float | None:
    """The first number in ``0..max_grade`` the answer gives, else None."""
    body = strip_thinking(text)
    for token in _NUMBER.findall(body):
        value = float(token)
        if 0 <= value <= max_grade:
            return value
    return None
