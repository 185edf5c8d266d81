"""The Ray runner: shard tables ranked on Ray Data by a pool of model actors.

It calls :func:`surerank.batch.shards.rank_table` on whole shards, as the local runner
(:mod:`surerank.batch.local_runner`) does, so their outputs agree.  Results go back to the caller shard by
shard through ``on_result``; the caller writes shard files and the manifest (only the driver writes).

Failures are bounded and named: a ranker that raises stops the job with a
:class:`~surerank.batch.shards.ShardFailedError` naming the shard and the pair (no retry: the same input
raises again); a model actor that dies is restarted and its shard retried at most
``RayOptions.max_retries`` times, then the job stops naming the shard and, when the retries could narrow
it down, the query and candidate it died on.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import surerank
from surerank.batch.local_runner import RankerConfig, ResultCallback
from surerank.batch.shards import (
    ShardFailedError,
    query_slices,
    rank_shard,
    rank_table,
    seconds_of,
    shard_failure,
    shard_of,
    table_to_queries,
    with_seconds,
)
from surerank.errors import MissingDependencyError, SureRankError
from surerank.types import Query

logger = logging.getLogger(__name__)


class ShardTracker:
    """A small Ray actor that hears from the model actors which shard, query and candidate they are on.

    A model actor that dies takes its own state with it; this record survives, so after the last retry the
    driver can name what killed it, and a retry can tell that it is one (and narrow the crash down).
    """

    def __init__(self) -> None:
        self.shards: dict[int, dict[str, Any]] = {}

    def begin(self, shard: int, pid: int) -> dict[str, Any]:
        state = self.shards.setdefault(shard, {"attempts": 0, "pids": [], "open": False, "at": None,
                                               "suspect_query": None})
        if state["open"] and state["at"] is not None and state["at"][1] is None:
            state["suspect_query"] = state["at"][0]  # the last attempt died inside this query
        state["attempts"] += 1
        state["pids"].append(pid)
        state["open"] = True
        state["at"] = None
        return dict(state)

    def at(self, shard: int, qid: str, docid: str | None) -> None:
        self.shards[shard]["at"] = (qid, docid)

    def end(self, shard: int) -> None:
        self.shards[shard]["open"] = False

    def report(self) -> dict[int, dict[str, Any]]:
        return self.shards


class SureRankShardRanker:
    """Ray Data stateful UDF: builds the ranker once per actor, then ranks one whole shard per call.

    A first attempt ranks the shard whole, as the local engine does.  A retry (the actor died on this shard
    before) ranks it query by query, telling the tracker each query first; a further retry first ranks
    the suspect query's candidates one by one, so a crash that repeats names its query, then its pair.
    """

    def __init__(self, ranker_name: str, ranker_options: dict[str, Any], keep_text: bool,
                 tracker: Any = None) -> None:
        self.ranker = RankerConfig(ranker_name, ranker_options).build()
        self.keep_text = keep_text
        self.tracker = tracker
        self.pid = os.getpid()
        logger.info("actor pid %d built ranker %s", self.pid, ranker_name)

    def __call__(self, batch: Any) -> Any:
        if self.tracker is None:
            return rank_shard(self.ranker, batch, self.keep_text)
        import ray

        shard = shard_of(batch)
        state = ray.get(self.tracker.begin.remote(shard, self.pid))
        try:
            if state["attempts"] == 1:
                result = rank_table(self.ranker, batch, self.keep_text)
            else:
                logger.warning("shard %d: attempt %d after the model actor died on it; ranking it query by "
                               "query", shard, state["attempts"])
                result = self._rank_traced(batch, shard, state.get("suspect_query"))
        except Exception as error:
            raise shard_failure(self.ranker, batch, error) from error
        self.tracker.end.remote(shard)
        return result

    def _rank_traced(self, batch: Any, shard: int, suspect: str | None) -> Any:
        """Query by query, each announced to the tracker first; a suspect query's candidates probed alone."""
        import pyarrow as pa
        import ray

        parts, seconds = [], 0.0
        for qid, part in query_slices(batch):
            if qid == suspect:
                (query,) = table_to_queries(part)
                for candidate in query.candidates:
                    ray.get(self.tracker.at.remote(shard, qid, candidate.id))
                    self.ranker.rank_many([Query(text=query.text, candidates=(candidate,), id=qid)])
            ray.get(self.tracker.at.remote(shard, qid, None))
            ranked = rank_table(self.ranker, part, self.keep_text)
            seconds += seconds_of(ranked) or 0.0
            parts.append(ranked.replace_schema_metadata(None))
        return with_seconds(pa.concat_tables(parts), seconds)


