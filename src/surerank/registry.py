"""One registry: ranker name → factory, from an explicit table plus third-party entry points.

Nothing here guesses a ranker from a model name: the user names the ranker, and passes the model as an
option.  Targets are import strings, so listing the registry imports no backend.
Third-party packages register rankers under the entry-point group ``surerank.rankers``
(``name = "package.module:RankerClass"``).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from surerank.errors import MissingDependencyError, UnknownRankerError

logger = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "surerank.rankers"


@dataclass(frozen=True)
class RankerSpec:
    name: str
    target: str
    summary: str
    requires: tuple[str, ...] = ()
    extra: str | None = None

    def missing(self) -> list[str]:
        """Importable module names this ranker needs that are not installed."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def load(self) -> type:
        absent = self.missing()
        if absent:
            hint = f"pip install 'surerank[{self.extra}]'" if self.extra else f"pip install {' '.join(absent)}"
            raise MissingDependencyError(f"ranker {self.name!r} needs {', '.join(absent)}: {hint}")
        module_name, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module_name), attr)


_BUILTIN: dict[str, RankerSpec] = {
    spec.name: spec
    for spec in [
        RankerSpec("bm25", "surerank.rankers.bm25:BM25Ranker",
                   "BM25 over the candidate texts (bm25s)", ("bm25s",)),
        RankerSpec("embedding", "surerank.rankers.encoders.embedding:EmbeddingRanker",
                   "bi-encoder cosine; default all-MiniLM-L6-v2 on ONNX Runtime",
                   ("onnxruntime", "tokenizers")),
        RankerSpec("cross-encoder", "surerank.rankers.encoders.cross_encoder:CrossEncoderRanker",
                   "sequence-classification reranker (ONNX Runtime or torch)",
                   ("onnxruntime", "tokenizers")),
        RankerSpec("first-stage", "surerank.rankers.first_stage:FirstStageRanker",
                   "the retriever's own scores (metadata field) or input order"),
        RankerSpec("fusion", "surerank.rankers.fusion:FusionRanker",
                   "fuses other rankers: RRF, CombSUM, CombMNZ"),
        RankerSpec("llm-pointwise", "surerank.rankers.llm.pointwise:PointwiseLLMRanker",
                   "LLM yes/no log-odds or fine-grained 0..k grade per passage", extra="llm"),
        RankerSpec("llm-query-likelihood", "surerank.rankers.llm.pointwise:QueryLikelihoodRanker",
                   "LLM query likelihood log P(query | passage) (UPR)", extra="llm"),
        RankerSpec("llm-pairwise", "surerank.rankers.llm.pairwise:PairwiseLLMRanker",
                   "LLM pairwise, both orders debiased, sparse pair sampling, aggregated", extra="llm"),
        RankerSpec("llm-setwise", "surerank.rankers.llm.setwise:SetwiseLLMRanker",
                   "LLM setwise heap sort, stops after the top k", extra="llm"),
        RankerSpec("llm-listwise", "surerank.rankers.llm.listwise:ListwiseLLMRanker",
                   "LLM listwise sliding window; permutation self-consistency option", extra="llm"),
        RankerSpec("llm-first", "surerank.rankers.llm.listwise:FirstLLMRanker",
                   "LLM listwise windows ordered by first-identifier logits (FIRST)", extra="llm"),
        RankerSpec("llm-jointrank", "surerank.rankers.llm.jointrank:JointRankLLMRanker",
                   "LLM JointRank: overlapping blocks ranked in parallel, wins aggregated", extra="llm"),
        RankerSpec("t5-reranker", "surerank.rankers.encoders.t5:T5Ranker", "monoT5 / RankT5 first-decoder-step logits (ONNX Runtime on CPU, exported once through torch; or torch)", ("torch", "transformers"), extra="torch"),  # noqa: E501
        RankerSpec("exec", "surerank.rankers.generated.execution:ExecutionRanker",
                   "generated code: run in a sandbox on inference-time tests (CodeT, MBR-exec, examples)"),
        RankerSpec("coder-reviewer", "surerank.rankers.generated.coder_reviewer:CoderReviewerRanker",
                   "generated code: log p(code | instruction) + log p(instruction | code) via an LLM", extra="llm"),
        RankerSpec("sql-exec", "surerank.rankers.generated.execution:SqlExecutionRanker",
                   "generated SQL: run read-only on SQLite, ranked by result-set support"),
        RankerSpec("mbr", "surerank.rankers.generated.mbr:MBRRanker",
                   "generated text: minimum Bayes risk, expected utility (chrF/BLEU need [generation])"),
        RankerSpec("qe", "surerank.rankers.generated.qe:QERanker",
                   "generated text: quality estimation by any ranker, or tuned feature weights"),
        RankerSpec("vote", "surerank.rankers.generated.vote:VoteRanker",
                   "generated answers: self-consistency majority vote over normalised answers"),
    ]
}
_REGISTERED: dict[str, RankerSpec] = {}


def register(spec: RankerSpec) -> None:
    """Register a ranker at run time (tests, notebooks); entry points are the packaged way."""
    _REGISTERED[spec.name] = spec


def _entry_point_specs() -> dict[str, RankerSpec]:
    specs = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        specs[ep.name] = RankerSpec(ep.name, ep.value, f"third-party ranker from {ep.value}")
    return specs


def all_specs() -> dict[str, RankerSpec]:
    return {**_entry_point_specs(), **_BUILTIN, **_REGISTERED}


def get_spec(name: str) -> RankerSpec:
    specs = all_specs()
    if name not in specs:
        known = ", ".join(sorted(specs))
        raise UnknownRankerError(f"unknown ranker {name!r}; known rankers: {known}")
    return specs[name]


def create(name: str, **options: Any) -> Any:
    """Instantiate the ranker registered under ``name`` with its options."""
    cls = get_spec(name).load()
    logger.debug("creating ranker %s with %s", name, options)
    return cls(**options)
