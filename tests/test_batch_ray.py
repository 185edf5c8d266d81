"""The Ray engine on a real local Ray cluster (2 CPUs, one per test module).

1. Ray output equals local output on all of TREC DL19+DL20 (bm25: 9,700 pairs).
2. The driver process is SIGKILLed midway; the same command run again keeps the finished shards, and
   while it runs its model actor is SIGKILLed too (Ray restarts it and retries the shard).  The output
   holds every (qid, docid) exactly once and equals the local engine's (embedding ranker).
3. A poison pair: a model actor that dies on one candidate every time stops the job after the bounded
   retries (it was retried forever), naming the shard, query and candidate; a ranker that raises on it
   stops the job naming them too; once the poison is gone the same job resumes, keeping the shards
   committed before.
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
from surerank.errors import SureRankError
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
    from surerank.batch.ray_runner import ray_runtime_env

    if ray.is_initialized():  # left over from another module: start our own, known-size cluster
        ray.shutdown()
    # workers (of this driver and of the subprocess drivers below) import the checkout under test
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), saved) if p)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=ray_runtime_env())
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = saved
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
        assert done_shards() >= done, f"{done} shards not done within 180 s ({done_shards()} were): a loaded machine?"
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


def test_poison_pair_stops_the_job_naming_it_and_the_fixed_job_resumes(cluster, tmp_path):
    """6 queries of 3 candidates, one shard each; candidate d1 of q3 is poison.  A model actor that dies on
    it every time is restarted and the shard retried --max-retries (default 2) times, then the driver
    stops naming shard 3, q3, d1 (it used to retry forever: the guard below fails instead of hanging).  A
    ranker that raises on it stops the job naming them too.  With the poison gone, the same job resumes:
    the shards committed before are not ranked again."""
    source = tmp_path / "in.jsonl"
    with open(source, "w", encoding="utf-8") as handle:
        for i in range(6):
            cands = [{"id": f"d{j}", "text": ("POISON " if (i, j) == (3, 1) else "") + "x" * (j + 1)}
                     for j in range(3)]
            handle.write(json.dumps({"qid": f"q{i}", "query": f"query {i}", "candidates": cands}) + "\n")
    poison = tmp_path / "poison.json"
    poison.write_text(json.dumps({"text": "POISON", "mode": "crash"}))
    output = tmp_path / "out.parquet"
    ranker, options = "surerank.batch.faults:PoisonRanker", {"poison_file": str(poison)}
    command = [sys.executable, "-m", "surerank.batch", "--input", str(source), "--output", str(output),
               "--ranker", ranker, "--option", f"poison_file={poison}", "--shard-size", "3", "--engine", "ray",
               "--actors", "1", "--ray-address", cluster, "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = driver.communicate(timeout=240)  # a guard against the old endless retries, not a benchmark
    except subprocess.TimeoutExpired:
        driver.kill()
        driver.communicate()
        pytest.fail("the Ray job was still retrying the poison pair after 240 s")
    assert driver.returncode == 2, stderr[-3000:]
    error = stderr.strip().splitlines()[-1]
    for part in ("shard 3:", "died 3 time(s)", "query 'q3', candidate 'd1'", "--max-retries 2",
                 "kept in", "run the same command again to resume"):
        assert part in error, error

    poison.write_text(json.dumps({"text": "POISON", "mode": "raise"}))
    config = BatchConfig(inputs=[source], output=output, ranker=ranker, ranker_options=options, shard_pairs=3,
                         engine="ray", progress=False, ray=RayOptions(actors=1))
    with pytest.raises(SureRankError) as caught:  # a ShardFailedError
        run_batch(config)
    assert (caught.value.shard, caught.value.qid, caught.value.docid) == (3, "q3", "d1")
    assert "ValueError: poisoned text in candidate 'd1'" in str(caught.value)

    manifest = Manifest.load(config.resolved_work_dir() / "manifest.json")
    committed = {s.id: (config.resolved_work_dir() / s.file).stat().st_mtime_ns for s in manifest.done()}
    assert committed and 3 not in committed
    poison.unlink()  # the fix
    result = run_batch(config)
    assert (result.shards_skipped, result.shards_ranked) == (len(committed), 6 - len(committed))
    for shard_id, mtime in committed.items():
        assert (config.resolved_work_dir() / f"shard-{shard_id:05d}.parquet").stat().st_mtime_ns == mtime
    table = pq.read_table(output)
    assert table.num_rows == 18 and len(set(zip(table.column("qid").to_pylist(),
                                                table.column("docid").to_pylist(), strict=True))) == 18
