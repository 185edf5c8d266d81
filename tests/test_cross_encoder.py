"""The cross-encoder ranker on a small locally built checkpoint (BERT body + fresh 1-logit head)."""

from __future__ import annotations

import numpy as np
import pytest

import surerank
from engine_fixtures import build_tiny_cross_encoder, dl19_slice, has, pipelined_like_gpu
from surerank.errors import InputError


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-ce"))


@pytest.fixture(scope="module")
def ranker(model_dir):
    """fp32, named (the default, precision="auto", is tested in test_precision_auto.py on this model)."""
    return surerank.Reranker("cross-encoder", model=str(model_dir), precision="fp32")


def _by_index(ranked):
    return np.array([i.score for i in sorted(ranked.items, key=lambda i: i.index)])


def test_scores_pairs_and_reports_configuration(ranker):
    queries, _ = dl19_slice(2, 10)
    lists = ranker.rank_many(queries)
    for q, ranked in zip(queries, lists):
        assert sorted(ranked.ids) == sorted(c.id for c in q.candidates)
        assert ranked.scores == sorted(ranked.scores, reverse=True)
        assert ranked.info["backend"] == "onnx" and ranked.info["precision"] == "fp32"
        assert len(set(np.round(ranked.scores, 6))) > 1
        assert all(i.truncation is not None and not i.truncation.truncated for i in ranked.items)
    assert ranker.describe()["scores"] == "raw"


def test_the_pair_matters_not_only_the_passage(ranker):
    docs = ["the wing produces lift", "stock markets fell sharply"]
    a = _by_index(ranker.rank("aerodynamics of wings", docs))
    b = _by_index(ranker.rank("finance news today", docs))
    assert not np.allclose(a, b)


@pytest.mark.skipif(not has("torch", "transformers"), reason="needs the torch extra")
def test_onnx_and_torch_backends_agree(model_dir, ranker):
    queries, _ = dl19_slice(2, 6)
    torch_ranker = surerank.Reranker("cross-encoder", model=str(model_dir), backend="torch")
    for a, b in zip(ranker.rank_many(queries), torch_ranker.rank_many(queries)):
        assert b.info["backend"] == "torch"
        np.testing.assert_allclose(_by_index(a), _by_index(b), atol=2e-4)


@pytest.mark.skipif(not has("torch", "transformers"), reason="needs the torch extra")
def test_matches_transformers_reference(model_dir, ranker):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    query, docs = "what is lift", ["lift is an upward force on a wing", "a cat sat on a mat"]
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    with torch.inference_mode():
        enc = tok([query] * 2, docs, return_tensors="pt", padding=True)
        expected = model(**enc).logits[:, 0].numpy()
    np.testing.assert_allclose(_by_index(ranker.rank(query, docs)), expected, atol=1e-4)


def test_sigmoid_scores_are_monotone_in_raw(model_dir, ranker):
    docs = ["a b c", "wing lift drag", "boundary layer flow", "x"]
    raw = _by_index(ranker.rank("lift", docs))
    sigmoid = surerank.Reranker("cross-encoder", model=str(model_dir), scores="sigmoid", precision="fp32")
    sig = _by_index(sigmoid.rank("lift", docs))
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-raw)), atol=1e-6)


def test_int8_is_close_to_fp32(model_dir, ranker):
    queries, _ = dl19_slice(1, 20)
    a = _by_index(ranker.rank(queries[0]))
    b = surerank.Reranker("cross-encoder", model=str(model_dir), precision="int8").rank(queries[0])
    assert b.info["precision"] == "int8"
    # the random head makes score differences tiny, so quantisation noise is visible here; the real
    # model's int8 fidelity is checked in test_embedding (and nDCG in benchmarks/throughput.py)
    assert np.isfinite(_by_index(b)).all() and not np.allclose(a, _by_index(b), atol=1e-7)
    assert np.corrcoef(a, _by_index(b))[0, 1] > 0.5


def test_truncation_of_document_and_query_is_reported(model_dir):
    r = surerank.Reranker("cross-encoder", model=str(model_dir), max_length=32)
    ranked = r.rank("wing " * 40, ["short", "lift " * 200])
    long_item = next(i for i in ranked.items if i.id == "1")
    short_item = next(i for i in ranked.items if i.id == "0")
    # query is cut to half the room: (32 - 3) // 2 = 14 tokens, the document gets the rest
    assert ranked.info["query_truncated"] == {"tokens_total": 40, "tokens_used": 14}
    assert long_item.truncation.truncated and long_item.truncation.tokens_used == 32
    assert long_item.truncation.tokens_total == 40 + 200 + 3
    assert short_item.truncation.truncated  # its query was cut too
    assert ranked.info["candidates_truncated"] == 2


def test_bad_label_and_scores_option(model_dir):
    with pytest.raises(InputError, match="scores"):
        surerank.Reranker("cross-encoder", model=str(model_dir), scores="softmax")
    with pytest.raises(InputError, match="label"):
        surerank.Reranker("cross-encoder", model=str(model_dir), label=3).rank("q", ["d"])


def test_embedding_checkpoint_without_head_is_refused():
    with pytest.raises(InputError, match="classification head"):
        surerank.Reranker("cross-encoder", model="all-MiniLM-L6-v2").rank("q", ["d"])


