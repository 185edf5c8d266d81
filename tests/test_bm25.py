"""BM25 as a reranker: list statistics by default, or the corpus's statistics from an index."""

from __future__ import annotations

import numpy as np
import pytest

from surerank import Query, Reranker
from surerank.errors import InputError
from surerank.formats import read_corpus, read_smart_queries
from surerank.rankers.bm25 import BM25Index, CorpusStats


@pytest.fixture(scope="module")
def cranfield(shared_data):
    cran = shared_data / "cranfield"
    index = BM25Index(read_corpus(cran / "cran.all.1400"))
    return index, index.retrieve(read_smart_queries(cran / "cran.qry")[:25], k=30)


def test_corpus_statistics_reproduce_the_index_scores(cranfield):
    """Candidates rescored with the corpus's statistics get exactly the retriever's BM25 scores; with the
    list's own statistics they do not."""
    index, retrieved = cranfield
    stats = index.corpus_stats()
    assert stats.n_docs == 1400 and 50 < stats.avg_length < 200
    corpus_bm25 = Reranker("bm25", stats=stats)
    list_bm25 = Reranker("bm25")
    assert corpus_bm25.describe()["statistics"] == "corpus" and list_bm25.describe()["statistics"] == "list"
    differs = 0
    for query, ranked, by_list in zip(retrieved, corpus_bm25.rank_many(retrieved), list_bm25.rank_many(retrieved)):
        expected = {c.id: c.metadata["bm25_score"] for c in query.candidates}
        got = {item.id: item.score for item in ranked.items}
        np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=1e-4, atol=1e-5)
        differs += by_list.ids != ranked.ids
    assert differs > len(retrieved) // 2


def test_statistics_file_round_trip_and_unknown_terms(cranfield, tmp_path):
    index, retrieved = cranfield
    path = tmp_path / "stats.json"
    index.corpus_stats().save(path)
    loaded = CorpusStats.load(path)
    assert loaded.df == index.corpus_stats().df and loaded.config["stemmer"] == "english"
    a = Reranker("bm25", stats=str(path)).rank(retrieved[0])
    b = Reranker("bm25", stats=index.corpus_stats()).rank(retrieved[0])
    assert a.ids == b.ids
    # a term the corpus never saw gets the highest IDF, not an error
    ranked = Reranker("bm25", stats=loaded).rank(Query.from_texts("zyzzyva wing", ["zyzzyva", "wing", "none"]))
    assert ranked.ids[0] == "0" and ranked.items[-1].score == 0.0
    assert loaded.idf("zyzzyva") > loaded.idf("wing") > 0


def test_bad_statistics_are_named(tmp_path, cranfield):
    index, _ = cranfield
    with pytest.raises(InputError, match="stats: file not found"):
        Reranker("bm25", stats=str(tmp_path / "absent.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"n_docs": 3}')
    with pytest.raises(InputError, match="not a surerank BM25 statistics file"):
        Reranker("bm25", stats=str(bad))
    with pytest.raises(InputError, match="stemmer: the statistics were built with 'english'"):
        Reranker("bm25", stats=index.corpus_stats(), stemmer=None)
    with pytest.raises(InputError, match="method"):
        Reranker("bm25", stats=index.corpus_stats(), method="robertson")
