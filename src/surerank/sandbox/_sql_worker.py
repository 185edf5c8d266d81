"""Runs untrusted SQL in its own process: standard library only, started as ``python -I _sql_worker.py``.

Reads one JSON job on stdin (database, queries, limits), writes one JSON line per query on stdout, in order.  The
process limits its own address space, CPU time and file writes before it opens the database, so no query can
grow the caller or leave a file behind; inside SQLite an authorizer allows only reads of the given database's
tables and views (no ATTACH/DETACH, no PRAGMA but a few read-only introspection ones, no ``load_extension``), and
``SQLITE_LIMIT_LENGTH`` / ``SQLITE_LIMIT_ATTACHED`` bound a value's size and forbid a second database.
"""

from __future__ import annotations

import json
import resource
import sqlite3
import sys
import time

PROGRESS_EVERY = 1000  # SQLite virtual-machine instructions between deadline checks
ALLOWED_PRAGMAS = {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list"}
DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}
# SQLite's authorizer action codes, by number (sqlite3.h); the module's constants mix them with result codes
ACTION_NAMES = dict(enumerate((
    "", "CREATE_INDEX", "CREATE_TABLE", "CREATE_TEMP_INDEX", "CREATE_TEMP_TABLE", "CREATE_TEMP_TRIGGER",
    "CREATE_TEMP_VIEW", "CREATE_TRIGGER", "CREATE_VIEW", "DELETE", "DROP_INDEX", "DROP_TABLE", "DROP_TEMP_INDEX",
    "DROP_TEMP_TABLE", "DROP_TEMP_TRIGGER", "DROP_TEMP_VIEW", "DROP_TRIGGER", "DROP_VIEW", "INSERT", "PRAGMA", "READ",
    "SELECT", "TRANSACTION", "UPDATE", "ATTACH", "DETACH", "ALTER_TABLE", "REINDEX", "ANALYZE", "CREATE_VTABLE",
    "DROP_VTABLE", "FUNCTION", "SAVEPOINT", "RECURSIVE")))
SELECT, READ, FUNCTION, PRAGMA = sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, \
    sqlite3.SQLITE_PRAGMA
RECURSIVE = getattr(sqlite3, "SQLITE_RECURSIVE", 33)


class Authorizer:
    """Allows reading the main database and nothing else; remembers what it refused, by name."""

    def __init__(self) -> None:
        self.refusals: list[str] = []

    @property
    def refused(self) -> str:
        return "; ".join(self.refusals[:4])

    def __call__(self, action: int, arg1: str | None, arg2: str | None, database: str | None, _source) -> int:
        if action in (SELECT, RECURSIVE):
            return sqlite3.SQLITE_OK
        if action == READ and database in ("main", "temp", None):  # None: a CTE or subquery of this query
            return sqlite3.SQLITE_OK
        if action == FUNCTION and (arg2 or "").lower() not in DENIED_FUNCTIONS:
            return sqlite3.SQLITE_OK
        if action == PRAGMA and (arg1 or "").lower() in ALLOWED_PRAGMAS:
            return sqlite3.SQLITE_OK
        what = " ".join(str(a) for a in (arg1, arg2) if a)
        refusal = f"{ACTION_NAMES.get(action, f'action {action}')}{f' {what}' if what else ''}"
        if (arg1 or "").lower() in ("sqlite_master", "sqlite_schema", "sqlite_temp_master"):
            refusal = f"a change of the schema ({refusal})"  # what DROP / CREATE / ALTER ask for first
        if refusal not in self.refusals:
            self.refusals.append(refusal)
        return sqlite3.SQLITE_DENY


def encode(value):
    """JSON for a SQLite value; a blob becomes {"b": hex} (no SQLite value is otherwise an object)."""
    return {"b": value.hex()} if isinstance(value, (bytes, bytearray, memoryview)) else value


def limit_process(job: dict) -> None:
    cpu = int(job["time_limit"] * len(job["queries"])) + 2
    for which, value in ((resource.RLIMIT_AS, job["memory_bytes"]), (resource.RLIMIT_CPU, cpu),
                         (resource.RLIMIT_FSIZE, 0), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(which, (value, value))


def connect(job: dict) -> sqlite3.Connection:
    conn = sqlite3.connect(job["uri"], uri=True, timeout=job["time_limit"], check_same_thread=False)
    conn.execute("PRAGMA query_only = ON")
    conn.execute("PRAGMA temp_store = MEMORY")  # sorts and CTEs in the limited memory, never in a temp file
    if hasattr(conn, "setlimit"):  # Python >= 3.11
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, job["length_limit"])
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, max(1000, job["sql_length_limit"]))
    return conn


def run_one(conn: sqlite3.Connection, query: str, job: dict) -> dict:
    authorizer = Authorizer()
    conn.set_authorizer(authorizer)
    started = time.monotonic()
    deadline = started + job["time_limit"]
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), PROGRESS_EVERY)
    try:
        cursor = conn.execute(query)
        rows = cursor.fetchmany(job["max_rows"] + 1)
        columns = [d[0] for d in cursor.description or []]
        status = "row_limit" if len(rows) > job["max_rows"] else "ok"
        detail = f"more than {job['max_rows']} rows; the first kept" if status == "row_limit" else ""
        kept = [[encode(v) for v in row] for row in rows[:job["max_rows"]]]
        return {"status": status, "columns": columns, "rows": kept, "detail": detail,
                "seconds": time.monotonic() - started}
    except MemoryError:
        return {"status": "memory_limit", "detail": f"ran out of its memory limit of {job['memory_bytes']} bytes",
                "seconds": time.monotonic() - started}
    except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError) as exc:
        return {**classify(exc, authorizer, job), "seconds": time.monotonic() - started}
    finally:
        conn.set_authorizer(None)
        conn.set_progress_handler(None, PROGRESS_EVERY)


def classify(exc: Exception, authorizer: Authorizer, job: dict) -> dict:
    text = str(exc)
    if authorizer.refused:
        return {"status": "refused", "detail": f"not allowed: {authorizer.refused}"}
    if "interrupted" in text:
        return {"status": "timeout", "detail": f"stopped at the time limit of {job['time_limit']:g} s"}
    if "too big" in text or "out of memory" in text:
        return {"status": "memory_limit", "detail": f"{text} (values are limited to {job['length_limit']} bytes, "
                                                    f"the query to {job['memory_bytes']} bytes of memory)"}
    if isinstance(exc, sqlite3.OperationalError):
        return {"status": "error", "detail": text}
    return {"status": "error", "detail": f"{type(exc).__name__}: {text}"}


def main() -> None:
    job = json.loads(sys.stdin.read())
    limit_process(job)
    out = sys.stdout
    try:
        conn = connect(job)
    except (sqlite3.Error, MemoryError) as exc:  # not a database, unreadable, ...: every query fails alike
        for _ in job["queries"]:
            out.write(json.dumps({"status": "error", "detail": f"cannot open the database: {exc}", "seconds": 0.0})
                      + "\n")
        return
    try:
        for query in job["queries"]:
            out.write(json.dumps(run_one(conn, query, job)) + "\n")
            out.flush()
    finally:
        conn.close()


if __name__ == "__main__":
    main()
