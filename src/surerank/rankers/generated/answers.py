"""Answer normalisation: when two generated answers are "the same answer".

The ``vote`` ranker votes with these keys and the ``normalised`` / ``f1`` utilities of :mod:`.similarity`
compare with them, so the three agree: one spelling per number (:func:`canonical_number`), text folded by
case, whitespace, punctuation and articles (:func:`normalise_answer`), and answers pulled out of longer
generations by a regular expression (:func:`regex_extractor`).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Callable
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, InvalidOperation

from surerank.errors import InputError

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_CURRENCY = "$€£¥"
_PUNCTUATION = set(string.punctuation) | {"“", "”", "‘", "’", "–", "—", "…"}
_MAX_PLAIN_EXPONENT = 60  # beyond this a number is written in scientific form (1e999999 must stay short)


def canonical_number(text: str) -> str | None:
    """One spelling per number: ``"1,000"``, ``"1000.0"``, ``"1e3"``, ``"$1,000"`` and ``" 1000 "`` give ``"1000"``.

    Returns None when the text is not a single number.  Thousands separators are accepted only in their
    grouped form (``1,000,000``), so ``"1,5"`` is not read as a number.  A trailing ``%`` or a leading currency
    sign is dropped (``"50%"`` and ``"50"`` vote together).
    """
    s = unicodedata.normalize("NFKC", text).strip().rstrip(".")
    if s.endswith("%"):
        s = s[:-1].rstrip()
    sign = ""
    if s and s[0] in "+-":
        sign, s = s[0], s[1:].lstrip()
    if s[:1] and s[0] in _CURRENCY:
        s = s[1:].lstrip()
    s = sign + s
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    if not _NUMBER.match(s):
        return None
    # enough precision for every digit given, and no exponent limit: two different numbers never collide
    context = Context(prec=max(28, len(s)), Emax=MAX_EMAX, Emin=MIN_EMIN)
    try:
        value = Decimal(s).normalize(context)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid literals
        return None
    if value.is_zero():
        return "0"
    if abs(value.adjusted()) > _MAX_PLAIN_EXPONENT:
        return f"{value:e}"
    return format(value, "f")


def normalise_answer(text: str, *, case: bool = True, whitespace: bool = True, punctuation: bool = True,
                     articles: bool = False, numbers: bool = True) -> str:
    """The key answers are compared by: a number's canonical form, else the text folded as asked.

    ``case``: casefold; ``whitespace``: collapse runs and strip; ``punctuation``: drop punctuation characters;
    ``articles``: drop English a/an/the (SQuAD's answer normalisation); ``numbers``: a text that is one number in
    any spelling becomes :func:`canonical_number`'s form.
    """
    if numbers:
        number = canonical_number(text)
        if number is not None:
            return number
    s = unicodedata.normalize("NFKC", text)
    if case:
        s = s.casefold()
    if punctuation:
        s = "".join(ch if ch not in _PUNCTUATION else " " for ch in s)
    if articles:
        s = _ARTICLES.sub(" ", s)
    if whitespace:
        s = " ".join(s.split())
    if numbers and s != text:  # "The answer: 1,000." -> after folding a lone number may remain
        number = canonical_number(s)
        if number is not None:
            return number
    return s


def regex_extractor(pattern: str, occurrence: str = "last") -> Callable[[str], str | None]:
    """An answer extractor from a regular expression: group 1 if the pattern has a group, else the whole match.

    ``occurrence``: ``"last"`` (chain-of-thought answers come at the end) or ``"first"``.  None when no match.
    """
    if occurrence not in ("last", "first"):
        raise InputError(f"extract occurrence: must be 'last' or 'first', got {occurrence!r}")
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise InputError(f"extract: invalid regular expression {pattern!r}: {error}") from None

    def extract(text: str) -> str | None:
        matches = list(compiled.finditer(text))
        if not matches:
            return None
        match = matches[-1] if occurrence == "last" else matches[0]
        return match.group(1) if compiled.groups else match.group(0)

    return extract
