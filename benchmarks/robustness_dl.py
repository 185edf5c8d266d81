"""Robustness figures of several rankers on TREC DL (default: bm25, embedding, fusion on DL19).

    python benchmarks/robustness_dl.py --rankers bm25,embedding,fusion --dataset dl19 \\
        --shuffles 3 --order-depth 20 --typo-seeds 0,1 --typo-depth 30 --out-dir /tmp/robustness

Prints one table (one column per ranker) and writes one JSON per ranker, the input of
``surerank report --robustness``.  The anchor measured in the same run is the first-stage BM25 order
(its nDCG@10 must match the collection's known figure: 0.5058 on DL19, 0.4796 on DL20), and every
ranker's figures sit beside it.  ``fusion`` is RRF of ``--fusion-members`` (default: the first-stage
BM25 scores and embedding, the usual hybrid; the first-stage part ignores the query text, so typos only
reach it through the embedding).  ``bm25`` reranks with statistics of the candidate list alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from surerank.eval.datasets import load_trec_dl
from surerank.ranker import BaseRanker
from surerank.registry import create
from surerank.robustness import CHECKS, TYPO_KINDS, RobustnessConfig, RobustnessResult, format_table, run_robustness
from surerank.storage import atomic_write_json
from surerank.types import Query, RankedList

KNOWN_FIRST_STAGE = {"dl19": 0.5058, "dl20": 0.4796}


class Counting(BaseRanker):
    """Passes queries through to a ranker and counts the (query, passage) pairs it was asked to score."""

    def __init__(self, inner: Any, name: str) -> None:
        self.inner, self.pairs, self.seconds = inner, 0, 0.0
        self.name = name  # type: ignore[misc]

    def _rank_queries(self, queries: list[Query]) -> list[RankedList]:
        self.pairs += sum(len(q.candidates) for q in queries)
        start = time.perf_counter()
        out = self.inner.rank_many(queries)
        self.seconds += time.perf_counter() - start
        return out

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rankers", default="bm25,embedding,fusion")
    parser.add_argument("--dataset", default="dl19", choices=sorted(KNOWN_FIRST_STAGE))
    parser.add_argument("--checks", default=",".join(CHECKS))
    parser.add_argument("--depth", type=int, help="clean/trap runs rerank the top N (default: all 100)")
    parser.add_argument("--shuffles", type=int, default=3)
    parser.add_argument("--order-depth", type=int, default=20)
    parser.add_argument("--list-size", type=int, default=10)
    parser.add_argument("--typo-kinds", default=",".join(TYPO_KINDS))
    parser.add_argument("--typo-seeds", type=ints, default=(0, 1))
    parser.add_argument("--typo-depth", type=int, default=30)
    parser.add_argument("--depths", type=ints, default=(10, 20, 50, 100))
    parser.add_argument("--max-queries", type=int)
    parser.add_argument("--fusion-members", default="first-stage,embedding")
    parser.add_argument("--out-dir", type=Path, default=Path("robustness-out"))
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")

    queries, qrels = load_trec_dl(args.dataset)
    config = RobustnessConfig(
        checks=tuple(c for c in args.checks.split(",") if c), depth=args.depth, shuffles=args.shuffles,
        order_depth=args.order_depth, position_list_size=args.list_size,
        typo_kinds=tuple(k for k in args.typo_kinds.split(",") if k), typo_seeds=args.typo_seeds,
        typo_depth=args.typo_depth, depths=args.depths, max_queries=args.max_queries,
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print(f"# robustness on {args.dataset}: {len(queries)} queries; config {json.dumps(vars(config))}")
    results, lines = [], []
    for name in [r for r in args.rankers.split(",") if r]:
        members = [m for m in args.fusion_members.split(",") if m]
        inner = create("fusion", rankers=members) if name == "fusion" else create(name)
        ranker = Counting(inner, name)
        start = time.perf_counter()
        result = run_robustness(ranker, queries, qrels, config, dataset=args.dataset,
                                progress=lambda message, n=name: logging.info("%s: %s", n, message))
        result.ranker = name
        result.extra["pairs_scored"] = ranker.pairs
        result.extra["pairs_per_s"] = ranker.pairs / max(ranker.seconds, 1e-9)
        path = args.out_dir / f"robustness-{args.dataset}-{name}.json"
        atomic_write_json(path, result.to_dict(), indent=1)
        RobustnessResult.from_dict(json.loads(path.read_text()), where=str(path))  # what `surerank report` reads
        results.append(result)
        lines.append(f"{name}: {ranker.pairs} pairs in {time.perf_counter() - start:.0f} s "
                     f"({result.extra['pairs_per_s']:.0f} pairs/s)")
        print(lines[-1], flush=True)
    print()
    print(format_table(results))
    if results and results[0].depth is not None and results[0].depth.first_stage:
        first = results[0].depth.first_stage
        print(f"\nanchor: first-stage BM25 nDCG@10 {first:.4f} (known figure "
              f"{KNOWN_FIRST_STAGE[args.dataset]:.4f}); clean nDCG@10 / anchor: "
              + ", ".join(f"{r.ranker} {r.clean.ndcg / first:.3f}" for r in results if r.clean.ndcg is not None))
    print(f"JSON written to {args.out_dir}/")


if __name__ == "__main__":
    main()
