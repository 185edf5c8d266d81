"""EmbeddingRanker.encode: the one place texts become this model's vectors (scoring and MBR's embedding utility)."""

from __future__ import annotations

import numpy as np
import pytest

from surerank import Reranker
from surerank.rankers.encoders.embedding import EmbeddingRanker

DOCS = ["The Eiffel Tower is a wrought-iron lattice tower in Paris.",
        "Photosynthesis converts light energy into chemical energy in plants.",
        "Python is a programming language created by Guido van Rossum."]


@pytest.fixture(scope="module")
def ranker() -> EmbeddingRanker:
    return Reranker("embedding", precision="fp32", query_prefix="query: ", passage_prefix="passage: ")


def test_encode_gives_the_vectors_scoring_compares(ranker):
    query = "how do plants make energy from sunlight"
    q = ranker.encode([query], prefix=ranker.query_prefix).vectors[0]
    docs = ranker.encode(DOCS).vectors  # the passage prefix by default
    ranked = ranker.rank(query, DOCS)
    scores = np.array([ranked.items[[i.index for i in ranked.items].index(k)].score for k in range(len(DOCS))])
    np.testing.assert_allclose(docs @ q, scores, atol=1e-5)


def test_encode_normalises_as_the_model_compares_unless_told(ranker):
    assert ranker.similarity == "cosine"
    np.testing.assert_allclose(np.linalg.norm(ranker.encode(DOCS).vectors, axis=1), 1.0, atol=1e-5)
    raw = ranker.encode(DOCS, normalize=False).vectors
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)


def test_encode_reports_each_text_it_cut():
    short = Reranker("embedding", max_length=16)
    encoded = short.encode(["short text", "word " * 100])
    assert encoded.truncated == {1: 100}
    assert encoded.lengths[1] == 16 and encoded.lengths[0] < 16
    assert encoded.vectors.shape[0] == 2 and encoded.stats.sequences == 2


def test_mbr_embedding_utility_is_the_mean_cosine_of_encode():
    texts = ["how long do fleas live", "fleas live for two to three months", "the stock market closed higher"]
    ranked = Reranker("mbr", utility="embedding").rank("src", texts)
    vectors = Reranker("embedding").encode(texts, normalize=True).vectors.astype(np.float64)
    expected = (vectors @ vectors.T).mean(axis=1)
    got = np.array([ranked.items[[i.index for i in ranked.items].index(k)].score for k in range(len(texts))])
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_mbr_embedding_utility_counts_the_texts_it_cut():
    ranked = Reranker("mbr", utility="embedding", utility_options={"max_length": 16}).rank(
        "src", ["a short one", "word " * 100, "another short one"])
    assert ranked.info["mbr"]["texts_truncated"] == 1
