"""Load test of `surerank serve` on loopback, beside the offline engine on the same work.

1. Offline anchor: ``ranker.rank_many`` over every request's (query, documents) in one process.
2. Bounded load: the same requests over HTTP (/v2/rerank) from ``--concurrency`` clients; throughput, the
   ratio to the offline figure (goal >= 0.8), p50/p99 latency, errors (goal: none), and every answer
   checked against the offline scores.
3. Overload: a server with a small queue, hit by many more clients than it can hold, with no retries;
   it must shed with 429/503 + Retry-After, answer every accepted request correctly, and then recover.

Requests are DL19+DL20 queries with ``--docs`` of their BM25 top-100 passages (cycled to reach
``--requests``; repeats carry a marker so that no text repeats).  Example (the issue's shape; scale
``--requests`` down on a small shared machine)::

    python benchmarks/serve_load.py --requests 2000 --concurrency 32 --docs 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

ROOT = Path(__file__).resolve().parents[1]


def workload(n_requests: int, n_docs: int) -> list[tuple[str, list[str]]]:
    from surerank.eval.datasets import trec_dl_paths

    topics = []
    for year in (19, 20):
        topics += json.loads(trec_dl_paths(year)[0].read_text())
    requests = []
    for i in range(n_requests):
        topic = topics[i % len(topics)]
        hits = [h["content"] for h in topic["hits"]]
        cycle = i // len(topics)
        start = cycle * n_docs % max(1, len(hits) - n_docs + 1)
        # after the first cycle every text carries the cycle's marker: no text repeats, so neither the
        # offline anchor (which encodes each distinct text of a call once) nor the server gets free work
        mark = f" #{cycle}" if cycle else ""
        requests.append((topic["query"] + mark, [h + mark for h in hits[start:start + n_docs]]))
    return requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(ranker: str, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cli = ["-m", "surerank", "serve"]
    log = tempfile.TemporaryFile()  # noqa: SIM115 - a file, not a pipe: an unread pipe blocks the server
    process = subprocess.Popen([sys.executable, *cli, "--model", f"bench={ranker}", "--port", str(port),
                                *extra], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise SystemExit(f"server exited: {log.read().decode(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("server not ready within 300 s")


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


def check(result: dict, expected: np.ndarray, tolerance: float) -> str | None:
    """None when the answer ranks every document once, best first, with the offline scores."""
    indices = [r["index"] for r in result["results"]]
    scores = np.array([r["relevance_score"] for r in result["results"]])
    if sorted(indices) != list(range(expected.size)):
        return "not a permutation of the documents"
    if np.any(np.diff(scores) > 1e-9):
        return "not sorted best first"
    worst = float(np.max(np.abs(scores - expected[indices]))) if indices else 0.0
    return None if worst <= tolerance else f"score differs from offline by {worst:.2e}"


async def drive(url: str, requests: list[tuple[str, list[str]]], expected: list[np.ndarray],
                concurrency: int, tolerance: float) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    wrong: list[str] = []
    retry_after: list[int] = []
    cursor = iter(range(len(requests)))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        async def worker() -> None:
            for i in cursor:
                query, docs = requests[i]
                start = time.perf_counter()
                try:
                    response = await client.post("/v2/rerank", json={"model": "bench", "query": query,
                                                                     "documents": docs})
                except httpx.TransportError as error:
                    statuses[-1] = statuses.get(-1, 0) + 1
                    wrong.append(f"request {i}: {type(error).__name__}")
                    continue
                elapsed = time.perf_counter() - start
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 200:
                    latencies.append(elapsed)
                    problem = check(response.json(), expected[i], tolerance)
                    if problem:
                        wrong.append(f"request {i}: {problem}")
                elif response.status_code in (429, 503):
                    retry_after.append(int(response.headers.get("retry-after", "-1")))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"wall": wall, "latencies": latencies, "statuses": statuses, "wrong": wrong,
            "retry_after": retry_after}


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, all threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_stats(url: str) -> tuple[float, float]:
    from prometheus_client.parser import text_string_to_metric_families

    values = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name in ("surerank_batch_requests_sum", "surerank_batch_requests_count"):
                values[sample.name] = sample.value
    count = values.get("surerank_batch_requests_count", 0.0)
    return count, values.get("surerank_batch_requests_sum", 0.0) / count if count else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranker", default="embedding")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--docs", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest score difference to offline")
    parser.add_argument("--overload-requests", type=int, default=96)
    parser.add_argument("--overload-concurrency", type=int, default=64)
    parser.add_argument("--overload-queue", type=int, default=4)
    parser.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                        help="ranker option for both the offline anchor and the server, e.g. -o precision=int8-fast")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import surerank
    from surerank.types import Query

    requests = workload(args.requests, args.docs)
    queries = [Query.from_texts(q, docs, id=str(i)) for i, (q, docs) in enumerate(requests)]
    print(f"workload: {len(requests)} requests x {args.docs} documents (DL19+DL20 BM25 top-100 passages), "
          f"ranker {args.ranker} {args.option or ''}, {os.cpu_count()} CPUs")

    from surerank.cli._common import parse_options

    options = parse_options(args.option)
    server_options = [x for pair in args.option for x in ("--option", f"bench.{pair}")]
    ranker = surerank.Reranker(args.ranker, **options)
    ranker.rank_many(queries[:1])  # warm up

    def offline_pass() -> tuple[float, float, list]:
        wall, cpu = time.perf_counter(), time.process_time()
        lists = ranker.rank_many(queries)
        return time.perf_counter() - wall, time.process_time() - cpu, lists

    offline_s, offline_cpu, offline = offline_pass()
    expected = []
    for ranked in offline:
        scores = np.zeros(len(ranked.items))
        for item in ranked.items:
            scores[item.index] = item.score
        expected.append(scores)
    print(f"offline  rank_many: {offline_s:8.1f} s  {len(requests) / offline_s:8.2f} requests/s  "
          f"{len(requests) * args.docs / offline_s:8.1f} documents/s  (CPU {offline_cpu:.1f} s)")

    # -- bounded load ---------------------------------------------------------------------------------
    # a bounded run: the queue holds every client, and no request times out however slow the machine is
    process, url = start_server(args.ranker, "--max-queue", str(max(256, args.concurrency * 2)),
                                "--request-timeout", "3600", *server_options)
    try:
        server_cpu0, client_cpu0 = process_cpu(process.pid), time.process_time()
        run = asyncio.run(drive(url, requests, expected, args.concurrency, args.tolerance))
        server_cpu, client_cpu = process_cpu(process.pid) - server_cpu0, time.process_time() - client_cpu0
        batches, per_batch = batch_stats(url)
    finally:
        stop_server(process)
    # the machine is shared: measure the anchor again after the served run and compare with the mean
    offline_s2, offline_cpu2, _ = offline_pass()
    print(f"offline  rank_many: {offline_s2:8.1f} s  {len(requests) / offline_s2:8.2f} requests/s  "
          f"(again, after the served run; CPU {offline_cpu2:.1f} s)")
    offline_rps = len(requests) / ((offline_s + offline_s2) / 2)
    lat = np.array(run["latencies"])
    served_rps = len(lat) / run["wall"]
    errors = sum(n for s, n in run["statuses"].items() if s != 200)
    print(f"served   /v2/rerank: {run['wall']:8.1f} s  {served_rps:8.2f} requests/s  "
          f"{served_rps * args.docs:8.1f} documents/s  ({args.concurrency} concurrent clients, loopback)")
    print(f"ratio served/offline (mean of both offline passes): {served_rps / offline_rps:.3f}  (goal >= 0.80)")
    print(f"CPU seconds: server {server_cpu:.1f}, load-generating client {client_cpu:.1f} (same 2 cores), "
          f"offline {(offline_cpu + offline_cpu2) / 2:.1f}; server CPU / offline CPU "
          f"{server_cpu / ((offline_cpu + offline_cpu2) / 2):.2f}")
    if lat.size:
        print(f"latency p50 {np.percentile(lat, 50):.2f} s  p99 {np.percentile(lat, 99):.2f} s  "
              f"max {lat.max():.2f} s")
    print(f"model batches: {batches:.0f}, {per_batch:.1f} requests per batch on average")
    print(f"errors: {errors}  wrong answers: {len(run['wrong'])}  statuses: {run['statuses']}")
    for line in run["wrong"][:5]:
        print("  ", line)

    # -- overload -------------------------------------------------------------------------------------
    n = min(args.overload_requests, len(requests))
    process, url = start_server(args.ranker, "--max-queue", str(args.overload_queue), "--max-batch-tokens", "8192",
                                *server_options)
    try:
        burst = asyncio.run(drive(url, requests[:n], expected[:n], args.overload_concurrency, args.tolerance))
        shed = sum(burst["statuses"].get(s, 0) for s in (429, 503))
        accepted = burst["statuses"].get(200, 0)
        other = {s: c for s, c in burst["statuses"].items() if s not in (200, 429, 503)}
        by_status = {s: burst["statuses"].get(s, 0) for s in (429, 503)}
        print(f"overload: {n} requests from {args.overload_concurrency} clients, queue {args.overload_queue}, "
              f"no retries: {accepted} answered, {shed} shed {by_status}, "
              f"other {other}, wrong answers {len(burst['wrong'])}, "
              f"Retry-After seen {sorted(set(burst['retry_after']))[:6]}")
        recovery = asyncio.run(drive(url, requests[:8], expected[:8], 1, args.tolerance))
        print(f"recovery: 8 sequential requests after the burst: statuses {recovery['statuses']}, "
              f"wrong answers {len(recovery['wrong'])}")
    finally:
        stop_server(process)


if __name__ == "__main__":
    main()
