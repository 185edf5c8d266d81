"""Engines that turn shard tables into ranked result tables: in this process, or on Ray Data.

Both call :func:`surerank.batch.shards.rank_table` on whole shards, so a ranker sees the same queries in
the same grouping under either engine and their outputs agree.  Results go back to the caller shard by
shard through ``on_result``; the caller writes shard files and the manifest (only the driver writes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surerank.batch.shards import rank_table
from surerank.errors import MissingDependencyError, SureRankError

logger = logging.getLogger(__name__)

ResultCallback = Callable[[int, Any], None]


@dataclass
class RankerConfig:
    """A ranker as a name plus options, so each worker can build its own copy once."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Any:
        """A registered name, or ``package.module:Class`` for a ranker class that is not registered."""
        if ":" in self.name:
            import importlib

            module_name, _, attr = self.name.partition(":")
            try:
                cls = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as error:
                raise SureRankError(f"--ranker {self.name!r}: cannot import it ({error})") from error
            return cls(**self.options)
        from surerank import Reranker

        return Reranker(self.name, **self.options)


def run_local(
    tables: Sequence[tuple[int, Any]], ranker: RankerConfig, keep_text: bool, on_result: ResultCallback
) -> None:
    """Rank shard after shard in this process, with one ranker built once."""
    model = ranker.build()
    for shard_id, table in tables:
        on_result(shard_id, rank_table(model, table, keep_text))


class SureRankShardRanker:
    """Ray Data stateful UDF: builds the ranker once per actor, then ranks one whole shard per call."""

    def __init__(self, ranker_name: str, ranker_options: dict[str, Any], keep_text: bool) -> None:
        import os

        self.ranker = RankerConfig(ranker_name, ranker_options).build()
        self.keep_text = keep_text
        logger.info("actor pid %d built ranker %s", os.getpid(), ranker_name)

    def __call__(self, batch: Any) -> Any:
        return rank_table(self.ranker, batch, self.keep_text)


@dataclass
class RayOptions:
    actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    address: str | None = None
    local_cpus: int | None = None
    progress_bars: bool = False


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # the Data library is a separate extra of ray
    except ImportError as error:
        raise MissingDependencyError.for_extra("ray[data]", "ray", "--engine ray") from error
    return ray


def run_ray(
    tables: Sequence[tuple[int, Any]], ranker: RankerConfig, keep_text: bool, on_result: ResultCallback,
    options: RayOptions,
) -> None:
    """Rank shards with ``map_batches`` over a pool of stateful actors; results stream back per shard.

    Each shard is one Arrow block and ``batch_size=None`` hands each block whole to one call, so a query's
    candidates are ranked together (``rank_table`` checks it).  If an actor dies, Ray Data restarts it and
    retries the shard; rows seen twice are dropped here by (qid, docid), so each pair is written once.
    """
    if not tables:
        return
    if options.actors < 1:
        raise SureRankError(f"--actors must be at least 1, got {options.actors}")
    ray = _import_ray()
    started_here = False
    if not ray.is_initialized():
        if options.address:
            ray.init(address=options.address, log_to_driver=False, runtime_env=ray_runtime_env())
        else:
            ray.init(num_cpus=options.local_cpus, include_dashboard=False, log_to_driver=False,
                     runtime_env=ray_runtime_env())
            started_here = True
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = options.progress_bars
        expected = {shard_id: table.num_rows for shard_id, table in tables}
        dataset = ray.data.from_arrow([table for _, table in tables])
        ranked = dataset.map_batches(
            SureRankShardRanker,
            fn_constructor_kwargs={"ranker_name": ranker.name, "ranker_options": ranker.options,
                                   "keep_text": keep_text},
            batch_size=None,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=options.actors),
            num_cpus=options.cpus_per_actor,
            num_gpus=options.gpus_per_actor or None,
        )
        import pyarrow as pa
        import pyarrow.compute as pc

        partial: dict[int, list[Any]] = {}
        seen: dict[int, set[tuple[str, str]]] = {}
        finished: set[int] = set()
        duplicates = 0
        for block in ranked.iter_batches(batch_size=None, batch_format="pyarrow"):
            for shard_id in sorted(set(block.column("shard").to_pylist())):
                part = block.filter(pc.equal(block.column("shard"), shard_id))
                if shard_id in finished or shard_id not in expected:
                    duplicates += part.num_rows
                    continue
                keys = seen.setdefault(shard_id, set())
                qids, docids = part.column("qid").to_pylist(), part.column("docid").to_pylist()
                new_pairs = list(zip(qids, docids, strict=True))
                fresh = [i for i, pair in enumerate(new_pairs) if pair not in keys]
                duplicates += part.num_rows - len(fresh)
                if len(fresh) != part.num_rows:
                    part = part.take(fresh)
                keys.update(new_pairs)
                partial.setdefault(shard_id, []).append(part)
                if len(keys) == expected[shard_id]:
                    finished.add(shard_id)
                    result = pa.concat_tables(partial.pop(shard_id))
                    seen.pop(shard_id)
                    on_result(shard_id, result)
        if duplicates:
            logger.warning("dropped %d result rows that Ray delivered twice (retried tasks)", duplicates)
        missing = sorted(set(expected) - finished)
        if missing:
            raise SureRankError(f"Ray returned incomplete results for shards {missing[:10]}; rerun the same "
                                "command to redo them")
    except Exception as error:
        if isinstance(error, SureRankError):
            raise
        cause = _user_error(error)
        if cause is not None:
            raise cause from error
        raise
    finally:
        if started_here:
            ray.shutdown()


def ray_runtime_env() -> dict[str, Any] | None:
    """The job-level runtime env for ``ray.init``: ship surerank itself when it runs from a source tree.

    An installed surerank (``pip install surerank[ray]`` on every node) needs nothing; a source checkout
    is uploaded to the workers as a ``py_modules`` entry.  Callers that run ``ray.init`` themselves
    before using the Ray engine should pass this too.
    """
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("surerank")
    except PackageNotFoundError:
        import surerank

        return {"py_modules": [str(Path(surerank.__file__).parent)]}
    return None


def _user_error(error: BaseException) -> SureRankError | None:
    """Unwrap a SureRankError raised inside a Ray worker, so the CLI prints it as a user error."""
    seen = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, SureRankError):
            return current
        current = current.__cause__ or current.__context__
    return None
