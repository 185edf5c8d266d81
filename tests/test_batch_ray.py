"""The Ray engine on a real local Ray cluster (2 CPUs, one per test module).

1. Ray output equals local output on all of TREC DL19+DL20 (bm25: 9,700 pairs).
2. The driver process is SIGKILLed midway; the same command run again keeps the finished shards, and
   while it runs its model actor is SIGKILLed too (Ray restarts it and retries the shard).  The output
   holds every (qid, docid) exactly once and equals the local engine's (embedding ranker).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from surerank.batch import BatchConfig, Manifest, RayOptions, run_batch
from surerank.batch.io import read_rankgpt_queries
from surerank.eval.datasets import data_root
from surerank.types import Query

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytestmark = pytest.mark.ray

DATA = data_root() / "trec-dl"  # $SURERANK_DATA, else ../shared/data
DL = [DATA / "dl19-bm25-top100.json", DATA / "dl20-bm25-top100.json"]
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def cluster():
    from surerank.batch.engines import ray_runtime_env

    if ray.is_initialized():  # left over from another module: start our own, known-size cluster
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=ray_runtime_env())
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def write_jsonl(path: Path, queries) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for q in queries:
            handle.write(json.dumps({"qid": q.id, "query": q.text,
                                     "candidates": [{"id": c.id, "text": c.text} for c in q.candidates]}) + "\n")
    return path


def by_pair(table) -> dict[tuple[str, str], tuple[int, float]]:
    cols = [table.column(c).to_pylist() for c in ("qid", "docid", "rank", "score")]
    out = {(qid, docid): (rank, score) for qid, docid, rank, score in zip(*cols, strict=True)}
    assert len(out) == table.num_rows, "a (qid, docid) pair appears twice"
    return out


def assert_same_ranking(local, remote) -> None:
    a, b = by_pair(local), by_pair(remote)
    assert a.keys() == b.keys()
    assert all(a[k][0] == b[k][0] for k in a), "ranks differ"
    assert max(abs(a[k][1] - b[k][1]) for k in a) <= 1e-5


def map_worker_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"MapWorker(MapBatches(SureRankShardRanker))" in cmdline:
                pids.append(int(entry))
    return pids


def test_ray_equals_local_on_dl19_dl20(cluster, tmp_path):
    results = {}
    for engine in ("local", "ray"):
        result = run_batch(BatchConfig(inputs=DL, output=tmp_path / f"{engine}.parquet", ranker="bm25",
                                       shard_pairs=1000, engine=engine, progress=False,
                                       ray=RayOptions(actors=2)))
        assert result.pairs == 9700 and result.queries == 97
        results[engine] = pq.read_table(result.output)
    assert_same_ranking(results["local"], results["ray"])


@pytest.fixture(scope="module")
def dl19_jsonl(tmp_path_factory) -> Path:
    """10 DL19 queries with their top 20 candidates: 200 pairs, 10 shards of one query each."""
    queries = [Query(text=q.text, candidates=q.candidates[:20], id=q.id)
               for q in list(read_rankgpt_queries(DL[0]))[:10]]
    return write_jsonl(tmp_path_factory.mktemp("in") / "dl19-10x20.jsonl", queries)


def test_killed_driver_then_killed_actor_still_give_every_pair_once(cluster, tmp_path, dl19_jsonl):
    """Run 1: SIGKILL the driver after 2 shards.  Run 2, the same command: SIGKILL the model actor after
    its first shard; Ray restarts it.  The output holds every input pair exactly once, equal to the local
    engine's output (embedding ranker, scores within 1e-5, same ranks)."""
    output = tmp_path / "out.parquet"
    command = [sys.executable, "-m", "surerank.batch", "--input", str(dl19_jsonl), "--output", str(output),
               "--ranker", "embedding", "--option", "threads=1", "--shard-size", "20", "--engine", "ray",
               "--actors", "1", "--ray-address", cluster, "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    manifest_path = Path(f"{output}.shards") / "manifest.json"

    def done_shards() -> int:
        try:
            return len(Manifest.load(manifest_path).done())
        except Exception:  # not written yet
            return 0

    def wait_until(driver: subprocess.Popen, done: int) -> None:
        deadline = time.monotonic() + 180
        while done_shards() < done and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert driver.poll() is None, f"driver ended too early: {driver.stderr.read()[-2000:]}"
        assert done_shards() < 10, "no shard left to interrupt"

    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until(first, 2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_at_kill = done_shards()
    assert done_at_kill >= 2 and not output.exists()

    second = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_until(second, done_at_kill + 1)
    killed = map_worker_pids()
    assert killed, "no model actor process found"
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    _, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr[-2000:]
    assert f"{done_at_kill} kept from before, {10 - done_at_kill} ranked" in stderr

    remote = pq.read_table(output)
    expected = {(q["qid"], c["id"]) for q in map(json.loads, dl19_jsonl.read_text().splitlines())
                for c in q["candidates"]}
    pairs = list(zip(remote.column("qid").to_pylist(), remote.column("docid").to_pylist(), strict=True))
    assert len(pairs) == len(set(pairs)) == 200 and set(pairs) == expected
    local = run_batch(BatchConfig(inputs=[dl19_jsonl], output=tmp_path / "local.parquet", ranker="embedding",
                                  ranker_options={"threads": 1}, shard_pairs=20, progress=False))
    assert_same_ranking(pq.read_table(local.output), remote)
