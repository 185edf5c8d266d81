"""Query typos for the robustness checks: one edit of one content word, a deterministic function of its seed.

Five kinds a user makes: an inserted, deleted or substituted letter, two neighbouring letters swapped, and
a QWERTY neighbour key hit instead of the right one.  Only that word changes; the rest of the query, its
spacing and punctuation are kept byte for byte.
"""

from __future__ import annotations

import functools
import random
import re
import string
from dataclasses import dataclass

from surerank.errors import InputError

TYPO_KINDS = ("insertion", "deletion", "substitution", "swap", "keyboard")

# QWERTY keys that touch each letter (same row and the rows above/below): a realistic slip of a finger.
_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_ROW_OFFSETS = (0.0, 0.25, 0.75)  # horizontal stagger of the rows, in key widths


def _keyboard_neighbours() -> dict[str, str]:
    positions = {
        key: (row, col + _ROW_OFFSETS[row])
        for row, keys in enumerate(_KEYBOARD_ROWS)
        for col, key in enumerate(keys)
    }
    neighbours = {}
    for key, (row, x) in positions.items():
        near = [
            other for other, (other_row, other_x) in positions.items()
            if other != key and abs(other_row - row) <= 1 and abs(other_x - x) <= 1.0
        ]
        neighbours[key] = "".join(sorted(near))
    return neighbours


KEYBOARD_NEIGHBOURS: dict[str, str] = _keyboard_neighbours()
_WORD = re.compile(r"[^\W\d_]+")
MIN_WORD_LENGTH = 3


@functools.lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    # bm25s (a core dependency) ships an English list that also covers question words (how, what, does).
    from bm25s.stopwords import STOPWORDS_EN_PLUS

    return frozenset(w.lower() for w in STOPWORDS_EN_PLUS)


@dataclass(frozen=True)
class Typo:
    """One typo applied to one word of a query."""

    kind: str
    text: str
    original: str
    word: str
    typo_word: str
    start: int
    position: int  # character position inside the word that was edited


def content_words(text: str) -> list[tuple[int, int]]:
    """Spans of the words a typo may touch: letters only, at least 3 long, not a stopword."""
    stop = _stopwords()
    return [
        (m.start(), m.end()) for m in _WORD.finditer(text)
        if len(m.group()) >= MIN_WORD_LENGTH and m.group().lower() not in stop
    ]


def _match_case(char: str, like: str) -> str:
    return char.upper() if like.isupper() else char


def _edit_word(word: str, kind: str, rng: random.Random) -> tuple[str, int] | None:
    """Apply one edit of ``kind`` to ``word``; None when the word admits no such edit."""
    letters = string.ascii_lowercase
    if kind == "insertion":
        i = rng.randrange(len(word) + 1)
        like = word[min(i, len(word) - 1)]
        return word[:i] + _match_case(rng.choice(letters), like) + word[i:], i
    if kind == "deletion":
        i = rng.randrange(len(word))
        return word[:i] + word[i + 1:], i
    if kind == "substitution":
        i = rng.randrange(len(word))
        choices = [c for c in letters if c != word[i].lower()]
        return word[:i] + _match_case(rng.choice(choices), word[i]) + word[i + 1:], i
    if kind == "swap":
        spots = [i for i in range(len(word) - 1) if word[i] != word[i + 1]]
        if not spots:
            return None
        i = rng.choice(spots)
        return word[:i] + word[i + 1] + word[i] + word[i + 2:], i
    if kind == "keyboard":
        spots = [i for i, c in enumerate(word) if c.lower() in KEYBOARD_NEIGHBOURS]
        if not spots:
            return None
        i = rng.choice(spots)
        near = KEYBOARD_NEIGHBOURS[word[i].lower()]
        return word[:i] + _match_case(rng.choice(near), word[i]) + word[i + 1:], i
    raise InputError(f"typo kind {kind!r} is unknown; choose from {', '.join(TYPO_KINDS)}")


def make_typo(text: str, kind: str, rng: random.Random) -> Typo | None:
    """Put one typo of ``kind`` into one content word of ``text``; None when no word qualifies.

    Only that word changes; the rest of the query, its spacing and punctuation are kept byte for byte.
    """
    if kind not in TYPO_KINDS:
        raise InputError(f"typo kind {kind!r} is unknown; choose from {', '.join(TYPO_KINDS)}")
    spans = content_words(text)
    rng.shuffle(spans)
    for start, end in spans:
        word = text[start:end]
        edited = _edit_word(word, kind, rng)
        if edited is None:
            continue
        new_word, position = edited
        return Typo(kind=kind, text=text[:start] + new_word + text[end:], original=text, word=word,
                    typo_word=new_word, start=start, position=position)
    return None


def typo_rng(seed: int, kind: str, query_id: str) -> random.Random:
    """The generator for one (seed, kind, query): the same typo every run, independent of query order."""
    return random.Random(f"{seed}:{kind}:{query_id}")



__all__ = ["KEYBOARD_NEIGHBOURS", "MIN_WORD_LENGTH", "TYPO_KINDS", "Typo", "content_words", "make_typo", "typo_rng"]