def test_gpu_pipeline_groups_give_the_same_results(ranker):
    queries, _ = dl19_slice(4, 6)
    plain = ranker.rank_many(queries)
    assert len(ranker._groups(queries)) == 1
    ranker.pipeline_pairs = 8
    try:
        assert [len(g) for g in ranker._groups(queries)] == [1, 1, 1, 1]
    finally:
        del ranker.pipeline_pairs
    piped = pipelined_like_gpu(ranker, queries, group_pairs=12)  # groups of two queries
    for a, b in zip(plain, piped):
        assert a.ids == b.ids and (a.cost.calls, a.cost.prompt_tokens) == (b.cost.calls, b.cost.prompt_tokens)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        assert [i.truncation for i in a.items] == [i.truncation for i in b.items]
    assert piped[0].info["engine"]["sequences"] == 12  # each group ran on its own


def test_int8_fast_runs_every_projection_int8_with_the_ffn_outliers_folded_into_fp32(model_dir, tmp_path,
                                                                                      monkeypatch):
    """int8-fast (hand-built graph) quantises every projection; the FFN hidden channels with outlier
    activations go to a small fp32 side branch (tests/test_int8_fold.py checks the fold itself)."""
    import json

    import onnx

    from surerank.engine.quantize.dynamic import FOLDED_CHANNELS_KEY
    from surerank.engine.quantize.outliers import folded_products

    monkeypatch.setenv("SURERANK_CACHE", str(tmp_path))
    fast = surerank.Reranker("cross-encoder", model=str(model_dir), precision="int8-fast")
    graph = onnx.load(fast.engine.backend.path)
    folded = json.loads({p.key: p.value for p in graph.metadata_props}[FOLDED_CHANNELS_KEY])
    assert folded and set(folded) <= {"l0_ff2", "l1_ff2"}  # MiniLM's first layers have outlier channels
    side = folded_products(folded)
    assert sorted(fast.describe()["fp32_nodes"]) == sorted(["pooler", "classifier", *side])
    fp32_matmuls = {n.name for n in graph.graph.node if n.op_type == "MatMul"}
    assert set(side) <= fp32_matmuls and not any(n.endswith(("_ff1", "_ff2", "_ao")) for n in fp32_matmuls)
    ranked = fast.rank("what is lift", ["Lift is the force that holds an aircraft up.", "Bananas are yellow."])
    assert ranked.info["precision"] == "int8-fast" and len(ranked.items) == 2

    accurate = surerank.Reranker("cross-encoder", model=str(model_dir), precision="int8")
    assert sorted(n for n in accurate.describe()["fp32_nodes"] if n.endswith("_ff2")) == ["l0_ff2", "l1_ff2"]


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_a_sentence_transformers_default_prompt_is_put_before_the_query(tmp_path, backend):
    """A CrossEncoder saved by sentence-transformers 5+ with a default prompt: sentence-transformers prepends
    it to the first text of every pair; surerank does too (and says where it came from), unless
    ``query_prefix`` says otherwise."""
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import CrossEncoder

    from arch_fixtures import build_model  # weights drawn wide: scores that move with the input

    prompt = "Instruct: given a web search query, retrieve relevant passages. Query: "
    saved = tmp_path / "with-prompt"
    CrossEncoder(str(build_model(tmp_path / "ce", "bert")), prompts={"query": prompt},
                 default_prompt_name="query").save(str(saved))
    queries, _ = dl19_slice(2, 8)
    pairs = [[(q.text, c.text) for c in q.candidates] for q in queries]
    ranker = surerank.Reranker("cross-encoder", model=str(saved), backend=backend, precision="fp32")
    assert ranker.describe()["query_prefix"] == prompt
    assert ranker.describe()["sources"]["query_prefix"].endswith("default_prompt_name 'query'")
    plain = surerank.Reranker("cross-encoder", model=str(saved), backend=backend, precision="fp32",
                              query_prefix="")
    assert "query_prefix" not in plain.describe()
    reference = CrossEncoder(str(saved))  # its saved activation (sigmoid), undone below: surerank's raw logits
    for p, ours, without in zip(pairs, ranker.rank_many(queries), plain.rank_many(queries)):
        probability = reference.predict(p).astype(np.float64)
        expected = np.log(probability / (1 - probability))
        got = np.array([i.score for i in sorted(ours.items, key=lambda i: i.index)])
        got_plain = np.array([i.score for i in sorted(without.items, key=lambda i: i.index)])
        assert np.abs(got - expected).max() <= 1e-4
        assert np.abs(got_plain - expected).max() > 1e-2  # the prompt changes the scores


def test_a_saved_cross_encoder_given_to_the_embedding_ranker_is_refused(model_dir, tmp_path):
    """sentence-transformers 6 saves a CrossEncoder with the same modules.json as a bi-encoder; its files say
    what it is (model_type CrossEncoder, transformer_task sequence-classification), and the embedding ranker,
    which would pool its token states into meaningless vectors, refuses it by name."""
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import CrossEncoder

    saved = tmp_path / "saved-cross-encoder"
    CrossEncoder(str(model_dir)).save(str(saved))
    with pytest.raises(InputError, match=r"saved as a sentence-transformers CrossEncoder.*cross-encoder ranker"):
        surerank.Reranker("embedding", model=str(saved))
    assert surerank.Reranker("cross-encoder", model=str(saved), precision="fp32").rank("q", ["a", "b"]).ids
