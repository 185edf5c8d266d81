from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from surerank import Candidate, InputError, Query, RankedList, Reranker


def test_duplicate_candidate_ids_are_rejected_with_both_positions():
    with pytest.raises(InputError, match=r"duplicate candidate id 'a' at positions 0 and 2"):
        Query(text="q", candidates=(Candidate("a", "x"), Candidate("b", "y"), Candidate("a", "z")))


def test_from_texts_accepts_strings_mappings_and_candidates():
    q = Query.from_texts("q", ["plain", {"id": "d7", "text": "mapped", "lang": "en"}, Candidate("c", "obj")])
    assert [c.id for c in q.candidates] == ["0", "d7", "c"]
    assert q.candidates[1].metadata == {"lang": "en"}
    with pytest.raises(InputError, match=r"documents\[0\]"):
        Query.from_texts("q", [{"id": "x"}])
    with pytest.raises(InputError, match=r"documents\[1\]"):
        Query.from_texts("q", ["ok", 42])


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), max_size=30))
def test_from_scores_orders_best_first_and_keeps_input_order_on_ties(scores):
    q = Query.from_texts("q", [f"doc {i}" for i in range(len(scores))])
    ranked = RankedList.from_scores(q, scores)
    assert [item.rank for item in ranked] == list(range(1, len(scores) + 1))
    assert sorted(item.index for item in ranked) == list(range(len(scores)))
    for a, b in zip(ranked.items, ranked.items[1:]):
        assert a.score > b.score or (a.score == b.score and a.index < b.index)
        assert a.id == q.candidates[a.index].id


def test_from_order_scores_follow_the_order():
    q = Query.from_texts("q", ["a", "b", "c"])
    ranked = RankedList.from_order(q, [2, 0, 1])
    assert [item.index for item in ranked] == [2, 0, 1]
    with pytest.raises(ValueError):
        RankedList.from_order(q, [0, 0, 1])


def test_empty_candidate_list_gives_an_empty_result():
    ranked = Reranker("bm25").rank("anything", [])
    assert len(ranked) == 0 and ranked.items == []
    lists = Reranker("bm25").rank_many([("q1", []), ("q2", ["some text about q2"])])
    assert [len(r) for r in lists] == [0, 1]
