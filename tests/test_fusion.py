"""Fusion equals ranx's fusion of the same inputs."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surerank import InputError, Reranker
from surerank.aggregate.fusion import fuse, fuse_runs
from surerank.formats import lists_to_run

RANX_NAMES = {"rrf": "rrf", "combsum": "sum", "combmnz": "mnz"}
RANX_NORMS = {"minmax": "min-max", "zscore": "zmuv"}


def ranx_fused(runs, method, norm):
    from ranx import Run
    from ranx import fuse as ranx_fuse

    fused = ranx_fuse([Run(r) for r in runs], method=RANX_NAMES[method], norm=RANX_NORMS[norm])
    return fused.to_dict()


def assert_same_lists(ours, theirs):
    assert ours.keys() == theirs.keys()
    for qid in ours:
        assert ours[qid].keys() == theirs[qid].keys()
        for doc in ours[qid]:
            assert ours[qid][doc] == pytest.approx(theirs[qid][doc], rel=1e-6, abs=1e-9)
        # the same order: ours, read in ranx's scores, never goes up (exact ties may come in any order)
        order = sorted(ours[qid], key=lambda d: -ours[qid][d])
        reference = [theirs[qid][d] for d in order]
        assert all(a >= b - 1e-12 for a, b in itertools.pairwise(reference))


unique_scores = st.dictionaries(
    st.sampled_from([f"d{i}" for i in range(10)]), st.floats(-50, 50, allow_nan=False), min_size=2
).filter(lambda d: len({round(v, 6) for v in d.values()}) == len(d))


@settings(max_examples=25, deadline=None)
@given(unique_scores, unique_scores, st.sampled_from(["rrf", "combsum", "combmnz"]),
       st.sampled_from(["minmax", "zscore"]))
def test_fusion_matches_ranx_on_random_lists(a, b, method, norm):
    ours = fuse_runs([{"q": a}, {"q": b}], method=method, norm=norm)
    assert_same_lists(ours, ranx_fused([{"q": a}, {"q": b}], method, norm))


@pytest.mark.parametrize("method", ["rrf", "combsum"])
def test_bm25_plus_embedding_fusion_matches_ranx_on_trec_dl(dl19, method):
    queries, _ = dl19
    queries = queries[:2]
    first_stage, embedding_ranker = Reranker("first-stage"), Reranker("embedding")
    bm25 = lists_to_run(first_stage.rank_many(queries))
    embedding = lists_to_run(embedding_ranker.rank_many(queries))
    fusion = Reranker("fusion", rankers=[first_stage, embedding_ranker], method=method)
    fused = lists_to_run(fusion.rank_many(queries))
    assert_same_lists(fused, ranx_fused([bm25, embedding], method, "minmax"))


def test_weights_and_errors():
    a, b = {"x": 1.0, "y": 0.0}, {"x": 0.0, "y": 1.0}
    assert fuse([a, b], "combsum", weights=[2.0, 1.0]) == {"x": 2.0, "y": 1.0}
    with pytest.raises(InputError, match="2 weights for 3 rankers"):
        fuse([a, b, a], weights=[1, 2])
    with pytest.raises(InputError, match="unknown fusion method 'borda'"):
        fuse([a], method="borda")
    with pytest.raises(InputError, match="unknown norm"):
        Reranker("fusion", rankers=["bm25"], norm="softmax")
