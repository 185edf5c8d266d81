"""Cross-request batching, load shedding and graceful shutdown, observed without timing assertions:
the served ranker holds each batch until the test creates a gate file (tests/serve_support.SlowRanker)."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from serve_support import OverlapRanker, Server, metric

DOCS = ["red apple pie", "green pear", "apple", "red car", "blue sky over the red sea"]
QUERIES = ["red apple", "green pear", "blue sea", "red car", "apple pie", "sky"]


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def expected_order(query: str) -> list[int]:
    return [item.index for item in OverlapRanker().rank(query, DOCS).items]


def rerank(url: str, query: str) -> httpx.Response:
    body = {"model": "slow", "query": query, "documents": DOCS}
    return httpx.post(f"{url}/v2/rerank", json=body, timeout=60)


def start_slow(tmp_path: Path, *extra: str) -> tuple[Server, Path]:
    gate = tmp_path / "gate"
    server = Server("--model", "slow=serve_support:SlowRanker", "--option", f"slow.gate={gate}",
                    "--option", "slow.hold_s=60", "--no-warmup", "--max-wait-ms", "1", *extra)
    return server, gate


def test_batching_shedding_and_recovery(tmp_path):
    server, gate = start_slow(tmp_path, "--max-queue", "4")
    started = Path(f"{gate}.started")
    try:
        with ThreadPoolExecutor(8) as pool:
            first = pool.submit(rerank, server.url, QUERIES[0])
            wait_for(started.exists, "the first batch to reach the model")
            queued = [pool.submit(rerank, server.url, q) for q in QUERIES[1:5]]
            wait_for(lambda: metric(server.url, "surerank_queue_requests", model="slow") == 4, "4 queued")
            shed = rerank(server.url, QUERIES[5])
            assert shed.status_code == 429, shed.text
            assert int(shed.headers["retry-after"]) >= 1
            assert "max_queue_requests=4" in shed.json()["message"]
            gate.touch()
            answers = [first.result(), *(f.result() for f in queued)]
        for query, answer in zip(QUERIES, answers, strict=False):
            assert answer.status_code == 200, answer.text
            assert [r["index"] for r in answer.json()["results"]] == expected_order(query)
        # the four requests that waited together went to the model as one batch
        assert metric(server.url, "surerank_batch_requests_count", model="slow") == 2
        assert metric(server.url, "surerank_batch_requests_sum", model="slow") == 5
        assert metric(server.url, "surerank_requests_shed_total", model="slow", status="429") == 1
        recovered = rerank(server.url, QUERIES[5])
        assert recovered.status_code == 200
        assert [r["index"] for r in recovered.json()["results"]] == expected_order(QUERIES[5])
    finally:
        gate.touch()
        server.stop()


def test_graceful_shutdown_finishes_in_flight_requests(tmp_path):
    """SIGTERM: the listener stays open while the taken requests finish, answering new ones 503 with
    Retry-After (what load balancers expect; before, new connections were refused), then the server exits."""
    server, gate = start_slow(tmp_path)
    started = Path(f"{gate}.started")
    try:
        with ThreadPoolExecutor(4) as pool:
            in_model = pool.submit(rerank, server.url, QUERIES[0])
            wait_for(started.exists, "the first batch to reach the model")
            waiting = pool.submit(rerank, server.url, QUERIES[1])
            wait_for(lambda: metric(server.url, "surerank_queue_requests", model="slow") == 1, "1 queued")
            server.process.send_signal(signal.SIGTERM)
            wait_for(lambda: httpx.get(f"{server.url}/ready", timeout=5).status_code == 503, "/ready to say 503")
            ready = httpx.get(f"{server.url}/ready", timeout=5)
            assert ready.json() == {"status": "draining"} and int(ready.headers["retry-after"]) >= 1
            late = rerank(server.url, QUERIES[2])  # a new connection while draining: answered, not refused
            assert late.status_code == 503, late.text
            assert int(late.headers["retry-after"]) >= 1
            assert "shutting down" in late.json()["message"] and late.json()["detail"] == late.json()["message"]
            assert server.process.poll() is None  # still finishing its two requests
            gate.touch()
            answers = [in_model.result(), waiting.result()]
        for query, answer in zip(QUERIES, answers, strict=False):
            assert answer.status_code == 200, answer.text
            assert [r["index"] for r in answer.json()["results"]] == expected_order(query)
        assert server.process.wait(30) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in server.output()
    finally:
        gate.touch()
        server.stop()


def test_drain_keeps_answering_503_for_drain_s_and_a_second_signal_ends_it(tmp_path):
    """--drain: with nothing in flight the listener still answers 503 for drain_s (here far longer than the
    test waits), so a balancer that has not yet seen /ready fail gets a retryable answer; a second SIGTERM
    stops at once."""
    server, gate = start_slow(tmp_path, "--drain", "600")
    try:
        gate.touch()  # nothing is held in the model
        assert rerank(server.url, QUERIES[0]).status_code == 200
        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: httpx.get(f"{server.url}/ready", timeout=5).status_code == 503, "/ready to say 503")
        for query in QUERIES[:3]:
            answer = rerank(server.url, query)
            assert answer.status_code == 503 and answer.headers["retry-after"], answer.text
        assert server.process.poll() is None
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) in (0, -signal.SIGTERM)  # bounded: not the 600 s drain
        assert "Application shutdown complete" in server.output()
    finally:
        gate.touch()
        server.stop()


def test_a_withdrawn_request_is_dropped_from_the_queue_and_counted():
    """In-process: a request whose client is gone (or whose request_timeout_s passed) while it waits is
    taken out of the queue and never ranked; one already in the model is ranked and its answer dropped."""
    import asyncio
    import threading

    from surerank.serve.config import Batching
    from surerank.serve.scheduler import BatchingEngine, ClientGoneError, OverloadedError
    from surerank.types import Query

    release = threading.Event()
    ranked: list[str] = []

    class Held(OverlapRanker):
        def score(self, queries):
            release.wait(30)
            ranked.extend(q.text for q in queries)
            return super().score(queries)

    drops: list[tuple[str, int]] = []
    engine = BatchingEngine(Held(), Batching(max_wait_ms=0, request_timeout_s=1.0), name="held",
                            on_drop=lambda reason, n: drops.append((reason, n)))
    engine.start()

    async def scenario() -> None:
        first_gone, second_gone = asyncio.Event(), asyncio.Event()
        first = asyncio.ensure_future(engine.submit(Query.from_texts("first", DOCS), 5, gone=first_gone.wait))
        while engine.in_flight == 0:  # the first request is in the model
            await asyncio.sleep(0.01)
        second = asyncio.ensure_future(engine.submit(Query.from_texts("second", DOCS[:2]), 2,
                                                     gone=second_gone.wait))
        timed = asyncio.ensure_future(engine.submit(Query.from_texts("timed", DOCS[:3]), 3))
        while engine.queue_depth < 2:
            await asyncio.sleep(0.01)
        second_gone.set()
        first_gone.set()
        for task, expected in ((second, ClientGoneError), (first, ClientGoneError), (timed, OverloadedError)):
            try:
                await task
            except expected as error:
                if isinstance(error, ClientGoneError):
                    assert error.dropped is (task is second)
            else:
                raise AssertionError(f"{task} was answered")
        release.set()

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        engine.stop(timeout=10)
    assert ranked == ["first"]  # the batch that was in the model, nothing else
    assert sorted(drops) == [("client_gone", 2), ("timeout", 3)]
    assert engine.queue_depth == 0 and engine.queued_tokens == 0
