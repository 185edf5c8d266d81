"""Run the robustness checks on a ranker: every ranking they need in one ``rank_many`` call, then the figures.

Rerankers are known to flip with the order of their input, to break on a typo in the query, to be
fooled by a non-relevant passage that repeats the query's words, and to get worse when handed more
documents.  :func:`run_robustness` measures each of these for any ranker that follows the
:class:`~surerank.ranker.Ranker` protocol and returns a typed :class:`RobustnessResult`; the ``surerank
robustness`` command writes it and the HTML report draws it.  Nothing here knows which model is behind
the ranker: it is the only source of variation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from typing import Any

from surerank.errors import InputError
from surerank.robustness.checks import (
    Job,
    Qrels,
    Timer,
    clean_figures,
    depth_check,
    ndcg_per_query,
    order_check,
    position_check,
    rank_all,
    run_jobs,
    trap_check,
    typo_check,
)
from surerank.robustness.config import RobustnessConfig
from surerank.robustness.result import RobustnessResult
from surerank.types import Query, RankedList

logger = logging.getLogger(__name__)


class _Recorder:
    """Stands in for the ranker while the checks say what they will ask; answers in input order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.batches: list[list[Query]] = []

    def rank_many(self, queries: Iterable[Query]) -> list[RankedList]:
        batch = list(queries)
        self.batches.append(batch)
        return [RankedList.from_order(q, list(range(len(q.candidates))), ranker=self.name) for q in batch]

    def size(self) -> int:
        return sum(len(b) for b in self.batches)


class _Replayer:
    """Hands back the real ranker's answers, batch by batch, checking they answer the same requests."""

    def __init__(self, name: str, batches: list[list[Query]], answers: list[RankedList]) -> None:
        self.name = name
        self._batches = iter(batches)
        self._answers = iter(answers)

    def rank_many(self, queries: Iterable[Query]) -> list[RankedList]:
        batch, expected = list(queries), next(self._batches)
        out = [next(self._answers) for _ in expected]
        for asked, recorded, answer in zip(batch, expected, out, strict=True):
            if asked.id != recorded.id or asked.text != recorded.text or sorted(answer.ids) != sorted(
                    c.id for c in asked.candidates):
                raise RuntimeError(f"robustness replay out of step at query {asked.id!r}")
        return out


def _checks(ranker: Any, judged: list[Query], qrels: Qrels, config: RobustnessConfig, bm25: Any | None,
            say: Callable[[str], None]) -> dict[str, Any]:
    """The clean run, then each configured check: {"clean": CleanFigures, check name: its figures}."""
    result: dict[str, Any] = {}
    say(f"clean run over {len(judged)} queries")
    jobs = [Job(q, config.depth) for q in judged]
    clean_run = {q.id: sc for q, sc in zip(judged, run_jobs(ranker, jobs, say), strict=True)}
    clean = ndcg_per_query(clean_run, qrels, config.rel_level)
    result["clean"] = clean_figures(clean, config.depth)
    if "order" in config.checks:
        say("order sensitivity")
        result["order"] = order_check(ranker, judged, config, say)
    if "position" in config.checks:
        say("position bias")
        result["position"] = position_check(ranker, judged, qrels, config, say)
    if "typos" in config.checks:
        say("typos")
        result["typos"] = typo_check(ranker, judged, qrels, clean, config, say)
    if "trap" in config.checks:
        say("lexical trap slice")
        result["trap"] = trap_check(judged, qrels, clean, config, bm25)
    if "depth" in config.checks:
        say("reranking depth")
        longest = max(len(q.candidates) for q in judged)
        known = {min(config.depth or longest, longest): clean}
        result["depth"] = depth_check(ranker, judged, qrels, config, say, known)
    return result


def run_robustness(ranker: Any, queries: Sequence[Query], qrels: Qrels,
                   config: RobustnessConfig | None = None, *, bm25: Any | None = None,
                   dataset: str = "", progress: Callable[[str], None] | None = None) -> RobustnessResult:
    """Run the configured checks; returns the typed :class:`RobustnessResult` (``to_dict()`` is its JSON).

    Queries without judgments are left out (their count is reported), never scored as zero.
    """
    config = config or RobustnessConfig()
    config.validate()
    say = progress or (lambda message: logger.info("robustness: %s", message))
    judged = [q for q in queries if qrels.get(q.id) and q.candidates]
    unjudged = [q.id for q in queries if not (qrels.get(q.id) and q.candidates)]
    if config.max_queries:
        judged = judged[: config.max_queries]
    if not judged:
        raise InputError("no query has both candidates and relevance judgments (check that qrels ids match)")
    timer = Timer()
    name = getattr(ranker, "name", type(ranker).__name__)
    describe = ranker.describe() if hasattr(ranker, "describe") else {"ranker": name}
    if config.one_call:
        # Every ranking the checks ask for is fixed by the seeds, not by the ranker's answers: record
        # them with a stand-in, rank them all in one rank_many call (a batching ranker then encodes each
        # distinct passage once), and replay the answers to the same checks.
        recorder = _Recorder(name)
        _checks(recorder, judged, qrels, config, bm25, lambda message: None)
        say(f"{name}: ranking {recorder.size()} lists in one call")
        answers = rank_all(ranker, [q for batch in recorder.batches for q in batch], say)
        parts = _checks(_Replayer(name, recorder.batches, answers), judged, qrels, config, bm25, say)
    else:
        parts = _checks(ranker, judged, qrels, config, bm25, say)
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}  # as JSON holds it
    return RobustnessResult(ranker=name, ranker_config=describe, dataset=dataset, n_queries=len(judged),
                            unjudged_queries=unjudged, config=settings, **parts, seconds=timer.seconds())


__all__ = ["run_robustness"]