@dataclass
class RayOptions:
    actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    address: str | None = None
    local_cpus: int | None = None
    progress_bars: bool = False
    max_retries: int = 2  # restarts of a dead model actor, and retries of the shard it was ranking


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
    retries the shard, at most ``options.max_retries`` times (Ray Data's default is forever); rows seen
    twice are dropped here by (qid, docid), so each pair is written once.
    """
    if not tables:
        return
    if options.actors < 1:
        raise SureRankError(f"--actors must be at least 1, got {options.actors}")
    if options.max_retries < 0:
        raise SureRankError(f"--max-retries must be 0 or more, got {options.max_retries}")
    ray = _import_ray()
    started_here = _start_ray(ray, options)
    tracker = None
    try:
        with _data_context(ray, options.progress_bars):
            tracker = ray.remote(num_cpus=0, max_restarts=0)(ShardTracker).remote()
            collector = ShardCollector({shard_id: table.num_rows for shard_id, table in tables}, on_result)
            ranked = _ranked_dataset(ray, tables, ranker, keep_text, tracker, options)
            for block in ranked.iter_batches(batch_size=None, batch_format="pyarrow"):
                collector.add(block)
            collector.finish()
    except Exception as error:
        named = _named_failure(ray, tracker, error, options.max_retries)
        if named is None:
            raise
        raise named from error
    finally:
        if tracker is not None:
            ray.kill(tracker)
        if started_here:
            ray.shutdown()


def _start_ray(ray: Any, options: RayOptions) -> bool:
    """Join the cluster at ``options.address``, or start a local one; True when this call started it."""
    if ray.is_initialized():
        return False
    if options.address:
        ray.init(address=options.address, log_to_driver=False, runtime_env=ray_runtime_env())
        return False
    ray.init(num_cpus=options.local_cpus, include_dashboard=False, log_to_driver=False,
             runtime_env=ray_runtime_env())
    return True


@contextmanager
def _data_context(ray: Any, progress_bars: bool) -> Iterator[None]:
    """Ray Data settings for one job, restored afterwards (the context is process-wide)."""
    context = ray.data.DataContext.get_current()
    settings = {"enable_progress_bars": progress_bars,
                "max_errored_blocks": 0,  # a failed shard stops the job; it is never skipped
                "raise_original_map_exception": True}  # our ShardFailedError, not "UDF failed" (Ray >= 2.4x)
    saved = {name: getattr(context, name) for name in settings if hasattr(context, name)}
    try:
        for name in saved:
            setattr(context, name, settings[name])
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)


def _ranked_dataset(ray: Any, tables: Sequence[tuple[int, Any]], ranker: RankerConfig, keep_text: bool,
                    tracker: Any, options: RayOptions) -> Any:
    dataset = ray.data.from_arrow([table for _, table in tables])
    return dataset.map_batches(
        SureRankShardRanker,
        fn_constructor_kwargs={"ranker_name": ranker.name, "ranker_options": ranker.options,
                               "keep_text": keep_text, "tracker": tracker},
        batch_size=None,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=options.actors),
        num_cpus=options.cpus_per_actor,
        num_gpus=options.gpus_per_actor or None,
        # passed through as ray_remote_args (Ray 2.60 warns they go in 2.64 but offers no named
        # parameter yet); without them Ray Data restarts a dying actor forever
        max_restarts=options.max_retries,
        max_task_retries=options.max_retries,
    )


class ShardCollector:
    """Gathers Ray's result blocks into whole shards and hands each on once it is complete.

    A retried task can deliver rows again: they are dropped by (qid, docid) and counted, so each pair
    reaches ``on_result`` exactly once; a shard that never completes is an error naming it.
    """

    def __init__(self, expected: dict[int, int], on_result: ResultCallback) -> None:
        self.expected = expected
        self.on_result = on_result
        self.partial: dict[int, list[Any]] = {}
        self.seen: dict[int, set[tuple[str, str]]] = {}
        self.finished: set[int] = set()
        self.duplicates = 0

    def add(self, block: Any) -> None:
        import pyarrow.compute as pc

        for shard_id in sorted(set(block.column("shard").to_pylist())):
            part = block.filter(pc.equal(block.column("shard"), shard_id))
            if shard_id in self.finished or shard_id not in self.expected:
                self.duplicates += part.num_rows
            else:
                self._add_part(shard_id, part)

    def _add_part(self, shard_id: int, part: Any) -> None:
        keys = self.seen.setdefault(shard_id, set())
        pairs = list(zip(part.column("qid").to_pylist(), part.column("docid").to_pylist(), strict=True))
        fresh = [i for i, pair in enumerate(pairs) if pair not in keys]
        self.duplicates += part.num_rows - len(fresh)
        if len(fresh) != part.num_rows:
            part = part.take(fresh)
        keys.update(pairs)
        self.partial.setdefault(shard_id, []).append(part)
        if len(keys) == self.expected[shard_id]:
            self._complete(shard_id)

    def _complete(self, shard_id: int) -> None:
        import pyarrow as pa

        self.finished.add(shard_id)
        self.seen.pop(shard_id)
        parts = self.partial.pop(shard_id)
        seconds = seconds_of(parts[0])
        result = pa.concat_tables([p.replace_schema_metadata(None) for p in parts])
        self.on_result(shard_id, result if seconds is None else with_seconds(result, seconds))

    def finish(self) -> None:
        if self.duplicates:
            logger.warning("dropped %d result rows that Ray delivered twice (retried tasks)", self.duplicates)
        missing = sorted(set(self.expected) - self.finished)
        if missing:
            raise SureRankError(f"Ray returned incomplete results for shards {missing[:10]}; rerun the same "
                                "command to redo them")


def _named_failure(ray: Any, tracker: Any, error: BaseException, max_retries: int) -> BaseException | None:
    """The error to raise in place of a Ray failure: the user's own error, or the crash named; None: as is."""
    cause = _user_error(error)
    if cause is error:
        return None
    if cause is not None:
        return cause
    if _actor_died(error):
        return _crash_error(ray, tracker, error, max_retries)
    return None


def _actor_died(error: BaseException) -> bool:
    import ray.exceptions

    return any(isinstance(e, ray.exceptions.RayActorError) for e in _chain(error))


def _chain(error: BaseException) -> list[BaseException]:
    """The error and every error behind it: ``__cause__``, ``__context__`` and Ray's ``cause``."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [error]
    while todo:
        current = todo.pop(0)
        if any(current is e for e in seen):
            continue
        seen.append(current)
        todo += [e for e in (current.__cause__, current.__context__, getattr(current, "cause", None))
                 if isinstance(e, BaseException)]
    return seen


def _crash_error(ray: Any, tracker: Any, error: BaseException, max_retries: int) -> ShardFailedError:
    """Name the shard (and the query / candidate, if the retries narrowed it down) whose actor kept dying."""
    died = next(e for e in _chain(error) if isinstance(e, ray.exceptions.RayActorError))
    text = str(died)
    detail = re.search(r"Worker exit detail: ([^.]*\.)", text)
    why = f"{type(died).__name__}: {(detail.group(1) if detail else text.splitlines()[0]).strip()}"
    try:
        report = ray.get(tracker.report.remote(), timeout=30) if tracker is not None else {}
    except Exception:  # the tracker is gone too: name no shard rather than guess
        report = {}
    open_shards = sorted(((s, r) for s, r in report.items() if r["open"]),
                         key=lambda item: -item[1]["attempts"])
    limit = (f"stopped after --max-retries {max_retries} (restarts of the model actor and retries of its "
             "shard)")
    if not open_shards:
        return ShardFailedError(f"a model actor died ({why}); {limit}")
    shard, state = open_shards[0]
    tied = [s for s, r in open_shards if r["attempts"] == state["attempts"]]
    if len(tied) > 1:  # e.g. --max-retries 0 with several actors: each was on a shard when one died
        return ShardFailedError(f"a model actor died ({why}) while shards {tied} were being ranked; {limit}")
    qid, docid = state["at"] if state["at"] else (state.get("suspect_query"), None)
    pair = ""
    if qid is not None:
        pair = f", on query {qid!r}" + (f", candidate {docid!r}" if docid is not None else "")
    return ShardFailedError(
        f"shard {shard}: the model actor died {state['attempts']} time(s) while ranking it{pair} ({why}); "
        f"{limit}", shard, qid, docid)


def ray_runtime_env() -> dict[str, Any] | None:
    """The job-level runtime env for ``ray.init``: ship surerank itself when it runs from a source tree.

    An installed surerank (``pip install surerank[ray]`` on every node) needs nothing; a source checkout
    is uploaded to the workers as a ``py_modules`` entry.  Callers that run ``ray.init`` themselves
    before using the Ray engine should pass this too.
    """
    try:
        distribution("surerank")
    except PackageNotFoundError:
        return {"py_modules": [str(Path(surerank.__file__).parent)]}
    return None


def _user_error(error: BaseException) -> SureRankError | None:
    """Unwrap a SureRankError raised inside a Ray worker, so the CLI prints it as a user error.

    Ray re-raises it as a ``RayTaskError(ShardFailedError)`` whose text is the worker's traceback; the
    original, with its own message and fields, is behind it (``cause``).
    """
    from ray.exceptions import RayError

    return next((e for e in _chain(error) if isinstance(e, SureRankError) and not isinstance(e, RayError)),
                None)
