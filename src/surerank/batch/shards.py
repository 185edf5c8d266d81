"""Shards: disjoint groups of whole queries, the unit of work, of progress and of restart.

A shard travels as an Arrow table of pair rows ``(shard, qid, query, docid, text, n)``, grouped by query
(``n`` is the query's candidate count, so a worker can check it received every candidate of each query
before ranking them together).  Both engines call :func:`rank_table` on exactly these tables, so the
ranker sees the same inputs whichever engine runs it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from surerank.errors import InputError, SureRankError
from surerank.types import Candidate, Query

SHARD_COLUMNS = ("shard", "qid", "query", "docid", "text", "n")
SECONDS_KEY = b"surerank.seconds"  # result-table schema metadata: the seconds the ranker spent on the shard


class ShardFailedError(SureRankError):
    """A shard could not be ranked: names the shard, the pair when it could be found, and the cause.

    Shards committed before it stay in the manifest, so the same command resumes after the fix.
    """

    def __init__(self, message: str, shard: int | None = None, qid: str | None = None,
                 docid: str | None = None) -> None:
        super().__init__(message)
        self.message, self.shard, self.qid, self.docid = message, shard, qid, docid

    def __str__(self) -> str:  # Ray Data appends retry advice to ``args``; the message stays ours
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:  # keep the fields when Ray pickles it back to the driver
        return (type(self), (self.message, self.shard, self.qid, self.docid))


def plan_shards(queries: Sequence[Query], shard_pairs: int) -> list[list[Query]]:
    """Cut the query list, in input order, into shards of about ``shard_pairs`` pairs; never split a query."""
    if shard_pairs < 1:
        raise InputError(f"--shard-size must be at least 1 pair, got {shard_pairs}")
    shards: list[list[Query]] = []
    current: list[Query] = []
    size = 0
    for query in queries:
        if current and size + len(query.candidates) > shard_pairs:
            shards.append(current)
            current, size = [], 0
        current.append(query)
        size += len(query.candidates)
    if current:
        shards.append(current)
    return shards


def queries_to_table(queries: Sequence[Query], shard: int) -> Any:
    import pyarrow as pa

    cols: dict[str, list[Any]] = {name: [] for name in SHARD_COLUMNS}
    for query in queries:
        n = len(query.candidates)
        for candidate in query.candidates:
            cols["shard"].append(shard)
            cols["qid"].append(query.id)
            cols["query"].append(query.text)
            cols["docid"].append(candidate.id)
            cols["text"].append(candidate.text)
            cols["n"].append(n)
    schema = pa.schema([("shard", pa.int32()), ("qid", pa.string()), ("query", pa.string()),
                        ("docid", pa.string()), ("text", pa.string()), ("n", pa.int32())])
    return pa.table(cols, schema=schema)


def table_to_queries(table: Any) -> list[Query]:
    """Regroup consecutive pair rows into queries, checking that no query arrived incomplete."""
    data = table.select(["qid", "query", "docid", "text", "n"]).to_pydict()
    queries: list[Query] = []
    start = 0
    rows = len(data["qid"])
    while start < rows:
        qid, n = data["qid"][start], data["n"][start]
        end = start
        while end < rows and data["qid"][end] == qid:
            end += 1
        if end - start != n:
            raise RuntimeError(f"query {qid!r}: received {end - start} of its {n} candidates in one batch; "
                               "a query's candidates must be ranked together")
        queries.append(Query(
            text=data["query"][start],
            candidates=tuple(Candidate(id=data["docid"][i], text=data["text"][i]) for i in range(start, end)),
            id=qid,
        ))
        start = end
    return queries


def result_schema(keep_text: bool) -> Any:
    import pyarrow as pa

    fields = [("shard", pa.int32()), ("qid", pa.string()), ("docid", pa.string()), ("rank", pa.int32()),
              ("score", pa.float64())]
    if keep_text:
        fields += [("query", pa.string()), ("text", pa.string())]
    return pa.schema(fields)


def shard_of(table: Any) -> int:
    shard_ids = set(table.column("shard").to_pylist())
    if len(shard_ids) != 1:
        raise RuntimeError(f"a batch must hold exactly one shard, got shards {sorted(shard_ids)}")
    return int(shard_ids.pop())


def seconds_of(table: Any) -> float | None:
    """The ranking seconds :func:`rank_table` recorded in the table's schema metadata, if any."""
    metadata = table.schema.metadata or {}
    return float(metadata[SECONDS_KEY]) if SECONDS_KEY in metadata else None


