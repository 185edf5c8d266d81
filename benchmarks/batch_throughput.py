"""Batch throughput: local engine and Ray with 1 and 2 model actors, against the bare ranker.

Anchor (measured in the same run): ``Reranker(name).rank_many`` called directly on the same queries,
one process, the same thread count per model as each actor gets.  Printed: pairs/s of each engine,
its ratio to the anchor, the steady-state pairs/s per actor (after every actor's first shard, so model
load and Ray start-up are excluded), and the quality kept (max |score diff| to the anchor, nDCG@10).
At the end, each Ray run is compared with the local engine: max |score diff| and rank mismatches.

    nice python benchmarks/batch_throughput.py --collections dl19,dl20 --ranker embedding
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path


def ndcg10(run: dict[str, dict[str, float]], collections: list[str]) -> str:
    from surerank.eval.datasets import trec_dl_paths
    from surerank.eval.metrics import evaluate
    from surerank.formats import read_qrels

    parts = []
    for name in collections:
        qrels = read_qrels(trec_dl_paths(name)[1])
        sub = {q: docs for q, docs in run.items() if q in qrels}
        parts.append(f"{name} {evaluate(sub, qrels, measures=('nDCG@10',)).aggregate['nDCG@10']:.4f}")
    return " ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranker", default="embedding")
    parser.add_argument("--option", action="append", default=[], help="ranker option key=value")
    parser.add_argument("--collections", default="dl19", help="comma-separated: dl19, dl20")
    parser.add_argument("--queries", type=int, default=0, help="first N queries of each collection (0 = all)")
    parser.add_argument("--shard-size", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="threads per model (anchor and each actor)")
    parser.add_argument("--actors", default="1,2")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import pyarrow.parquet as pq
    import ray

    from surerank import Reranker
    from surerank.batch import BatchConfig, RayOptions, run_batch
    from surerank.batch.io import read_rankgpt_queries
    from surerank.batch.ray_runner import ray_runtime_env
    from surerank.cli._common import parse_options
    from surerank.eval.datasets import trec_dl_paths

    options = parse_options(args.option)
    if args.ranker == "embedding":
        options.setdefault("threads", args.threads)
    collections = args.collections.split(",")
    queries = []
    for name in collections:
        found = list(read_rankgpt_queries(trec_dl_paths(name)[0]))
        queries += found[: args.queries] if args.queries else found
    pairs = sum(len(q.candidates) for q in queries)
    work = Path(tempfile.mkdtemp(prefix="surerank-batch-bench-"))
    source = work / "in.jsonl"
    with open(source, "w", encoding="utf-8") as handle:
        for q in queries:
            handle.write(json.dumps({"qid": q.id, "query": q.text,
                                     "candidates": [{"id": c.id, "text": c.text} for c in q.candidates]}) + "\n")

    # anchor: the bare ranker, model already loaded (warm-up on one query)
    ranker = Reranker(args.ranker, **options)
    ranker.rank_many(queries[:1])
    start = time.perf_counter()
    direct = ranker.rank_many(queries)
    anchor_s = time.perf_counter() - start
    anchor = pairs / anchor_s
    reference = {(r.query.id, item.id): item.score for r in direct for item in r.items}
    run = {r.query.id: {item.id: item.score for item in r.items} for r in direct}
    del ranker
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{len(queries)} queries of {'+'.join(collections)}, {pairs} pairs, ranker {args.ranker} {options}, "
          f"shard {args.shard_size} pairs")
    print(f"anchor  rank_many in-process           {anchor:8.1f} pairs/s  ({anchor_s:.1f} s)  "
          f"nDCG@10 {ndcg10(run, collections)}")

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=ray_runtime_env())
    print(f"ray.init (local cluster, 2 CPUs): {time.perf_counter() - t0:.1f} s (not counted below)")
    outputs: dict[str, dict[tuple[str, str], tuple[int, float]]] = {}
    engines = [("local", 1)] + [("ray", int(n)) for n in args.actors.split(",")]
    for engine, actors in engines:
        stamps: list[tuple[float, int]] = []
        config = BatchConfig(inputs=[source], output=work / f"{engine}-{actors}.parquet", ranker=args.ranker,
                             ranker_options=options, shard_pairs=args.shard_size, engine=engine,
                             overwrite=True, progress=False,
                             ray=RayOptions(actors=actors, cpus_per_actor=1.0))
        start = time.perf_counter()
        result = run_batch(config, on_shard_done=lambda r, log=stamps: log.append((time.perf_counter(), r.pairs)))
        wall = time.perf_counter() - start
        # steady state: from the moment every actor has delivered one shard to the last shard
        warm = stamps[actors - 1][0]
        steady_pairs = sum(p for _, p in stamps[actors:])
        steady = steady_pairs / (stamps[-1][0] - warm) if len(stamps) > actors else float("nan")
        table = pq.read_table(result.output)
        cols = [table.column(c).to_pylist() for c in ("qid", "docid", "score")]
        diff = max(abs(reference[(q, d)] - s) for q, d, s in zip(*cols, strict=True))
        out_run: dict[str, dict[str, float]] = {}
        for q, d, s in zip(*cols, strict=True):
            out_run.setdefault(q, {})[d] = s
        print(f"{engine:5s} actors={actors}  wall {pairs / wall:8.1f} pairs/s ({wall:.1f} s, ratio to anchor "
              f"{pairs / wall / anchor:.2f})  steady {steady:8.1f} pairs/s = {steady / actors:.1f}/actor "
              f"(ratio {steady / anchor:.2f})  max|Δscore| {diff:.1e}  "
              f"nDCG@10 {ndcg10(out_run, collections)}")
        outputs[f"{engine}-{actors}"] = {(q, d): (r, s) for q, d, r, s in zip(
            *(table.column(c).to_pylist() for c in ("qid", "docid", "rank", "score")), strict=True)}
    ray.shutdown()
    local = outputs["local-1"]
    for name, out in outputs.items():
        if name != "local-1":
            assert out.keys() == local.keys()
            ranks = sum(out[k][0] != local[k][0] for k in local)
            diff = max(abs(out[k][1] - local[k][1]) for k in local)
            print(f"{name} vs local: {len(local)} pairs, max|Δscore| {diff:.1e}, rank mismatches {ranks}")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
