"""Run untrusted SQL against a SQLite database it can only read, in a process of its own with limits.

Each call starts one worker process (``_sql_worker.py``, an isolated interpreter) that limits its own address
space, CPU time and file writes before it opens the database read-only (``mode=ro`` plus ``PRAGMA query_only``);
inside SQLite an authorizer allows only reads of the database's tables and views — ATTACH/DETACH, writing or
path-revealing PRAGMAs and ``load_extension`` are refused by name — and ``SQLITE_LIMIT_LENGTH`` /
``SQLITE_LIMIT_ATTACHED`` bound a value's size and forbid a second database.  A progress handler stops a query
at its time limit (a never-ending recursive CTE) and the caller kills the worker past it; rows beyond
``max_rows`` are not fetched and the result says so; a worker that dies takes only its current query with it.
Nothing a query does can grow the caller's memory beyond ``max_result_bytes`` of decoded result.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from surerank.errors import InputError

SqlStatus = Literal["ok", "error", "timeout", "row_limit", "refused", "memory_limit"]
WORKER = Path(__file__).with_name("_sql_worker.py")
GRACE_SECONDS = 2.0  # beyond a query's time limit before its worker is killed from outside


@dataclass
class SqlResult:
    status: SqlStatus
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    detail: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class SqlLimits:
    """What one query may take.  The defaults suit text-to-SQL benchmarks (Spider, BIRD) on their databases."""

    time_limit: float = 2.0
    max_rows: int = 10_000
    memory_bytes: int = 512 * 2**20  # the worker's address space
    length_limit: int = 10 * 2**20  # SQLITE_LIMIT_LENGTH: the largest string or blob a query may build
    sql_length_limit: int = 1_000_000  # SQLITE_LIMIT_SQL_LENGTH: the longest query text
    max_result_bytes: int = 16 * 2**20  # the encoded result the caller reads of one query

    def __post_init__(self) -> None:
        for name in ("time_limit", "max_rows", "memory_bytes", "length_limit", "sql_length_limit", "max_result_bytes"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise InputError(f"limits.{name}: must be a positive number, got {value!r}")


def run_sql(database: str | Path, query: str, time_limit: float = 2.0, max_rows: int = 10_000,
            limits: SqlLimits | None = None) -> SqlResult:
    """Run one query read-only; never raises for the query's own faults (they are the result's status)."""
    limits = limits or SqlLimits(time_limit=time_limit, max_rows=max_rows)
    return run_sql_many(database, [query], limits)[0]


def run_sql_many(database: str | Path, queries: Sequence[str], limits: SqlLimits | None = None) -> list[SqlResult]:
    """Run several queries one after another in one worker (a fresh worker after one that died)."""
    limits = limits or SqlLimits()
    path = Path(database)
    if not path.is_file():
        raise InputError(f"database: {path} is not a file")
    for i, query in enumerate(queries):
        if not isinstance(query, str):
            raise InputError(f"queries[{i}]: must be a string, got {type(query).__name__}")
    results: list[SqlResult] = []
    while len(results) < len(queries):
        results += _one_worker(path, list(queries[len(results):]), limits)
    return results


def _one_worker(path: Path, queries: list[str], limits: SqlLimits) -> list[SqlResult]:
    """Results of a prefix of ``queries`` (at least one): the worker's lines until it ends or overruns."""
    job = {"uri": f"{path.resolve().as_uri()}?mode=ro", "queries": queries, "time_limit": limits.time_limit,
           "max_rows": limits.max_rows, "memory_bytes": limits.memory_bytes, "length_limit": limits.length_limit,
           "sql_length_limit": limits.sql_length_limit}
    proc = subprocess.Popen([sys.executable, "-I", str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd="/", env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    results: list[SqlResult] = []
    try:
        proc.stdin.write(json.dumps(job).encode())
        proc.stdin.close()
        reader = _LineReader(proc.stdout, limits.max_result_bytes)
        for _ in queries:
            started = time.monotonic()
            line, problem = reader.next_line(limits.time_limit + GRACE_SECONDS)
            if line is None:
                results.append(_failed(problem, proc, limits, time.monotonic() - started))
                break
            results.append(_decode(json.loads(line)))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    return results


def _failed(problem: str, proc: subprocess.Popen, limits: SqlLimits, seconds: float) -> SqlResult:
    """The current query's result when the worker gave no line: overran, answered too much, or died."""
    if problem == "timeout":
        return SqlResult("timeout", detail=f"stopped at the time limit of {limits.time_limit:g} s", seconds=seconds)
    if problem == "too large":
        return SqlResult("memory_limit", detail=f"the result is larger than {limits.max_result_bytes} bytes",
                         seconds=seconds)
    proc.kill()
    proc.wait()
    stderr = proc.stderr.read(1 << 16).decode("utf-8", errors="replace").strip()
    if "MemoryError" in stderr or proc.returncode in (-9, -6):
        return SqlResult("memory_limit", detail=f"ran out of its memory limit of {limits.memory_bytes} bytes",
                         seconds=seconds)
    last = stderr.splitlines()[-1] if stderr else f"the worker ended with exit code {proc.returncode}"
    return SqlResult("error", detail=last[:500], seconds=seconds)


def _decode(record: dict) -> SqlResult:
    rows = [tuple(bytes.fromhex(v["b"]) if isinstance(v, dict) else v for v in row) for row in record.get("rows", [])]
    return SqlResult(record["status"], list(record.get("columns", [])), rows, str(record.get("detail", "")),
                     float(record.get("seconds", 0.0)))


class _LineReader:
    """Reads a pipe line by line with a deadline per line and a cap on a line's size."""

    def __init__(self, pipe, cap: int) -> None:
        self._fd, self._cap = pipe.fileno(), cap
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)

    def next_line(self, seconds: float) -> tuple[str | None, str]:
        deadline = time.monotonic() + seconds
        while b"\n" not in self._buffer:
            if len(self._buffer) > self._cap:
                return None, "too large"
            left = deadline - time.monotonic()
            if left <= 0 or not self._selector.select(left):
                return None, "timeout"
            chunk = os.read(self._fd, 1 << 20)
            if not chunk:
                return None, "ended"
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8"), ""
