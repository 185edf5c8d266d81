"""``surerank rerank``: input file → reranked run or JSONL, optionally scored against judgments."""

from __future__ import annotations

import argparse
import math
import time

from surerank.cli._common import (
    DATASETS,
    add_ranker_arguments,
    echo,
    first_stage_run,
    parse_options,
    rank_with_progress,
    write_lists,
)
from surerank.errors import InputError
from surerank.eval.datasets import dataset_file
from surerank.eval.metrics import evaluate, evaluate_lists, paired_test
from surerank.formats import lists_to_run, read_qrels, read_queries
from surerank.registry import create
from surerank.trust.cli_options import add_arguments as add_trust_arguments
from surerank.trust.cli_options import apply as apply_trust
from surerank.trust.cli_options import check as check_trust
from surerank.types import Query, RankedList

DESCRIPTION = """Rerank the candidates of every query in a file.

Input: .jsonl, one query a line {"qid", "query", "candidates": [{"id", "text", ...}]},
or .json in the RankGPT style [{"query", "hits": [{"qid", "docid", "score", "content"}]}].
Output: .jsonl (texts, ranks, scores and trust fields) or any other name for a TREC run file.
With --qrels, prints nDCG@10 and friends for the input order and for the reranked order.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rerank", help="rerank a file of queries and candidates", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  surerank rerank --input dl19 --qrels dl19 --output dl19.embedding.run\n" + DATASETS,
    )
    parser.add_argument("--input", "-i", required=True, help="queries with candidates (.jsonl or .json), or dl19")
    add_ranker_arguments(parser)
    parser.add_argument("--output", help="where to write the result (.jsonl, else a TREC run)")
    parser.add_argument("--qrels", help="judgments (a TREC qrels file, or dl19): print metrics of the input "
                                        "order and of the reranked order")
    parser.add_argument("--rel-level", type=int, default=2,
                        help="grade counted relevant by binary measures (TREC DL: 2, the default)")
    parser.add_argument("--depth", type=int, default=None,
                        help="rerank only the top DEPTH candidates; the rest follow in input order")
    parser.add_argument("--max-queries", type=int, default=None, help="only the first N queries (a quick look)")
    parser.add_argument("--tag", default=None, help="run tag written in TREC run files (default: the ranker)")
    add_trust_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    queries = read_queries(dataset_file(args.input, "queries"))
    if args.max_queries is not None:
        queries = queries[: args.max_queries]
    if args.depth is not None and args.depth < 1:
        raise InputError(f"--depth must be >= 1, got {args.depth}")
    qrels = read_qrels(dataset_file(args.qrels, "qrels")) if args.qrels else None
    ranker = create(args.ranker, **parse_options(args.option))
    config = getattr(ranker, "engine_config", None)
    if config is not None and config.precision == "auto":  # what the default precision chose, and why
        auto = ranker.describe().get("precision_auto", {})
        why = (f"int8-fast drift {auto['drift']:.3f} vs bound {auto['bound']}" if auto.get("drift") is not None
               else auto.get("reason", ""))
        echo(f"{args.ranker}: precision auto -> {auto.get('choice')} ({why})")
    check_trust(args, ranker.describe() if args.trust else None)  # refusals come before any scoring
    pairs = sum(min(len(q.candidates), args.depth or len(q.candidates)) for q in queries)
    start = time.perf_counter()
    if args.depth is None:
        lists = rank_with_progress(ranker, queries)
    else:
        heads = [Query(text=q.text, candidates=q.candidates[: args.depth], id=q.id, metadata=q.metadata)
                 for q in queries]
        lists = []
        for q, head in zip(queries, rank_with_progress(ranker, heads)):
            order = [item.index for item in head.items] + list(range(len(head.items), len(q.candidates)))
            full = RankedList.from_order(q, order, ranker=head.ranker, cost=head.cost)
            for item, reranked in zip(full.items, head.items):
                item.score, item.truncation = reranked.score, reranked.truncation
            # the unscored tail goes below the head's lowest score (it was n - rank + 1, above the head),
            # so that sorting by score (trec_eval, `surerank eval` on the written run) keeps this order
            floor = min((i.score for i in head.items if math.isfinite(i.score)), default=0.0)
            for k, item in enumerate(full.items[len(head.items):], start=1):
                item.score = floor - k * max(1.0, abs(floor))
            lists.append(full)
    elapsed = time.perf_counter() - start
    echo(f"{args.ranker}: reranked {pairs} pairs of {len(queries)} queries in {elapsed:.1f} s "
         f"({pairs / max(elapsed, 1e-9):.1f} pairs/s)")
    truncated = sum(1 for r in lists for item in r.items if item.truncation and item.truncation.truncated)
    if truncated:
        echo(f"note: {truncated} candidates were longer than the model's input and were truncated; a .jsonl "
             "--output lists the tokens dropped per candidate, -o long_documents=passages scores them whole")
    apply_trust(args, lists, ranker.describe())  # probabilities, keep flags, abstention; never reorders
    if args.output:
        write_lists(args.output, lists, tag=args.tag or args.ranker)
        echo(f"wrote {args.output}")
    if qrels is not None:
        measures = ("nDCG@10", "MAP", "MRR@10", "R@100")
        base = evaluate(first_stage_run(queries), qrels, measures, args.rel_level)
        ours = evaluate_lists(lists, qrels, measures, args.rel_level)  # surerank's order, not trec_eval's
        echo(f"{'':<14}" + "".join(f"{m:>10}" for m in measures))
        echo(f"{'input order':<14}" + "".join(f"{base.aggregate[m]:>10.4f}" for m in measures))
        echo(f"{args.ranker:<14}" + "".join(f"{ours.aggregate[m]:>10.4f}" for m in measures))
        difference = ours.aggregate["nDCG@10"] - base.aggregate["nDCG@10"]
        if ours.queries_evaluated >= 2:
            test = paired_test(ours.values("nDCG@10"), base.values("nDCG@10"), "nDCG@10")
            significance = f"paired t-test p = {test.p_value:.3g}, {ours.queries_evaluated} queries"
        else:  # a paired test needs two queries; the figures above still stand
            significance = f"{ours.queries_evaluated} query, no paired test"
        echo(f"nDCG@10 {ours.aggregate['nDCG@10']:.4f} vs input order {base.aggregate['nDCG@10']:.4f} "
             f"({difference:+.4f}, {significance})")
        if ours.ties:
            as_trec_eval = evaluate(lists_to_run(lists), qrels, ("nDCG@10",), args.rel_level)
            echo(f"note: {ours.ties.describe()}; the figures above follow surerank's order; trec_eval "
                 f"orders tied scores by docid and gives nDCG@10 {as_trec_eval.aggregate['nDCG@10']:.4f}")
    return 0
