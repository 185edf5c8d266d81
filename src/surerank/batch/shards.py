"""Shards: disjoint groups of whole queries, the unit of work, of progress and of restart.

A shard travels as an Arrow table of pair rows ``(shard, qid, query, docid, text, n)``, grouped by query
(``n`` is the query's candidate count, so a worker can check it received every candidate of each query
before ranking them together).  Both engines call :func:`rank_table` on exactly these tables, so the
ranker sees the same inputs whichever engine runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from surerank.errors import InputError
from surerank.types import Candidate, Query

SHARD_COLUMNS = ("shard", "qid", "query", "docid", "text", "n")


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


def rank_table(ranker: Any, table: Any, keep_text: bool = False) -> Any:
    """Rank every query of a shard table with ``ranker.rank_many``; one result row per pair, best first."""
    import pyarrow as pa

    shard_ids = set(table.column("shard").to_pylist())
    if len(shard_ids) != 1:
        raise RuntimeError(f"a batch must hold exactly one shard, got shards {sorted(shard_ids)}")
    shard = shard_ids.pop()
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
    return pa.table(cols, schema=result_schema(keep_text))
