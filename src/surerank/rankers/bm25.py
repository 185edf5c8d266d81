"""BM25 with bm25s: scoring of a query's candidate texts, and retrieval from a whole corpus.

Defaults follow Anserini (k1 = 0.9, b = 0.4, Lucene's BM25 variant, English stopwords, Snowball
English stemming) so that the first stage and this lexical reranker behave like the runs users know.

Over one candidate list with no corpus statistics, IDF comes from the list itself (``idf="list"``, the default)
or from general-English word frequencies (``idf="background"``, the ``wordfreq`` package of the ``hybrid``
extra): on TREC DL 2019/2020 the background IDF lifts list BM25 from 0.30/0.28 to 0.49/0.47 nDCG@10
(docs/hybrid.md), because 100 candidates that all match the query cannot tell a rare term from a common one.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import Stemmer  # PyStemmer

from surerank.errors import InputError, MissingDependencyError
from surerank.ranker import Scores, ScoringRanker
from surerank.storage import atomic_open, atomic_write_text, durable_replace, fsync_file
from surerank.types import Candidate, Query

logger = logging.getLogger(__name__)


def _bm25s() -> Any:
    """Import bm25s lazily (half a second, and only BM25 needs it); it sets its own logger to DEBUG on import, so
    hand the level back to the app."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.NOTSET)
    return bm25s


#: Where IDF comes from: the candidate list, general-English word frequencies, or a corpus (``stats=``).
IDF_SOURCES = ("list", "background", "corpus")
#: idf = ln(1 + 1 / (BACKGROUND_SCALE * frequency)): per issue 24's measurement, a frequency of 1/1000 (a
#: common word) gives ln 2, one of 1e-8 (wordfreq's rarest) about 11.5, the range of Lucene's IDF on MS MARCO.
BACKGROUND_SCALE = 1000.0


@lru_cache(maxsize=4)
def _word_frequencies(language: str) -> tuple[Any, float]:
    """wordfreq's lookup and the rarest frequency its list holds (the floor for words it lacks); imported lazily,
    since only ``idf="background"`` needs the package and its data."""
    try:
        import wordfreq
    except ImportError:
        raise MissingDependencyError.for_extra("wordfreq", "hybrid", 'bm25 with idf="background"') from None
    table = wordfreq.get_frequency_dict(language)
    if not table:
        raise InputError(f"idf: wordfreq has no word list for language {language!r}")
    return wordfreq, float(min(table.values()))


class BackgroundIDF:
    """IDF of a query word from its frequency in general English (wordfreq's ``best`` list for ``language``).

    A word wordfreq does not know gets the rarest frequency of its list (so the highest IDF, as a term no
    document of a corpus holds).  Frequencies are of surface words, so the query's words are looked up before
    stemming; words sharing a stem take the most frequent one's (the lower IDF).
    """

    def __init__(self, language: str = "en") -> None:
        self.language = language
        self._wordfreq, self.floor = _word_frequencies(language)

    def idf(self, word: str) -> float:
        freq = max(float(self._wordfreq.word_frequency(word, self.language)), self.floor)
        return float(np.log1p(1.0 / (BACKGROUND_SCALE * freq)))

    def describe(self) -> str:
        from importlib.metadata import version

        return f"background: wordfreq {version('wordfreq')} ({self.language}), unknown words at the rarest " \
               f"frequency {self.floor:.3g}"


class _Analyzer:
    """Lower-casing, stopword removal and stemming shared by the ranker and the index."""

    def __init__(self, stemmer: str | None = "english", stopwords: str | None = "en") -> None:
        self.stopwords = stopwords or []
        self.stemmer = None
        if stemmer:
            self.stemmer = Stemmer.Stemmer(stemmer)

    def tokenize(self, texts: list[str], return_ids: bool = True) -> Any:
        return _bm25s().tokenize(texts, stopwords=self.stopwords, stemmer=self.stemmer,
                              return_ids=return_ids, show_progress=False)

    def surface_terms(self, text: str) -> list[tuple[str, str]]:
        """(stem, word) for each indexable word of ``text``: the tokens :meth:`tokenize` yields, before stemming."""
        words = _bm25s().tokenize([text], stopwords=self.stopwords, stemmer=None, return_ids=False,
                                  show_progress=False)[0]
        return [(self.stemmer.stemWord(w) if self.stemmer else w, w) for w in words]