def with_seconds(table: Any, seconds: float) -> Any:
    return table.replace_schema_metadata({SECONDS_KEY: repr(round(seconds, 4)).encode()})


def rank_shard(ranker: Any, table: Any, keep_text: bool = False) -> Any:
    """:func:`rank_table`, but a failure becomes a :class:`ShardFailedError` naming the shard and the pair.

    To name the pair, the shard is ranked again query by query, then the failing query candidate by
    candidate (at most one more shard's work, spent only after a failure).
    """
    try:
        return rank_table(ranker, table, keep_text)
    except ShardFailedError:
        raise
    except Exception as error:
        raise shard_failure(ranker, table, error) from error


def shard_failure(ranker: Any, table: Any, error: BaseException) -> ShardFailedError:
    shard = shard_of(table)
    qids = table.column("qid").to_pylist()
    span = f"queries {qids[0]!r}..{qids[-1]!r}" if qids else "no queries"
    cause = f"{type(error).__name__}: {error}"
    try:
        queries = table_to_queries(table)
    except Exception:  # the shard itself is malformed: nothing to narrow down
        return ShardFailedError(f"shard {shard} ({span}): {cause}", shard)
    qid, docid = locate_failure(ranker, queries)
    if qid is None:
        where = "; it did not fail again when its queries were ranked one by one (a transient error?)"
    elif docid is None:
        where = f"; it fails on query {qid!r} (no single candidate fails alone)"
    else:
        where = f"; it fails on query {qid!r}, candidate {docid!r}"
    return ShardFailedError(f"shard {shard} ({span}): ranker {getattr(ranker, 'name', ranker)!r} raised "
                            f"{cause}{where}", shard, qid, docid)


def locate_failure(ranker: Any, queries: Sequence[Query]) -> tuple[str | None, str | None]:
    """The first (qid, docid) whose ranking raises: query by query, then that query's candidates alone."""
    for query in queries:
        try:
            ranker.rank_many([query])
        except Exception:
            for candidate in query.candidates:
                try:
                    ranker.rank_many([Query(text=query.text, candidates=(candidate,), id=query.id)])
                except Exception:
                    return query.id, candidate.id
            return query.id, None
    return None, None


def query_slices(table: Any) -> list[tuple[str, Any]]:
    """The shard table cut into one slice per query (rows of a query are contiguous)."""
    qids = table.column("qid").to_pylist()
    slices, start = [], 0
    for i in range(1, len(qids) + 1):
        if i == len(qids) or qids[i] != qids[start]:
            slices.append((qids[start], table.slice(start, i - start)))
            start = i
    return slices


def rank_table(ranker: Any, table: Any, keep_text: bool = False) -> Any:
    """Rank every query of a shard table with ``ranker.rank_many``; one result row per pair, best first.

    The seconds spent ranking go into the result's schema metadata (:func:`seconds_of`).
    """
    import pyarrow as pa

    started = time.perf_counter()
    shard = shard_of(table)
    queries = table_to_queries(table)
    lists = ranker.rank_many(queries)
    cols: dict[str, list[Any]] = {"shard": [], "qid": [], "docid": [], "rank": [], "score": []}
    if keep_text:
        cols.update(query=[], text=[])
    for query, ranked in zip(queries, lists, strict=True):
        if len(ranked.items) != len(query.candidates):
            raise RuntimeError(f"ranker {ranker.name!r} returned {len(ranked.items)} items for the "
                               f"{len(query.candidates)} candidates of query {query.id!r}")
        for item in ranked.items:
            cols["shard"].append(shard)
            cols["qid"].append(query.id)
            cols["docid"].append(item.id)
            cols["rank"].append(item.rank)
            cols["score"].append(float(item.score))
            if keep_text:
                cols["query"].append(query.text)
                cols["text"].append(item.text)
    return with_seconds(pa.table(cols, schema=result_schema(keep_text)), time.perf_counter() - started)
