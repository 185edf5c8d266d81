"""The inference engine shared by the embedding and cross-encoder rankers.

Flow: texts → bulk tokenization (once per distinct text) → sequences (views on token arrays) →
length-sorted token-budget batches → backend → outputs scattered back to input order.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from collections.abc import Sequence as Seq
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from queue import Queue
from typing import Any

import numpy as np

from surerank.engine.checkpoint.files import ModelFiles, read_model_files
from surerank.engine.checkpoint.locate import resolve_model_dir
from surerank.engine.checkpoint.transformers_load import refuse_remote_code
from surerank.engine.runtime.backends import make_backend
from surerank.engine.text.batching import Batch, build_batch, plan_batches
from surerank.engine.text.tokenize import Sequence, TokenizerEngine
from surerank.errors import InputError

logger = logging.getLogger(__name__)

# CPU: one batch per core at a time, small batches (cache-resident activations); GPU: large token budgets.
# int8 runs one sequence per batch: dynamic quantisation scales activations per tensor, so in a batch of
# several a passage's score would depend on its batch mates (measured up to 0.04 in cosine); alone, it
# is the same whatever else is ranked, and with a batch per core it was also the fastest (DL19, 2 cores:
# 324 sequences/s vs 271 with batches of 8 on two intra-op threads).
CPU_MAX_BATCH = 4
CPU_INT8_MAX_BATCH = 1
CPU_TOKEN_BUDGET = 4 * 256
GPU_MAX_BATCH = 2048
GPU_TOKEN_BUDGET = 262_144


@dataclass
class RunStats:
    """What one engine run did: sequences, real and padded tokens, model calls, wall time."""

    sequences: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    batches: int = 0
    seconds: float = 0.0
    oom_retries: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class EngineConfig:
    model: str | None = None
    head: str = "mean"
    backend: str = "onnx"
    precision: str = "fp32"
    device: str | None = None
    max_length: int | None = None
    batch_size: int | None = None
    token_budget: int | None = None
    threads: int | None = None
    workers: int | None = None
    onnx_path: str | None = None
    trust_remote_code: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Engine:
    """Tokenizer + backend + batch planner for one checkpoint and head."""

    def __init__(self, config: EngineConfig, files: ModelFiles | None = None):
        self.config = config
        self.files = files or read_model_files(resolve_model_dir(config.model))
        # the tokenizer runs from tokenizer.json alone: only the model's own code needs the permission
        refuse_remote_code(str(self.files.directory), config.trust_remote_code, ("config.json",))
        self.tokenizer = TokenizerEngine(self.files.directory / "tokenizer.json", lowercase=self.files.lowercase)
        model_max = self.files.max_length
        self.max_length = int(config.max_length or model_max)
        if self.max_length < 8:
            raise InputError(f"max_length: {self.max_length} is too small (minimum 8 tokens)")
        # families such as RoBERTa, XLM-R and MPNet count positions from padding_idx + 1
        self.position_offset: int | None = self.files.position_offset
        position_limit = self.files.position_limit
        if position_limit is not None and self.max_length > position_limit:
            raise InputError(
                f"max_length: {self.max_length} exceeds the model's {position_limit} position embeddings")
        self.backend = make_backend(self.files, config.head, config.backend, config.precision,
                                    config.device, config.threads, config.onnx_path, config.workers,
                                    trust_remote_code=config.trust_remote_code)
        on_gpu = str(getattr(self.backend, "device", "cpu")).startswith("cuda")
        # the resolved precision ("auto" becomes fp32 or int8-fast when the backend loads)
        cpu_batch = CPU_INT8_MAX_BATCH if self.backend.precision.startswith("int8") else CPU_MAX_BATCH
        self.max_batch = int(config.batch_size or (GPU_MAX_BATCH if on_gpu else cpu_batch))
        self.token_budget = int(config.token_budget or (GPU_TOKEN_BUDGET if on_gpu else
                                                        max(CPU_TOKEN_BUDGET, self.max_length)))
        if self.max_batch < 1 or self.token_budget < 1:
            raise InputError("batch_size and token_budget must be positive")
        self.on_gpu = on_gpu
        self.workers = 1 if on_gpu else int(getattr(self.backend, "workers", 1))
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.last_stats = RunStats()

    # -- description -------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        info = {
            "model": str(self.config.model or "all-MiniLM-L6-v2"),
            "model_dir": str(self.files.directory),
            "backend": self.backend.name,
            "precision": self.backend.precision,
            "device": getattr(self.backend, "device", "cpu"),
            "max_length": self.max_length,
            "max_length_source": "max_length option" if self.config.max_length
            else self.files.sources.get("max_length", ""),
            "batch_size": self.max_batch,
            "token_budget": self.token_budget,
            "threads": getattr(self.backend, "threads", None),
            "workers": self.workers,
            # a sequence's output does not depend on what else shares its batch (fp32: to ~1e-6; int8 only
            # alone in its batch; fp16/bf16 kernels round differently with the batch's shape)
            "batch_invariant": self.backend.precision == "fp32"
            or (self.backend.precision.startswith("int8") and self.max_batch == 1),
        }
        if self.backend.precision.startswith("int8"):
            info["fp32_nodes"] = list(getattr(self.backend, "fp32_nodes", []))
        auto = getattr(self.backend, "auto", None)
        if auto is not None:  # precision="auto": the drift figure, the bound and the choice
            info["precision_auto"] = dict(auto)
        return info

    # -- running -------------------------------------------------------------------------------
    def run(self, seqs: Seq[Sequence]) -> np.ndarray:
        """Run every sequence through the model; rows of the result follow the input order."""
        return self.run_with_stats(seqs)[0]

    def run_with_stats(self, seqs: Seq[Sequence]) -> tuple[np.ndarray, RunStats]:
        """:meth:`run`, plus this call's statistics (safe when threads share the engine)."""
        stats = RunStats(sequences=len(seqs))
        start = time.perf_counter()
        if not seqs:
            self.last_stats = stats
            return np.zeros((0, 0), np.float32), stats
        lengths = [s.length for s in seqs]
        too_long = [i for i, n in enumerate(lengths) if n > self.max_length]
        if too_long:  # the rankers cut sequences to max_length; this is a guard against misuse
            raise InputError(f"sequence {too_long[0]} has {lengths[too_long[0]]} tokens > max_length "
                             f"{self.max_length}")
        plan = plan_batches(lengths, self.max_batch, self.token_budget)
        out: np.ndarray | None = None
        for batch, result in self._results(seqs, plan, stats):
            if out is None:
                out = np.zeros((len(seqs), result.shape[1]), dtype=np.float32)
            out[batch.index] = result
            stats.batches += 1
            stats.tokens += batch.tokens
            stats.padded_tokens += batch.padded_tokens
        stats.seconds = time.perf_counter() - start
        self.last_stats = stats
        assert out is not None
        return out, stats

    def _build(self, seqs: Seq[Sequence], index: np.ndarray) -> Batch:
        t = self.tokenizer
        return build_batch(seqs, index, t.pad_id, t.template.second_type_id, self.position_offset)

    def _results(self, seqs: Seq[Sequence], plan: list[np.ndarray], stats: RunStats
                 ) -> Iterator[tuple[Batch, np.ndarray]]:
        """(batch, model output) pairs; on CPU with several workers, batches run side by side."""
        if self.workers <= 1 or len(plan) <= 1:
            for batch in self._batches(seqs, plan):
                yield batch, self._run_with_retry(batch, stats)
            return

        def work(index: np.ndarray) -> tuple[Batch, np.ndarray]:
            batch = self._build(seqs, index)
            return batch, self._run_with_retry(batch, stats)

        # map keeps at most len(plan) futures; results come back in plan order
        yield from self._executor().map(work, plan)

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="surerank-engine")
            return self._pool

    def _batches(self, seqs: Seq[Sequence], plan: list[np.ndarray]) -> Iterator[Batch]:
        """Padded batches in plan order; on GPU the next batch is built while the current one runs."""
        if not self.on_gpu:
            for index in plan:
                yield self._build(seqs, index)
            return
        q: Queue[Batch | BaseException | None] = Queue(maxsize=2)

        def produce() -> None:
            try:
                for index in plan:
                    q.put(self._build(seqs, index))
            except BaseException as exc:  # surfaced in the consumer
                q.put(exc)
            q.put(None)

        threading.Thread(target=produce, daemon=True, name="surerank-batcher").start()
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _run_with_retry(self, batch: Batch, stats: RunStats) -> np.ndarray:
        """Run a batch; on out-of-memory (torch backends) split it in halves and retry."""
        try:
            return self.backend.run(batch)
        except Exception as exc:
            is_oom = getattr(self.backend, "is_oom", None)
            if is_oom is None or not is_oom(exc) or len(batch.index) == 1:
                raise
            stats.oom_retries += 1
            self.backend.empty_cache()
            half = len(batch.index) // 2
            self.max_batch = max(1, min(self.max_batch, half))
            logger.warning("out of memory on a batch of %d; shrinking batches to %d", len(batch.index), half)
            parts = []
            for sl in (slice(0, half), slice(half, None)):
                sub = Batch(
                    index=batch.index[sl], input_ids=batch.input_ids[sl], token_type_ids=batch.token_type_ids[sl],
                    attention_mask=batch.attention_mask[sl],
                    position_ids=None if batch.position_ids is None else batch.position_ids[sl])
                parts.append(self._run_with_retry(sub, stats))
            return np.concatenate(parts, axis=0)


_ENGINES: dict[tuple[Any, ...], Engine] = {}
_LOCK = threading.Lock()


def get_engine(config: EngineConfig) -> Engine:
    """Engines are cached per configuration: loading a session costs far more than a query."""
    key = (config.model, config.head, config.backend, config.precision, config.device, config.max_length,
           config.batch_size, config.token_budget, config.threads, config.workers, config.onnx_path,
           config.trust_remote_code, os.getpid())
    with _LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = Engine(config)
            _ENGINES[key] = engine
        return engine
