"""Cross-encoder ranker: a sequence-classification model reads (query, passage) pairs together.

A Hugging Face sequence-classification reranker by hub id or local path: on ONNX Runtime (CPU, fp32 or
int8) BERT, RoBERTa and XLM-R checkpoints (``cross-encoder/ms-marco-MiniLM-L-6-v2``, the bge-reranker
family) get a graph built from the safetensors without torch, and other encoder architectures an
exported one (:mod:`surerank.engine.onnx.export`); torch runs any of them (CPU/GPU, fp16/bf16).  Which
architectures are checked against transformers, and how closely: ``docs/models.md``.  A checkpoint
without a trained classification head is refused, naming the missing tensors; custom-code models need
``trust_remote_code=True``.  The query is tokenized once and joined to every candidate's token ids;
long candidates are truncated (and say so) or split into overlapping passages whose scores are
aggregated.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from surerank.engine.runtime.core import RunStats
from surerank.engine.runtime.ranker_base import EncoderRanker, Prepared
from surerank.engine.text.tokenize import Sequence, pair_sequence
from surerank.errors import InputError
from surerank.ranker import Scores
from surerank.types import Cost, Query, Truncation

logger = logging.getLogger(__name__)

DEFAULT_CROSS_ENCODER = "cross-encoder/ms-marco-MiniLM-L-6-v2"
SCORE_MODES = ("raw", "sigmoid")


class CrossEncoderRanker(EncoderRanker):
    """Scores each (query, candidate) pair with a sequence-classification head."""

    name = "cross-encoder"
    head = "classifier"

    def __init__(self, model: str | None = None, *, scores: str = "raw", label: int | None = None,
                 max_query_length: int | None = None, query_prefix: str | None = None, **options: Any):
        if scores not in SCORE_MODES:
            raise InputError(f"scores: {scores!r} is unknown; choose from {', '.join(SCORE_MODES)}")
        if max_query_length is not None and (not isinstance(max_query_length, int) or max_query_length < 1):
            raise InputError(f"max_query_length: must be a positive integer, got {max_query_length!r}")
        if query_prefix is not None and not isinstance(query_prefix, str):
            raise InputError(f"query_prefix: must be a string, got {query_prefix!r}")
        self.score_mode = scores
        self.label = label
        self.max_query_length = max_query_length
        self._query_prefix = query_prefix
        super().__init__(model or DEFAULT_CROSS_ENCODER, **options)

    def describe(self) -> dict[str, Any]:
        info = {**super().describe(), "scores": self.score_mode, "label": self._label_index(),
                "max_query_length": self._query_limit()}
        prefix, source = self.query_prefix()
        if prefix:  # only when used: a trust artifact fitted without one still matches
            info.update(query_prefix=prefix, sources={"query_prefix": source})
        return info

    def query_prefix(self) -> tuple[str, str]:
        """The text put before each query, and where it came from: the option, else the default prompt a
        sentence-transformers 5+ CrossEncoder saved (``config_sentence_transformers.json``
        ``default_prompt_name``, which it prepends to the first text of every pair), else none."""
        if self._query_prefix is not None:
            return self._query_prefix, "query_prefix option"
        files = self.engine.files
        if files.default_prompt_name:
            return (files.prompts[files.default_prompt_name],
                    f"{files.sources['prompts']} default_prompt_name {files.default_prompt_name!r}")
        return "", "default (no default prompt)"

    def _label_index(self) -> int:
        n = self.engine.files.num_labels
        index = n - 1 if self.label is None else self.label
        if not 0 <= index < n:
            raise InputError(f"label: {self.label} is out of range for a model with {n} labels")
        return index

    def _query_limit(self) -> int:
        e = self.engine
        room = e.max_length - e.tokenizer.template.pair_specials
        return min(self.max_query_length or room // 2, room - 1)

    def prepare(self, queries: list[Query]) -> Prepared:
        engine = self.engine
        template = engine.tokenizer.template
        q_limit = self._query_limit()

        prefix = self.query_prefix()[0]
        texts: dict[str, int] = {}
        q_slots = [texts.setdefault(prefix + q.text, len(texts)) for q in queries]
        d_slots = [[texts.setdefault(c.text, len(texts)) for c in q.candidates] for q in queries]
        token_ids = engine.tokenizer.encode(list(texts))

        seqs: list[Sequence] = []
        spans_of: list[list[tuple[int, int]]] = []  # per query: per candidate (first, end) sequence range
        reports: list[list[Truncation]] = []
        q_truncated: list[int | None] = []
        for qi in range(len(queries)):
            q_ids = token_ids[q_slots[qi]]
            q_truncated.append(len(q_ids) if len(q_ids) > q_limit else None)
            q_ids = q_ids[:q_limit]
            window = engine.max_length - template.pair_specials - len(q_ids)
            extra = template.pair_specials + len(q_ids)
            ranges, reps = [], []
            for slot in d_slots[qi]:
                d_ids = token_ids[slot]
                spans, report = self.policy.spans(len(d_ids), window, extra)
                if q_truncated[qi] is not None:  # the report counts the query tokens cut as well
                    report.truncated = True
                    report.tokens_total += q_truncated[qi] - len(q_ids)
                first = len(seqs)
                seqs.extend(pair_sequence(template, q_ids, d_ids[a:b]) for a, b in spans)
                ranges.append((first, len(seqs)))
                reps.append(report)
            spans_of.append(ranges)
            reports.append(reps)
        return Prepared(queries, seqs, (spans_of, reports, q_truncated, q_limit))

    def finish(self, prepared: Prepared, logits: np.ndarray, stats: RunStats) -> list[Scores]:
        queries, seqs = prepared.queries, prepared.seqs
        spans_of, reports, q_truncated, q_limit = prepared.state
        raw = logits[:, self._label_index()].astype(np.float64)
        if self.score_mode == "sigmoid":
            raw = 1.0 / (1.0 + np.exp(-raw))
        info = self._info()
        info["engine"] = stats.as_dict()
        info["scores"] = self.score_mode

        out = []
        for qi, query in enumerate(queries):
            values = np.empty(len(query.candidates), dtype=np.float64)
            tokens = 0
            calls = 0
            for ci, (a, b) in enumerate(spans_of[qi]):
                values[ci] = raw[a] if b - a == 1 else self.policy.combine(raw[a:b])
                tokens += sum(s.length for s in seqs[a:b])
                calls += b - a
            qinfo = dict(info)
            n_trunc = sum(1 for r in reports[qi] if r.truncated)
            qinfo["candidates_truncated"] = n_trunc
            if q_truncated[qi] is not None:
                qinfo["query_truncated"] = {"tokens_total": q_truncated[qi], "tokens_used": q_limit}
            out.append(Scores(values=values, truncations=reports[qi],
                              cost=Cost(calls=calls, prompt_tokens=tokens), info=qinfo))
        return out
