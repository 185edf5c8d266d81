"""BM25 with bm25s: scoring of a query's candidate texts, and retrieval from a whole corpus.

Defaults follow Anserini (k1 = 0.9, b = 0.4, Lucene's BM25 variant, English stopwords, Snowball
English stemming) so that the first stage and this lexical reranker behave like the runs users know.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from surerank.errors import InputError
from surerank.ranker import Scores, ScoringRanker
from surerank.types import Candidate, Query

logger = logging.getLogger(__name__)


def _bm25s() -> Any:
    """Import bm25s lazily; it sets its own logger to DEBUG on import, so hand the level back to the app."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.NOTSET)
    return bm25s


class _Analyzer:
    """Lower-casing, stopword removal and stemming shared by the ranker and the index."""

    def __init__(self, stemmer: str | None = "english", stopwords: str | None = "en") -> None:
        self.stopwords = stopwords or []
        self.stemmer = None
        if stemmer:
            import Stemmer  # PyStemmer, a dependency

            self.stemmer = Stemmer.Stemmer(stemmer)

    def tokenize(self, texts: list[str], return_ids: bool = True) -> Any:
        return _bm25s().tokenize(texts, stopwords=self.stopwords, stemmer=self.stemmer,
                              return_ids=return_ids, show_progress=False)


class BM25Ranker(ScoringRanker):
    """Scores each query's candidates by BM25, with statistics (IDF, average length) of that list."""

    name = "bm25"

    def __init__(self, k1: float = 0.9, b: float = 0.4, method: str = "lucene",
                 stemmer: str | None = "english", stopwords: str | None = "en") -> None:
        self.k1, self.b, self.method = float(k1), float(b), method
        self.analyzer = _Analyzer(stemmer, stopwords)
        self._stemmer_name, self._stopwords = stemmer, stopwords

    def describe(self) -> dict[str, Any]:
        return {"ranker": self.name, "k1": self.k1, "b": self.b, "method": self.method,
                "stemmer": self._stemmer_name, "stopwords": self._stopwords}

    def score(self, queries: list[Query]) -> list[Scores]:
        bm25s = _bm25s()
        out = []
        for query in queries:
            tokens = self.analyzer.tokenize([c.text for c in query.candidates])
            if not tokens.vocab:  # no candidate has an indexable term (stopwords, one-letter words)
                out.append(Scores(values=np.zeros(len(query.candidates))))
                continue
            model = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
            model.index(tokens, show_progress=False)
            query_tokens = [t for t in self.analyzer.tokenize([query.text], return_ids=False)[0]
                            if t in tokens.vocab]
            values = model.get_scores(query_tokens) if query_tokens else np.zeros(len(query.candidates))
            out.append(Scores(values=np.asarray(values, dtype=float)))
        return out


class BM25Index:
    """A BM25 index over a whole corpus, for the retrieve → rerank pipeline."""

    def __init__(self, corpus: Sequence[Candidate], k1: float = 0.9, b: float = 0.4, method: str = "lucene",
                 stemmer: str | None = "english", stopwords: str | None = "en") -> None:
        bm25s = _bm25s()
        if not corpus:
            raise InputError("corpus: no documents to index")
        ids = [c.id for c in corpus]
        if len(set(ids)) != len(ids):
            raise InputError("corpus: document ids must be unique")
        self.corpus = list(corpus)
        self.config = {"k1": k1, "b": b, "method": method, "stemmer": stemmer, "stopwords": stopwords}
        self.analyzer = _Analyzer(stemmer, stopwords)
        self.model = bm25s.BM25(k1=k1, b=b, method=method)
        self.model.index(self.analyzer.tokenize([c.text for c in self.corpus]), show_progress=False)

    def retrieve(self, queries: Sequence[Query], k: int = 100) -> list[Query]:
        """Return the queries with their top-k documents as candidates, best first."""
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        k = min(k, len(self.corpus))
        out = []
        for query in queries:
            tokens = self.analyzer.tokenize([query.text], return_ids=False)
            if not tokens[0]:
                logger.warning("query %s has no indexable terms; it retrieves nothing", query.id)
                out.append(Query(text=query.text, candidates=(), id=query.id, metadata=query.metadata))
                continue
            docs, scores = self.model.retrieve(tokens, k=k, show_progress=False, n_threads=1)
            candidates = tuple(
                Candidate(id=self.corpus[int(d)].id, text=self.corpus[int(d)].text,
                          metadata={"bm25_score": float(s), "first_stage_rank": rank})
                for rank, (d, s) in enumerate(zip(docs[0], scores[0]), start=1)
                if float(s) > 0.0
            )
            out.append(Query(text=query.text, candidates=candidates, id=query.id, metadata=query.metadata))
        return out

    def save(self, directory: str | os.PathLike[str]) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.model.save(str(d / "bm25s"))
        with (d / "corpus.jsonl").open("w", encoding="utf-8") as handle:
            for c in self.corpus:
                handle.write(json.dumps({"id": c.id, "text": c.text}) + "\n")
        (d / "config.json").write_text(json.dumps(self.config))
