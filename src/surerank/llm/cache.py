"""A cache of model judgments keyed by model + request hash: reruns and ablations cost no calls.

In memory by default; give a path for an on-disk sqlite file shared across runs (thread-safe, one writer).
Only successful answers are stored.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from surerank.llm.types import LLMResponse


class JudgmentCache:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = str(path) if path is not None else ":memory:"
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS judgments (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.commit()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> LLMResponse | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM judgments WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        response = LLMResponse.from_json(json.loads(row[0]))
        response.cached = True
        return response

    def put(self, key: str, response: LLMResponse) -> None:
        if not response.ok:
            return
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO judgments VALUES (?, ?)",
                             (key, json.dumps(response.to_json())))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM judgments").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
