"""A fault-injection ranker for trying out how a batch job fails: ``--ranker surerank.batch.faults:PoisonRanker``.

It scores a candidate by its text length, except that a candidate whose text contains the *poison* makes
it raise (mode ``raise``) or kill its own process (mode ``crash``, as a segfault or the OOM killer
would).  The poison is read from ``poison_file`` (JSON ``{"text": ..., "mode": "raise" | "crash"}``) at
every call, so editing or deleting that file changes or "fixes" the ranker without changing the job's
options: the same command then resumes the job.  It lives in the package so
that Ray workers can import it wherever surerank is installed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from surerank.ranker import Scores, ScoringRanker
from surerank.types import Query


class PoisonRanker(ScoringRanker):
    """Text-length scores; raises or dies on a candidate whose text holds the poison in ``poison_file``."""

    name = "poison"

    def __init__(self, poison_file: str) -> None:
        self.poison_file = Path(poison_file)

    def score(self, queries: list[Query]) -> list[Scores]:
        try:
            spec = json.loads(self.poison_file.read_text(encoding="utf-8"))
            poison, mode = str(spec["text"]), spec.get("mode", "raise")
        except FileNotFoundError:
            poison, mode = None, "raise"
        out = []
        for query in queries:
            for candidate in query.candidates:
                if poison and poison in candidate.text:
                    if mode == "crash":
                        os._exit(70)  # no exception, no cleanup: the process is simply gone
                    raise ValueError(f"poisoned text in candidate {candidate.id!r}")
            out.append(Scores(np.array([float(len(c.text)) for c in query.candidates])))
        return out
