"""Encoder reranking throughput on CPU: surerank's engine vs sentence-transformers as a user calls it.

Same model weights, same TREC DL19 (query, passage) pairs, both shapes:

* cross-encoder shape: MiniLM-L6 body + 1-logit head (the shape of cross-encoder/ms-marco-MiniLM-L-6-v2,
  built locally from the all-MiniLM-L6-v2 weights because no cross-encoder weights are available offline;
  its scores are meaningless, its cost is the real one).  Anchor: ``CrossEncoder(path).predict(pairs)``.
* embedding shape: all-MiniLM-L6-v2 cosine.  Anchor: ``SentenceTransformer(path).encode(query)`` and
  ``.encode(passages)`` per query, cosine; nDCG@10 printed for every contender.

Every contender runs in its own process (clean peak-RSS figure), loads and warms up first, then is timed
``--repeats`` times (best run kept, as the machine is shared); contenders are interleaved.

    nice python benchmarks/throughput.py --pairs 1000          # the must-show figures
    nice python benchmarks/throughput.py --pairs 1000 --full   # + nDCG@10 over all 43 DL19 queries
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # engine_fixtures: the local cross-encoder builder


def load_queries(n_pairs: int | None, per_query: int = 100):
    from surerank.eval.datasets import load_trec_dl
    from surerank.types import Query

    queries, qrels = load_trec_dl(19)
    if n_pairs is not None:
        n_queries = max(1, n_pairs // per_query)
        queries = [Query(text=q.text, candidates=q.candidates[:per_query], id=q.id) for q in queries[:n_queries]]
    return queries, qrels


def ndcg10(score_lists, queries, qrels) -> float:
    from surerank.eval.metrics import evaluate

    run = {q.id: {c.id: float(s) for c, s in zip(q.candidates, scores)} for q, scores in zip(queries, score_lists)}
    return float(evaluate(run, qrels, measures=("nDCG@10",)).aggregate["nDCG@10"])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(kind: str, n_pairs: int | None, repeats: int, ce_dir: str) -> dict:
    from surerank.engine.model_files import default_model_dir

    queries, qrels = load_queries(n_pairs)
    n = sum(len(q.candidates) for q in queries)
    emb_dir = str(default_model_dir())

    if kind == "st-ce":
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(ce_dir, device="cpu")
        pairs = [(q.text, c.text) for q in queries for c in q.candidates]
        model.predict(pairs[:32])

        def call():
            scores = model.predict(pairs)
            return None, scores
    elif kind == "st-emb":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(emb_dir, device="cpu")
        model.encode(["warm up"] * 8)

        def call():
            lists = []
            for q in queries:
                qv = model.encode(q.text, normalize_embeddings=True)
                dv = model.encode([c.text for c in q.candidates], normalize_embeddings=True)
                lists.append(dv @ qv)
            return lists, None
    else:
        import surerank

        _, shape, precision = kind.split("-")
        if shape == "ce":
            ranker = surerank.Reranker("cross-encoder", model=ce_dir, precision=precision)
        else:
            ranker = surerank.Reranker("embedding", precision=precision)
        ranker.rank("warm up", ["a passage", "another passage"])

        def call():
            results = ranker.rank_many(queries)
            lists = [np.array([i.score for i in sorted(r.items, key=lambda i: i.index)]) for r in results]
            return lists, None

    times = []
    lists = None
    for _ in range(repeats):
        start = time.perf_counter()
        lists, _ = call()
        times.append(time.perf_counter() - start)
    out = {"kind": kind, "pairs": n, "seconds": min(times), "pairs_per_s": n / min(times),
           "all_pairs_per_s": [round(n / t, 1) for t in times], "peak_rss_mb": round(peak_rss_mb(), 1)}
    if lists is not None and "ce" not in kind:
        out["ndcg10"] = ndcg10(lists, queries, qrels)
    return out


def run_worker(kind: str, args: argparse.Namespace, ce_dir: str, n_pairs: int | None, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--ce-dir", ce_dir, "--repeats", str(repeats)]
    cmd += ["--pairs", str(n_pairs)] if n_pairs is not None else ["--all"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=1000, help="DL19 pairs to time (100 per query)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--full", action="store_true", help="also nDCG@10 of surerank fp32/int8 on all of DL19")
    p.add_argument("--shapes", default="ce,emb")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--ce-dir", help=argparse.SUPPRESS)
    p.add_argument("--all", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, None if args.all else args.pairs, args.repeats, args.ce_dir)))
        return 0

    from engine_fixtures import build_tiny_cross_encoder

    with tempfile.TemporaryDirectory() as tmp:
        ce_dir = str(build_tiny_cross_encoder(Path(tmp) / "minilm-l6-ce", layers=6))
        results: dict[str, dict] = {}
        shapes = args.shapes.split(",")
        order = []
        if "ce" in shapes:
            order += ["st-ce", "sr-ce-fp32", "sr-ce-int8"]
        if "emb" in shapes:
            order += ["st-emb", "sr-emb-fp32", "sr-emb-int8"]
        for kind in order:
            results[kind] = run_worker(kind, args, ce_dir, args.pairs, args.repeats)
            r = results[kind]
            print(f"  {kind:12s} {r['pairs_per_s']:7.1f} pairs/s  (runs {r['all_pairs_per_s']})  "
                  f"peak RSS {r['peak_rss_mb']:7.1f} MB" + (f"  nDCG@10 {r['ndcg10']:.4f}" if "ndcg10" in r else ""),
                  flush=True)
        full = {}
        if args.full:
            for kind in ("sr-emb-fp32", "sr-emb-int8"):
                full[kind] = run_worker(kind, args, ce_dir, None, 1)

    print("\nsurerank vs sentence-transformers defaults, CPU, same model, same DL19 pairs "
          f"({results[order[0]]['pairs']} pairs)")
    print(f"{'shape':14s} {'contender':28s} {'pairs/s':>8s} {'ratio':>6s} {'peak MB':>8s} {'nDCG@10':>8s}")
    for shape, label in (("ce", "cross-encoder"), ("emb", "embedding")):
        if shape not in shapes:
            continue
        base = results[f"st-{shape}"]["pairs_per_s"]
        for kind, name in ((f"st-{shape}", "sentence-transformers fp32"), (f"sr-{shape}-fp32", "surerank onnx fp32"),
                           (f"sr-{shape}-int8", "surerank onnx int8")):
            r = results[kind]
            nd = f"{r['ndcg10']:.4f}" if "ndcg10" in r else "-"
            print(f"{label:14s} {name:28s} {r['pairs_per_s']:8.1f} {r['pairs_per_s'] / base:5.2f}x "
                  f"{r['peak_rss_mb']:8.1f} {nd:>8s}")
    if "emb" in shapes:
        d = results["sr-emb-int8"]["ndcg10"] - results["sr-emb-fp32"]["ndcg10"]
        print(f"int8 - fp32 nDCG@10 on these queries: {d:+.4f} (target within 0.005)")
    if full:
        a, b = full["sr-emb-fp32"]["ndcg10"], full["sr-emb-int8"]["ndcg10"]
        print(f"all 43 DL19 queries: nDCG@10 fp32 {a:.4f}  int8 {b:.4f}  diff {b - a:+.4f} "
              "(known figure for MiniLM cosine: ~0.642)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
