"""Property tests of the query-typo generators behind ``surerank robustness``."""

from __future__ import annotations

import random

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from surerank.errors import InputError
from surerank.robustness import (
    KEYBOARD_NEIGHBOURS,
    TYPO_KINDS,
    content_words,
    make_typo,
    typo_rng,
)


def levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def damerau(a: str, b: str) -> int:
    """Optimal string alignment distance: a transposition of neighbours costs 1."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


words = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ", min_size=1, max_size=12)
stop = st.sampled_from(["the", "what", "is", "of", "how", "a", "does"])
queries = st.lists(st.one_of(words, stop), min_size=1, max_size=8).map(" ".join)
punctuated = st.tuples(queries, st.sampled_from(["", "?", ".", " 2019", "'s"])).map("".join)
kinds = st.sampled_from(TYPO_KINDS)


@settings(max_examples=150, deadline=None)
@given(text=punctuated, kind=kinds, seed=st.integers(0, 10_000))
def test_typo_changes_exactly_one_content_word(text: str, kind: str, seed: int) -> None:
    typo = make_typo(text, kind, random.Random(seed))
    if typo is None:
        # only allowed when no content word admits this kind of edit
        if kind in ("insertion", "deletion", "substitution"):
            assert content_words(text) == []
        return
    before, after = text.split(" "), typo.text.split(" ")
    assert len(before) == len(after)
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert len(changed) == 1
    assert (typo.start, typo.start + len(typo.word)) in content_words(text)
    assert text[: typo.start] == typo.text[: typo.start]
    assert text[typo.start + len(typo.word):] == typo.text[typo.start + len(typo.typo_word):]


@settings(max_examples=150, deadline=None)
@given(text=punctuated, kind=kinds, seed=st.integers(0, 10_000))
def test_edit_distance_matches_the_kind(text: str, kind: str, seed: int) -> None:
    typo = make_typo(text, kind, random.Random(seed))
    assume(typo is not None)
    word, new = typo.word, typo.typo_word
    if kind == "insertion":
        assert len(new) == len(word) + 1 and levenshtein(word, new) == 1
    elif kind == "deletion":
        assert len(new) == len(word) - 1 and levenshtein(word, new) == 1
    elif kind in ("substitution", "keyboard"):
        assert len(new) == len(word) and levenshtein(word, new) == 1
        i = typo.position
        assert new[i] != word[i]
        if kind == "keyboard":
            assert new[i].lower() in KEYBOARD_NEIGHBOURS[word[i].lower()]
    elif kind == "swap":
        assert sorted(new) == sorted(word)
        assert damerau(word, new) == 1 and levenshtein(word, new) == 2
        i = typo.position
        assert (new[i], new[i + 1]) == (word[i + 1], word[i])


@settings(max_examples=100, deadline=None)
@given(text=punctuated, kind=kinds, seed=st.integers(0, 10_000), qid=st.text(min_size=1, max_size=6))
def test_deterministic_per_seed(text: str, kind: str, seed: int, qid: str) -> None:
    first = make_typo(text, kind, typo_rng(seed, kind, qid))
    again = make_typo(text, kind, typo_rng(seed, kind, qid))
    assert first == again


def test_seeds_give_different_typos() -> None:
    text = "difference between a mcdouble and a double cheeseburger"
    produced = {make_typo(text, "substitution", typo_rng(s, "substitution", "q")).text for s in range(10)}
    assert len(produced) >= 5


def test_stopwords_and_short_words_are_never_touched() -> None:
    assert content_words("what is the of a") == []
    assert make_typo("what is the of a", "deletion", random.Random(0)) is None
    for seed in range(50):
        typo = make_typo("what is a sigmet", "insertion", random.Random(seed))
        assert typo is not None and typo.word == "sigmet"


def test_case_and_punctuation_are_kept() -> None:
    for seed in range(30):
        typo = make_typo("Define VISCERAL?", "keyboard", random.Random(seed))
        assert typo is not None and typo.text.endswith("?")
        if typo.word == "VISCERAL":
            assert typo.typo_word.isupper()


def test_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="typo kind 'capslock'"):
        make_typo("a query", "capslock", random.Random(0))
