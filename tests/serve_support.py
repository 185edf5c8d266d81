"""Rankers the serve tests load by import path in a server subprocess.

``SlowRanker`` makes shutdown and overload observable without timing assertions: it waits on a file
flag, so a test decides when a batch may finish.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
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


class PassageOverlapRanker(OverlapRanker):
    """OverlapRanker over windows of ``window`` words, through surerank's passage machinery
    (:class:`~surerank.engine.text.passages.PassagePolicy`): what ``max_chunks_per_doc`` maps onto, without a model."""

    name = "passage-overlap"

    def __init__(self, window: int = 4, long_documents: str = "passages", aggregate: str = "max",
                 max_passages: int | None = None) -> None:
        from surerank.engine.text.passages import PassagePolicy

        self.window = window
        self.policy = PassagePolicy(mode=long_documents, aggregate=aggregate, overlap=0, max_passages=max_passages)

    def score(self, queries: list[Query]) -> list[Scores]:
        out = []
        for query in queries:
            words = set(query.text.lower().split())
            values, reports = [], []
            for candidate in query.candidates:
                tokens = candidate.text.lower().split()
                spans, report = self.policy.spans(len(tokens), self.window)
                chunk_scores = np.array([float(sum(w in words for w in tokens[a:b])) for a, b in spans])
                values.append(self.policy.combine(chunk_scores))
                reports.append(report)
            out.append(Scores(np.array(values), truncations=reports))
        return out


class SlowRanker(OverlapRanker):
    """OverlapRanker that holds each batch until the file named by ``gate`` exists (or ``hold_s`` passes)."""

    name = "slow"

    def __init__(self, gate: str = "", hold_s: float = 30.0) -> None:
        self.gate = gate
        self.hold_s = hold_s

    def score(self, queries: list[Query]) -> list[Scores]:
        if self.gate:
            Path(self.gate + ".started").touch()  # tells the test a batch is in the model
        deadline = time.monotonic() + self.hold_s
        while self.gate and not os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.02)
        return super().score(queries)


class FailingRanker(OverlapRanker):
    """OverlapRanker that fails like a bug would (a plain RuntimeError quoting internals) on the query
    ``boom``: what a real fault of the service looks like to a client."""

    name = "failing"

    def score(self, queries: list[Query]) -> list[Scores]:
        if any(query.text == "boom" for query in queries):
            raise RuntimeError("secret internal detail: /opt/models/weights.bin is corrupt")
        return super().score(queries)


# -- a real server in a subprocess ----------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli() -> list[str]:
    """The real entry point: ``python -m surerank serve``."""
    return [sys.executable, "-m", "surerank", "serve"]


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURERANK_")}
    paths = [str(ROOT / "src"), str(ROOT / "tests"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.update(extra or {})
    return env


class Server:
    """``surerank serve`` on a free loopback port, started and stopped by a test fixture."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, ready_timeout: float = 120.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="surerank-serve-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen([*_cli(), "--port", str(self.port), *args], env=server_env(env),
                                        stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server not ready after {ready_timeout}s:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of the server's Prometheus metrics (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def lexical_ranker() -> str:
    """The served ranker where the model does not matter: ``bm25`` once it exists, else the overlap scorer."""
    import importlib.util

    if importlib.util.find_spec("surerank.rankers.bm25") is not None:
        return "bm25"
    return "serve_support:OverlapRanker"


def make_ranker(spec: str):
    import importlib

    import surerank

    if ":" in spec:
        module, _, attr = spec.partition(":")
        return getattr(importlib.import_module(module), attr)()
    return surerank.Reranker(spec)
