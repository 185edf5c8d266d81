"""Encoder reranking throughput on CPU: surerank's engine vs sentence-transformers as a user calls it.

Same model weights, same TREC DL19 (query, passage) pairs, both shapes:

* cross-encoder shape: MiniLM-L6 body + 1-logit head (the shape of cross-encoder/ms-marco-MiniLM-L-6-v2,
  built locally from the all-MiniLM-L6-v2 weights because no cross-encoder weights are available offline;
  its scores are meaningless, its cost is the real one).  Anchor: ``CrossEncoder(path).predict(pairs)``.
* embedding shape: all-MiniLM-L6-v2 cosine.  Anchor: ``SentenceTransformer(path).encode(query)`` and
  ``.encode(passages)`` per query, cosine; nDCG@10 printed for every contender.

The contenders of a shape are loaded and warmed up in one process, then timed back to back in rotating
order for ``--repeats`` rounds (the machine may be shared: ratio = best of each, and the geometric mean of
the per-round ratios); peak RSS comes from a separate run of each contender in its own process.

    nice python benchmarks/throughput.py --pairs 1000          # the must-show figures
    nice python benchmarks/throughput.py --pairs 1000 --full   # + nDCG@10 over all 43 DL19 queries
    python benchmarks/throughput.py --device cuda --pairs 100000 --shapes ce   # GPU: bf16/fp16, MFU

On a GPU (``--device cuda``) surerank runs the torch backend in bf16 and fp16 (SDPA, 262k-token batches,
batch padding overlapped with compute) against ``CrossEncoder(path, device="cuda").predict(pairs)``, and
prints model FLOPs utilisation from the per-pair formula 2·n_layers·(4·H² + 2·H·I)·L + 4·n_layers·L²·H
against ``--peak-tflops`` (989: H100/H200 dense bf16).  DL19 queries are repeated to reach ``--pairs``.
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
        base = queries
        queries = [Query(text=base[i % len(base)].text, candidates=base[i % len(base)].candidates[:per_query],
                         id=base[i % len(base)].id if i < len(base) else f"{base[i % len(base)].id}#{i}")
                   for i in range(n_queries)]
    return queries, qrels


def model_flops(queries, model_dir: str, max_length: int) -> float:
    """Forward FLOPs of every (query, passage) pair at its real length (cross-encoder shape)."""
    import json as _json

    from surerank.engine.tokenize import TokenizerEngine

    cfg = _json.loads((Path(model_dir) / "config.json").read_text())
    h, n, i = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]
    tok = TokenizerEngine(Path(model_dir) / "tokenizer.json")
    texts = list(dict.fromkeys([q.text for q in queries] + [c.text for q in queries for c in q.candidates]))
    lengths = dict(zip(texts, (len(x) for x in tok.encode(texts))))
    total = 0.0
    for q in queries:
        for c in q.candidates:
            length = min(max_length, lengths[q.text] + lengths[c.text] + 3)
            total += 2 * n * (4 * h * h + 2 * h * i) * length + 4 * n * length * length * h
    return total


def ndcg10(score_lists, queries, qrels) -> float:
    from surerank.eval.metrics import evaluate

    run = {q.id: {c.id: float(s) for c, s in zip(q.candidates, scores)} for q, scores in zip(queries, score_lists)}
    return float(evaluate(run, qrels, measures=("nDCG@10",)).aggregate["nDCG@10"])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def contender(kind: str, queries, ce_dir: str, emb_dir: str, device: str):
    """A zero-argument call that reranks ``queries`` as ``kind`` does, warmed up."""
    if kind == "st-ce":
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(ce_dir, device=device)
        pairs = [(q.text, c.text) for q in queries for c in q.candidates]
        model.predict(pairs[:32])

        def call():
            scores = model.predict(pairs)
            return None, scores
    elif kind == "st-emb":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(emb_dir, device=device)
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

        _, shape, precision = kind.split("-", 2)
        backend = {"bf16": "torch", "fp16": "torch"}.get(precision, "onnx")
        extra = {"backend": "torch", "device": device} if backend == "torch" else {}
        if shape == "ce":
            ranker = surerank.Reranker("cross-encoder", model=ce_dir, precision=precision, **extra)
        else:
            ranker = surerank.Reranker("embedding", precision=precision, **extra)
        ranker.rank("warm up", ["a passage", "another passage"])

        def call():
            results = ranker.rank_many(queries)
            lists = [np.array([i.score for i in sorted(r.items, key=lambda i: i.index)]) for r in results]
            return lists, None

    return call


def worker(kind: str, n_pairs: int | None, repeats: int, ce_dir: str, device: str = "cpu") -> dict:
    from surerank.engine.model_files import default_model_dir

    queries, qrels = load_queries(n_pairs)
    n = sum(len(q.candidates) for q in queries)
    emb_dir = str(default_model_dir())

    call = contender(kind, queries, ce_dir, emb_dir, device)
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
    if device != "cpu" and "ce" in kind:
        out["tflops_per_s"] = model_flops(queries, ce_dir, 512) / min(times) / 1e12
    return out


def paired_worker(shape: str, n_pairs: int | None, repeats: int, ce_dir: str, device: str) -> dict:
    """All contenders of a shape in one process, timed in rotating order, round after round.

    On a shared machine the load changes from minute to minute; timing the contenders back to back in
    the same process and taking per-round ratios keeps the comparison fair.
    """
    from surerank.engine.model_files import default_model_dir

    queries, qrels = load_queries(n_pairs)
    n = sum(len(q.candidates) for q in queries)
    precisions = ("fp32", "int8", "int8-fast") if device == "cpu" else ("bf16", "fp16")
    kinds = [f"st-{shape}"] + [f"sr-{shape}-{p}" for p in precisions]
    calls = {k: contender(k, queries, ce_dir, str(default_model_dir()), device) for k in kinds}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    cpu_times: dict[str, list[float]] = {k: [] for k in kinds}
    lists: dict[str, object] = {}
    for r in range(repeats):
        for k in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
            start, cpu = time.perf_counter(), time.process_time()
            lists[k], _ = calls[k]()
            times[k].append(time.perf_counter() - start)
            cpu_times[k].append(time.process_time() - cpu)
    out: dict[str, dict] = {}
    base = kinds[0]
    for k in kinds:
        ratios = [times[base][r] / times[k][r] for r in range(repeats)]
        out[k] = {"kind": k, "pairs": n, "pairs_per_s": n / min(times[k]),
                  "all_pairs_per_s": [round(n / t, 1) for t in times[k]],
                  "median_round_ratio": float(np.exp(np.mean(np.log(ratios)))),  # geometric mean
                  "pairs_per_cpu_s": n / min(cpu_times[k])}
        if lists[k] is not None and shape == "emb":
            out[k]["ndcg10"] = ndcg10(lists[k], queries, qrels)
        if device != "cpu" and shape == "ce":
            out[k]["tflops_per_s"] = model_flops(queries, ce_dir, 512) / min(times[k]) / 1e12
    return out


def run_worker(kind: str, args: argparse.Namespace, ce_dir: str, n_pairs: int | None, repeats: int) -> dict:
    """Run ``kind`` in a fresh process ("paired-ce" / "paired-emb" run a whole shape)."""
    cmd = [sys.executable, __file__, "--worker", kind, "--ce-dir", ce_dir, "--repeats", str(repeats),
           "--device", args.device]
    cmd += ["--pairs", str(n_pairs)] if n_pairs is not None else ["--all"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=1000, help="DL19 pairs to time (100 per query)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (contenders rotate each round)")
    p.add_argument("--no-memory", action="store_true", help="skip the separate peak-memory runs")
    p.add_argument("--full", action="store_true", help="also nDCG@10 of surerank fp32/int8 on all of DL19")
    p.add_argument("--shapes", default="ce,emb")
    p.add_argument("--device", default="cpu", help="cpu, or cuda for the torch bf16/fp16 GPU path")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="GPU dense bf16 peak for MFU")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--ce-dir", help=argparse.SUPPRESS)
    p.add_argument("--all", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker and args.worker.startswith("paired-"):
        print(json.dumps(paired_worker(args.worker.split("-", 1)[1], None if args.all else args.pairs,
                                       args.repeats, args.ce_dir, args.device)))
        return 0
    if args.worker:
        print(json.dumps(worker(args.worker, None if args.all else args.pairs, args.repeats, args.ce_dir,
                                args.device)))
        return 0

    from engine_fixtures import build_tiny_cross_encoder

    with tempfile.TemporaryDirectory() as tmp:
        ce_dir = str(build_tiny_cross_encoder(Path(tmp) / "minilm-l6-ce", layers=6))
        results: dict[str, dict] = {}
        shapes = args.shapes.split(",")
        precisions = ("fp32", "int8", "int8-fast") if args.device == "cpu" else ("bf16", "fp16")
        order = []
        for shape in ("ce", "emb"):
            if shape not in shapes:
                continue
            kinds = [f"st-{shape}"] + [f"sr-{shape}-{p}" for p in precisions]
            order += kinds
            results.update(run_worker(f"paired-{shape}", args, ce_dir, args.pairs, args.repeats))
            for kind in kinds:
                if not args.no_memory:  # peak RSS of each contender alone, in its own process
                    results[kind]["peak_rss_mb"] = run_worker(kind, args, ce_dir, args.pairs, 1)["peak_rss_mb"]
                r = results[kind]
                print(f"  {kind:12s} {r['pairs_per_s']:7.1f} pairs/s  (rounds {r['all_pairs_per_s']}, mean "
                      f"round ratio {r['median_round_ratio']:.2f}x, {r['pairs_per_cpu_s']:.1f} pairs/CPU-s)  "
                      f"peak RSS {r.get('peak_rss_mb', 0):7.1f} MB"
                      + (f"  nDCG@10 {r['ndcg10']:.4f}" if "ndcg10" in r else "")
                      + (f"  {r['tflops_per_s']:.1f} TFLOP/s = MFU {100 * r['tflops_per_s'] / args.peak_tflops:.1f}%"
                         if "tflops_per_s" in r else ""), flush=True)
        full = {}
        if args.full and args.device == "cpu":
            for kind in ("sr-emb-fp32", "sr-emb-int8", "sr-emb-int8-fast"):
                full[kind] = run_worker(kind, args, ce_dir, None, 1)

    print(f"\nsurerank vs sentence-transformers defaults, {args.device}, same model, same DL19 pairs "
          f"({results[order[0]]['pairs']} pairs)")
    print("ratio: best pairs/s over the anchor's; rounds: geometric mean of per-round ratios; "
          "cpu: ratio of pairs per CPU-second (all threads)")
    print(f"{'shape':14s} {'contender':28s} {'pairs/s':>8s} {'ratio':>6s} {'rounds':>7s} {'cpu':>6s} "
          f"{'peak MB':>8s} {'nDCG@10':>8s}")
    for shape, label in (("ce", "cross-encoder"), ("emb", "embedding")):
        if shape not in shapes:
            continue
        base = results[f"st-{shape}"]["pairs_per_s"]
        base_cpu = results[f"st-{shape}"]["pairs_per_cpu_s"]
        backend = "onnx" if args.device == "cpu" else "torch"
        for kind, name in ((f"st-{shape}", "sentence-transformers fp32"),
                           *((f"sr-{shape}-{p}", f"surerank {backend} {p}") for p in precisions)):
            r = results[kind]
            nd = f"{r['ndcg10']:.4f}" if "ndcg10" in r else "-"
            print(f"{label:14s} {name:28s} {r['pairs_per_s']:8.1f} {r['pairs_per_s'] / base:5.2f}x "
                  f"{r['median_round_ratio']:6.2f}x {r['pairs_per_cpu_s'] / base_cpu:5.2f}x "
                  f"{r.get('peak_rss_mb', 0):8.1f} {nd:>8s}")
    if "emb" in shapes and args.device == "cpu":
        for p in ("int8", "int8-fast"):
            d = results[f"sr-emb-{p}"]["ndcg10"] - results["sr-emb-fp32"]["ndcg10"]
            print(f"{p} - fp32 nDCG@10 on these queries: {d:+.4f} (target within 0.005)")
    if full:
        a = full["sr-emb-fp32"]["ndcg10"]
        for p in ("int8", "int8-fast"):
            b = full[f"sr-emb-{p}"]["ndcg10"]
            print(f"all 43 DL19 queries: nDCG@10 fp32 {a:.4f}  {p} {b:.4f}  diff {b - a:+.4f} "
                  "(known figure for MiniLM cosine: ~0.642)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
