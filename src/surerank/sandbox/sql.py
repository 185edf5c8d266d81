"""Run untrusted SQL against a SQLite database that it cannot change, under a time and row limit.

The database is opened read-only through a URI (``mode=ro``) with ``PRAGMA query_only`` on top, so a
``DROP TABLE`` or ``INSERT`` fails instead of running; a progress handler interrupts a query past its time
limit (a never-ending recursive CTE); rows beyond ``max_rows`` are not fetched and the result says so.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from surerank.errors import InputError

SqlStatus = Literal["ok", "error", "timeout", "row_limit"]
PROGRESS_EVERY = 1000  # SQLite virtual-machine instructions between deadline checks


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


def run_sql(database: str | Path, query: str, time_limit: float = 2.0, max_rows: int = 10_000) -> SqlResult:
    """Run one query read-only; never raises for the query's own faults (they are the result's status)."""
    path = Path(database)
    if not path.is_file():
        raise InputError(f"database: {path} is not a file")
    if not isinstance(query, str):
        raise InputError(f"query: must be a string, got {type(query).__name__}")
    uri = f"{path.resolve().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=time_limit, check_same_thread=False)
    started = time.monotonic()
    deadline = started + time_limit
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), PROGRESS_EVERY)
    try:
        conn.execute("PRAGMA query_only = ON")
        cursor = conn.execute(query)
        rows = cursor.fetchmany(max_rows + 1)
        columns = [d[0] for d in cursor.description or []]
        if len(rows) > max_rows:
            return SqlResult("row_limit", columns, rows[:max_rows], f"more than {max_rows} rows; the first kept",
                             time.monotonic() - started)
        return SqlResult("ok", columns, [tuple(r) for r in rows], "", time.monotonic() - started)
    except sqlite3.OperationalError as exc:
        elapsed = time.monotonic() - started
        if "interrupted" in str(exc):
            return SqlResult("timeout", detail=f"stopped at the time limit of {time_limit:g} s", seconds=elapsed)
        return SqlResult("error", detail=str(exc), seconds=elapsed)
    except (sqlite3.Error, sqlite3.Warning, ValueError) as exc:  # several statements, bad parameters, ...
        return SqlResult("error", detail=f"{type(exc).__name__}: {exc}", seconds=time.monotonic() - started)
    finally:
        conn.close()