class CorpusStats:
    """Document frequencies, corpus size and average length of a BM25 index, with the analyzer they need.

    Written by ``surerank retrieve --save-stats`` (or :meth:`BM25Index.corpus_stats`), read by
    ``Reranker("bm25", stats=path)`` so that candidates from any retriever are scored with the corpus's
    IDF rather than their own list's.
    """

    def __init__(self, n_docs: int, avg_length: float, df: dict[str, int], config: dict[str, Any]):
        if n_docs < 1 or avg_length <= 0:
            raise InputError(f"stats: n_docs ({n_docs}) and avg_length ({avg_length}) must be positive")
        self.n_docs, self.avg_length, self.df, self.config = int(n_docs), float(avg_length), df, dict(config)

    def idf(self, term: str) -> float:
        """Lucene's IDF, ln(1 + (N - df + 0.5) / (df + 0.5)); a term the corpus lacks gets df = 0."""
        df = self.df.get(term, 0)
        return float(np.log(1.0 + (self.n_docs - df + 0.5) / (df + 0.5)))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the statistics as JSON, atomically: a reader never sees half a file."""
        atomic_write_text(path, json.dumps({"format": "surerank-bm25-stats/1", "n_docs": self.n_docs,
                                            "avg_length": self.avg_length, "config": self.config,
                                            "df": self.df}))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CorpusStats:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"stats: file not found: {p}")
        try:
            data = json.loads(p.read_text())
            return cls(data["n_docs"], data["avg_length"], {str(k): int(v) for k, v in data["df"].items()},
                       data.get("config", {}))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"stats: {p} is not a surerank BM25 statistics file ({exc})") from exc


class BM25Ranker(ScoringRanker):
    """Scores each query's candidates by BM25.

    Without ``stats`` the IDF is the candidate list's own (``idf="list"``, which flattens IDF when every
    candidate matches the query) or general English's (``idf="background"``: word frequencies from wordfreq,
    ``pip install 'surerank[hybrid]'``), the average length the list's; with ``stats`` (a file from ``surerank
    retrieve --save-stats``, or a :class:`CorpusStats`) both are the corpus's, as in the first stage.  Each
    ranked list's ``info["bm25_statistics"]`` says which were used.
    """

    name = "bm25"

    def __init__(self, k1: float = 0.9, b: float = 0.4, method: str = "lucene",
                 stemmer: str | None = "english", stopwords: str | None = "en",
                 stats: str | os.PathLike[str] | CorpusStats | None = None, idf: str | None = None,
                 language: str = "en") -> None:
        self.k1, self.b, self.method = float(k1), float(b), method
        self.stats = CorpusStats.load(stats) if isinstance(stats, (str, os.PathLike)) else stats
        self.idf = idf or ("corpus" if self.stats is not None else "list")
        if self.idf not in IDF_SOURCES:
            raise InputError(f"idf: must be one of {', '.join(IDF_SOURCES)}, got {self.idf!r}")
        if (self.idf == "corpus") != (self.stats is not None):
            raise InputError('idf: "corpus" goes with stats= (corpus statistics), and stats= with idf="corpus"'
                             f' or no idf; got idf={self.idf!r} with stats {"given" if self.stats else "not given"}')
        if self.idf != "list" and method != "lucene":
            raise InputError(f"method: {self.idf} statistics are scored with 'lucene' BM25, not {method!r}")
        if self.stats is not None:
            for name, value in (("stemmer", stemmer), ("stopwords", stopwords)):
                recorded = self.stats.config.get(name, value)
                if recorded != value:
                    raise InputError(f"{name}: the statistics were built with {recorded!r}, not {value!r}; "
                                     "the analyzer must match the index")
        self.background = BackgroundIDF(language) if self.idf == "background" else None
        self.analyzer = _Analyzer(stemmer, stopwords)
        self._stemmer_name, self._stopwords = stemmer, stopwords

    def describe(self) -> dict[str, Any]:
        info = {"ranker": self.name, "k1": self.k1, "b": self.b, "method": self.method,
                "stemmer": self._stemmer_name, "stopwords": self._stopwords, "statistics": self.idf}
        if self.stats is not None:
            info.update(corpus_docs=self.stats.n_docs, corpus_avg_length=self.stats.avg_length)
        if self.background is not None:
            info.update(language=self.background.language)
        return info

    def _statistics(self) -> str:
        if self.background is not None:
            return self.background.describe() + "; average length of the list"
        if self.stats is not None:
            return f"corpus: {self.stats.n_docs} documents"
        return "list: document frequencies and average length of the candidate list"

    def score(self, queries: list[Query]) -> list[Scores]:
        if self.idf != "list":
            out = [self._score_lucene(q) for q in queries]
        else:
            out = [self._score_with_list(q) for q in queries]
        for scores in out:
            scores.info["bm25_statistics"] = self._statistics()
        return out

    def _score_with_list(self, query: Query) -> Scores:
        """bm25s over the list itself: its document frequencies and average length."""
        bm25s = _bm25s()
        tokens = self.analyzer.tokenize([c.text for c in query.candidates])
        if not tokens.vocab:  # no candidate has an indexable term (stopwords, one-letter words)
            return Scores(values=np.zeros(len(query.candidates)))
        model = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        model.index(tokens, show_progress=False)
        query_tokens = [t for t in self.analyzer.tokenize([query.text], return_ids=False)[0] if t in tokens.vocab]
        values = model.get_scores(query_tokens) if query_tokens else np.zeros(len(query.candidates))
        return Scores(values=np.asarray(values, dtype=float))

    def _query_weights(self, query: Query) -> dict[str, float]:
        """Each query stem's count times its IDF (a repeated term counts each time, as in bm25s and Lucene)."""
        if self.background is not None:
            idf: dict[str, float] = {}
            counts: dict[str, int] = {}
            for stem, word in self.analyzer.surface_terms(query.text):
                idf[stem] = min(idf.get(stem, np.inf), self.background.idf(word))
                counts[stem] = counts.get(stem, 0) + 1
            return {t: counts[t] * idf[t] for t in idf}
        assert self.stats is not None
        q_terms = self.analyzer.tokenize([query.text], return_ids=False)[0]
        return {t: q_terms.count(t) * self.stats.idf(t) for t in set(q_terms)}

    def _score_lucene(self, query: Query) -> Scores:
        """Lucene BM25 with corpus or background IDF: sum over query terms of
        idf * tf / (tf + k1 * (1 - b + b * length / avg_length)); the average length is the corpus's, or with
        background IDF the list's (no corpus to take it from)."""
        if not query.candidates:
            return Scores(values=np.zeros(0))
        weight = self._query_weights(query)
        docs = self.analyzer.tokenize([c.text for c in query.candidates], return_ids=False)
        values = np.zeros(len(docs))
        if not weight:
            return Scores(values=values)
        if self.stats is not None:
            avg_length = self.stats.avg_length
        else:
            avg_length = max(float(np.mean([len(d) for d in docs])), 1.0)
        for i, doc in enumerate(docs):
            norm = self.k1 * (1.0 - self.b + self.b * len(doc) / avg_length)
            counts: dict[str, int] = {}
            for t in doc:
                if t in weight:
                    counts[t] = counts.get(t, 0) + 1
            values[i] = sum(weight[t] * tf / (tf + norm) for t, tf in counts.items())
        return Scores(values=values)


