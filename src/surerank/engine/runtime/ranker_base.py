"""Options and bookkeeping shared by the encoder rankers (embedding, cross-encoder)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from surerank.engine.checkpoint.card import card_summary
from surerank.engine.runtime.core import Engine, EngineConfig, RunStats, get_engine
from surerank.engine.text.passages import PassagePolicy
from surerank.engine.text.tokenize import Sequence
from surerank.errors import InputError
from surerank.ranker import Scores, ScoringRanker
from surerank.types import Query

#: On a GPU, a call with more (query, candidate) pairs than this is cut into groups of about this many:
#: the next group is tokenized and assembled on a helper thread while the current one runs on the device.
GPU_PIPELINE_PAIRS = 32_768

BACKENDS = ("onnx", "torch")
#: "auto" (the default): on ONNX int8-fast where the model's build-time drift check passes, else fp32
#: (surerank.engine.graphs.auto_precision); on torch fp32
PRECISIONS = {"onnx": ("auto", "fp32", "int8", "int8-fast"), "torch": ("auto", "fp32", "fp16", "bf16")}


class Prepared:
    """One group of queries made ready for the engine: the sequences to run and what maps them back."""

    def __init__(self, queries: list[Query], seqs: list[Sequence], state: Any):
        self.queries = queries
        self.seqs = seqs
        self.state = state


class EncoderRanker(ScoringRanker):
    """A score-based ranker running a transformer encoder through :class:`~surerank.engine.Engine`.

    Subclasses turn queries into sequences (:meth:`prepare`) and model outputs into scores
    (:meth:`finish`); :meth:`score` runs them, pipelined on a GPU.
    """

    head = "mean"
    pipeline_pairs = GPU_PIPELINE_PAIRS

    def __init__(
        self,
        model: str | None = None,
        *,
        backend: str = "onnx",
        precision: str = "auto",
        device: str | None = None,
        max_length: int | None = None,
        batch_size: int | None = None,
        token_budget: int | None = None,
        threads: int | None = None,
        long_documents: str = "truncate",
        aggregate: str = "max",
        top_k: int = 3,
        passage_overlap: int | None = None,
        max_passages: int | None = None,
        trust_remote_code: bool = False,
    ):
        if backend not in BACKENDS:
            raise InputError(f"backend: {backend!r} is unknown; choose from {', '.join(BACKENDS)}")
        if precision not in PRECISIONS[backend]:
            raise InputError(f"precision: {precision!r} is not available with backend {backend!r} "
                             f"(choose from {', '.join(PRECISIONS[backend])})")
        if not isinstance(trust_remote_code, bool):
            raise InputError(f"trust_remote_code: must be true or false, got {trust_remote_code!r}")
        for field, value in (("max_length", max_length), ("batch_size", batch_size),
                             ("token_budget", token_budget), ("threads", threads)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InputError(f"{field}: must be a positive integer, got {value!r}")
        self.policy = PassagePolicy(mode=long_documents, aggregate=aggregate, top_k=top_k,
                                    overlap=passage_overlap, max_passages=max_passages)
        self.model = model
        self.engine_config = EngineConfig(
            model=model, head=self._head(), backend=backend, precision=precision, device=device,
            max_length=max_length, batch_size=batch_size, token_budget=token_budget, threads=threads,
            trust_remote_code=trust_remote_code,
        )
        self._engine: Engine | None = None

    def _head(self) -> str:
        return self.head

    @property
    def engine(self) -> Engine:
        """Loaded on first use, then shared by every ranker with the same configuration."""
        if self._engine is None:
            self._engine = get_engine(self.engine_config)
        return self._engine

    def describe(self) -> dict[str, Any]:
        info = {"ranker": self.name, **self.engine.describe(),
                **self.engine.files.content_hash(),  # the model by content (trust artifacts compare it)
                "long_documents": self.policy.mode, "aggregate": self.policy.aggregate}
        if self.policy.aggregate == "topk-mean":
            info["top_k"] = self.policy.top_k
        card = card_summary(self.engine.files.directory)
        if card is not None:  # only when there is one: a trust artifact fitted on a stock model still matches
            info["training_card"] = card
        return info

    def _info(self) -> dict[str, Any]:
        e = self.engine
        return {"model": e.describe()["model"], "backend": e.backend.name, "precision": e.backend.precision,
                "device": getattr(e.backend, "device", "cpu"), "max_length": e.max_length,
                "long_documents": self.policy.strategy}

    # -- scoring -------------------------------------------------------------------------------
    def prepare(self, queries: list[Query]) -> Prepared:
        raise NotImplementedError

    def finish(self, prepared: Prepared, outputs: Any, stats: RunStats) -> list[Scores]:
        raise NotImplementedError

    def score(self, queries: list[Query]) -> list[Scores]:
        engine = self.engine
        groups = self._groups(queries) if engine.on_gpu else [queries]
        if len(groups) == 1:
            prepared = self.prepare(queries)
            outputs, stats = engine.run_with_stats(prepared.seqs)
            return self.finish(prepared, outputs, stats)
        # tokenization (Rust, GIL released) and assembly of group i+1 overlap the device running group i
        out: list[Scores] = []
        with ThreadPoolExecutor(1, thread_name_prefix="surerank-prepare") as pool:
            pending = pool.submit(self.prepare, groups[0])
            for i in range(len(groups)):
                prepared = pending.result()
                if i + 1 < len(groups):
                    pending = pool.submit(self.prepare, groups[i + 1])
                outputs, stats = engine.run_with_stats(prepared.seqs)
                out.extend(self.finish(prepared, outputs, stats))
        return out

    def _groups(self, queries: list[Query]) -> list[list[Query]]:
        """Consecutive groups of whole queries, each with about :attr:`pipeline_pairs` candidates."""
        groups: list[list[Query]] = [[]]
        pairs = 0
        for q in queries:
            if groups[-1] and pairs + len(q.candidates) > self.pipeline_pairs:
                groups.append([])
                pairs = 0
            groups[-1].append(q)
            pairs += len(q.candidates)
        return groups
