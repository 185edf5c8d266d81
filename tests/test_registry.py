from __future__ import annotations

import pytest

from surerank import BaseRanker, Reranker, UnknownRankerError
from surerank.registry import RankerSpec, all_specs, get_spec, register


def test_unknown_ranker_lists_the_known_ones():
    with pytest.raises(UnknownRankerError) as info:
        Reranker("bm52")
    message = str(info.value)
    assert "unknown ranker 'bm52'" in message
    for name in ("bm25", "embedding", "cross-encoder", "fusion"):
        assert name in message


def test_registered_ranker_is_created_by_name_with_options():
    register(RankerSpec("test-bm25", "surerank.rankers.bm25:BM25Ranker", "a test alias"))
    ranker = Reranker("test-bm25", k1=1.5)
    assert isinstance(ranker, BaseRanker)
    assert ranker.describe()["k1"] == 1.5


def test_missing_dependency_is_reported_with_the_extra():
    spec = RankerSpec("needs-nothing-real", "x:Y", "x", requires=("surerank_no_such_module",), extra="llm")
    assert spec.missing() == ["surerank_no_such_module"]
    with pytest.raises(ImportError, match=r"pip install 'surerank\[llm\]'"):
        spec.load()


def test_listing_the_registry_imports_no_backend():
    import sys

    all_specs()
    get_spec("embedding")
    assert "onnxruntime" not in sys.modules or "surerank.rankers.encoders.embedding" in sys.modules


def test_bm25_ranks_the_matching_passage_first():
    ranked = Reranker("bm25").rank("flea life cycle", [
        "The stock market closed higher today.",
        "A flea's life cycle has four stages: egg, larva, pupa and adult.",
        "Cycle lanes make city life easier.",
    ])
    assert ranked[0].index == 1 and ranked[0].id == "1"
    assert ranked[0].score > ranked[1].score


@pytest.mark.parametrize("documents", [["q"], ["the", "a"], ["", "  "]])
def test_bm25_scores_candidates_without_indexable_terms_as_zero(documents):
    ranked = Reranker("bm25").rank("flea q", documents)
    assert ranked.scores == [0.0] * len(documents)
    assert [item.index for item in ranked] == list(range(len(documents)))
