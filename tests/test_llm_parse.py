"""Malformed LLM output never raises: every parser returns a usable, repaired result."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surerank.llm.parse import parse_choice, parse_grade, parse_permutation, parse_yes_no, strip_thinking

LETTERS = list("ABCDE")
NUMBERS = ["1", "2", "3", "4", "5"]

# (answer, labels, expected order): 24 malformed or odd answers a listwise call can return
MALFORMED = [
    ("", LETTERS, [0, 1, 2, 3, 4]),                                     # empty
    (None, LETTERS, [0, 1, 2, 3, 4]),                                   # no content at all
    ("I cannot rank these passages.", LETTERS, [0, 1, 2, 3, 4]),        # refusal, "I" is not a label
    ("[C] > [A] > [C] > [B]", LETTERS, [2, 0, 1, 3, 4]),                # duplicate, missing D, E
    ("[C] > [Z] > [A]", LETTERS, [2, 0, 1, 3, 4]),                      # unknown id
    ("[E] > [D] > [C] > [B] > [A] > [F]", LETTERS, [4, 3, 2, 1, 0]),    # one id too many
    ("C, A, B", LETTERS, [2, 0, 1, 3, 4]),                              # bare letters, commas
    ("c > a > b", LETTERS, [0, 1, 2, 3, 4]),                            # lower case prose-like: ignored
    ("<think>[A] is best, then [B]</think>[B] > [A]", LETTERS, [1, 0, 2, 3, 4]),  # reasoning stripped
    ("<think>unfinished reasoning about [D] > [C]", LETTERS, [0, 1, 2, 3, 4]),    # unclosed reasoning
    ("reasoning leaked</think> [D] > [C]", LETTERS, [3, 2, 0, 1, 4]),   # stray closing tag
    ("[3] > [1] > [2]", NUMBERS, [2, 0, 1, 3, 4]),                      # numbers
    ("3 > 1 > 2 > 5 > 4", NUMBERS, [2, 0, 1, 4, 3]),  # bare numbers
    ("[10] > [1]", NUMBERS, [0, 1, 2, 3, 4]),                           # out of range number
    ("[1] > [1] > [1]", NUMBERS, [0, 1, 2, 3, 4]),                      # all duplicates of the first
    ("Ranking: [B]>[A]>[E]>[D]>[C]", LETTERS, [1, 0, 4, 3, 2]),         # no spaces
    ("[ B ] > [ A ]", LETTERS, [1, 0, 2, 3, 4]),                        # spaces inside brackets
    ("The answer is:\n1. [D]\n2. [A]", LETTERS, [3, 0, 1, 2, 4]),       # numbered list of bracketed ids
    ("\u0000\ufffd[B]\u200b > [A]", LETTERS, [1, 0, 2, 3, 4]),          # control / odd unicode
    ("[" * 50 + "A" + "]" * 50, LETTERS, [0, 1, 2, 3, 4]),              # bracket soup
    ("x" * 20000, LETTERS, [0, 1, 2, 3, 4]),                            # very long garbage
    ("{\"ranking\": [\"C\", \"B\"]}", LETTERS, [2, 1, 0, 3, 4]),        # JSON-ish
    ("[B] > [A] > [D] > [C] > [E] and also [A]", LETTERS, [1, 0, 3, 2, 4]),  # trailing duplicate
    ("A > B but honestly E", LETTERS, [0, 1, 4, 2, 3]),                 # prose with capitals
]


@pytest.mark.parametrize(("answer", "labels", "expected"), MALFORMED)
def test_malformed_listwise_answers_are_repaired_without_exception(answer, labels, expected):
    parsed = parse_permutation(answer, labels)
    assert parsed.order == expected
    assert sorted(parsed.order) == list(range(len(labels)))


def test_there_are_at_least_twenty_malformed_cases():
    assert len(MALFORMED) >= 20


def test_repairs_are_reported():
    parsed = parse_permutation("[C] > [Z] > [C]", LETTERS)
    assert (parsed.duplicates, parsed.unknown, parsed.missing, parsed.fallback) == (1, 1, 4, False)
    assert parse_permutation("nothing", LETTERS).fallback


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.none(), st.text(max_size=300)), n=st.integers(1, 30))
def test_permutation_parser_never_raises_and_always_returns_a_permutation(text, n):
    labels = [chr(ord("A") + i) for i in range(n)] if n <= 26 else [str(i + 1) for i in range(n)]
    parsed = parse_permutation(text, labels)
    assert sorted(parsed.order) == list(range(n))


@settings(max_examples=100, deadline=None)
@given(perm=st.integers(2, 20).flatmap(lambda n: st.permutations(list(range(n)))),
       noise=st.sampled_from(["", " ", "\n", "<think>[A] > [B]</think>"]))
def test_a_well_formed_answer_round_trips(perm, noise):
    labels = [chr(ord("A") + i) for i in range(len(perm))]
    answer = noise + " > ".join(f"[{labels[i]}]" for i in perm)
    parsed = parse_permutation(answer, labels)
    assert parsed.order == list(perm)
    assert not parsed.repaired


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(st.none(), st.text(max_size=200)))
def test_other_parsers_never_raise(text):
    assert parse_yes_no(text) in (None, 0.0, 1.0)
    assert parse_choice(text, ["A", "B"]) in (None, 0, 1)
    grade = parse_grade(text, 3)
    assert grade is None or 0 <= grade <= 3
    assert isinstance(strip_thinking(text), str)


@pytest.mark.parametrize(("text", "expected"), [
    ("Yes", 1.0), ("no.", 0.0), ("<think>no no no</think>Yes", 1.0), ("Maybe", None),
    ("Yes, though not entirely: no", 1.0), ("It is not relevant.", 0.0),
])
def test_yes_no(text, expected):
    assert parse_yes_no(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("B", 1), ("Passage A", 0), ("[B] is more relevant", 1), ("<think>A?</think> B", 1), ("neither", None),
])
def test_choice(text, expected):
    assert parse_choice(text, ["A", "B"]) == expected
