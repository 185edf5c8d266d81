"""Rankers the serve tests load by import path in a server subprocess.

``SlowRanker`` makes shutdown and overload observable without timing assertions: it waits on a file
flag, so a test decides when a batch may finish.
"""

from __future__ import annotations

import os
import time

import numpy as np

from surerank.ranker import Scores, ScoringRanker
from surerank.types import Query


class OverlapRanker(ScoringRanker):
    """Counts query words in each candidate: a deterministic reference scorer for wire-format tests."""

    name = "overlap"

    def score(self, queries: list[Query]) -> list[Scores]:
        out = []
        for query in queries:
            words = set(query.text.lower().split())
            out.append(Scores(np.array([float(sum(w in words for w in c.text.lower().split()))
                                        for c in query.candidates])))
        return out


class SlowRanker(OverlapRanker):
    """OverlapRanker that holds each batch until the file named by ``gate`` exists (or ``hold_s`` passes)."""

    name = "slow"

    def __init__(self, gate: str = "", hold_s: float = 30.0) -> None:
        self.gate = gate
        self.hold_s = hold_s

    def score(self, queries: list[Query]) -> list[Scores]:
        deadline = time.monotonic() + self.hold_s
        while self.gate and not os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.02)
        return super().score(queries)