def _corpus_stats(tokens: Any, config: dict[str, Any]) -> CorpusStats:
    vocab_of_id = {i: term for term, i in tokens.vocab.items()}
    df = np.zeros(len(vocab_of_id) + 1, dtype=np.int64)
    lengths = np.zeros(len(tokens.ids), dtype=np.int64)
    for d, ids in enumerate(tokens.ids):
        lengths[d] = len(ids)
        if len(ids):
            df[np.unique(np.asarray(ids, dtype=np.int64))] += 1
    terms = {vocab_of_id[i]: int(df[i]) for i in range(len(df)) if i in vocab_of_id and df[i] > 0}
    return CorpusStats(len(tokens.ids), float(lengths.mean()) if lengths.sum() else 1.0, terms, config)


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
        tokens = self.analyzer.tokenize([c.text for c in self.corpus])
        self.model.index(tokens, show_progress=False)
        self._stats = _corpus_stats(tokens, self.config)

    def corpus_stats(self) -> CorpusStats:
        """The index's document frequencies and average length, for ``Reranker("bm25", stats=...)``."""
        return self._stats

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
        """Write the index (bm25s's arrays in ``bm25s/``, ``corpus.jsonl``, ``config.json``); every file appears
        whole.  bm25s writes its files in place, so it writes them into a temporary folder beside them, and each
        is renamed over its target from there."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=d, prefix=".bm25s.") as staging:
            self.model.save(staging)
            (d / "bm25s").mkdir(exist_ok=True)
            for written in sorted(Path(staging).iterdir()):
                fsync_file(written)
                durable_replace(written, d / "bm25s" / written.name)
        with atomic_open(d / "corpus.jsonl") as handle:
            for c in self.corpus:
                handle.write(json.dumps({"id": c.id, "text": c.text}) + "\n")
        atomic_write_text(d / "config.json", json.dumps(self.config))
