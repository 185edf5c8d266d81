"""``surerank retrieve``: BM25 over a whole corpus, top k per query, ready to rerank."""

from __future__ import annotations

import argparse
import time

from surerank.cli._common import echo, first_stage_run, parse_options
from surerank.errors import InputError
from surerank.eval.metrics import evaluate
from surerank.formats import format_from_suffix, read_corpus, read_qrels, read_query_texts, write_jsonl, write_run
from surerank.types import RankedList


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "retrieve", help="BM25 retrieval of the top k documents from a corpus",
        description="Index a corpus with BM25 (bm25s; Anserini-like defaults k1=0.9, b=0.4, English "
                    "stemming and stopwords) and retrieve the top k documents per query. "
                    "Corpus: JSONL {id, text} or a SMART file (e.g. Cranfield cran.all.1400). "
                    "Queries: JSONL {qid, query}, TSV qid<TAB>query, or SMART (numbered by position). "
                    "Write .jsonl to rerank the result next with 'surerank rerank'.",
        epilog="example (the Cranfield collection in ./cranfield, from ir.dcs.gla.ac.uk/resources/test_collections):\n"
               "  surerank retrieve --corpus cranfield/cran.all.1400 \\\n"
               "      --queries cranfield/cran.qry --k 100 --output cran.bm25.jsonl \\\n"
               "      --qrels cranfield/cranqrel --rel-level 1\n"
               "  surerank rerank --input cran.bm25.jsonl --qrels cranfield/cranqrel --rel-level 1\n"
               "BM25 with the corpus's statistics as a reranker (for candidates from another retriever):\n"
               "  surerank retrieve ... --save-stats cran.bm25-stats.json\n"
               "  surerank rerank --input other.jsonl --ranker bm25 -o stats=cran.bm25-stats.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--corpus", required=True, help="documents to index")
    parser.add_argument("--queries", required=True, help="queries to run")
    parser.add_argument("--k", type=int, default=100, help="documents per query (default 100)")
    parser.add_argument("--output", required=True, help=".jsonl (candidates with text) or a TREC run")
    parser.add_argument("--qrels", help="judgments: print the retrieval's metrics")
    parser.add_argument("--rel-level", type=int, default=2, help="minimum relevant grade for binary measures")
    parser.add_argument("--option", "-o", action="append", metavar="KEY=VALUE",
                        help="BM25 option: k1, b, method, stemmer, stopwords")
    parser.add_argument("--save-stats", metavar="PATH",
                        help="write the corpus's BM25 statistics (document frequencies, average length) to "
                             "PATH, for 'surerank rerank --ranker bm25 -o stats=PATH'")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from surerank.rankers.bm25 import BM25Index

    if args.k < 1:
        raise InputError(f"--k must be >= 1, got {args.k}")
    corpus = read_corpus(args.corpus)
    queries = read_query_texts(args.queries)
    start = time.perf_counter()
    index = BM25Index(corpus, **parse_options(args.option))
    retrieved = index.retrieve(queries, k=args.k)
    echo(f"bm25: indexed {len(corpus)} documents, retrieved top {args.k} for {len(queries)} queries "
         f"in {time.perf_counter() - start:.1f} s")
    lists = [RankedList.from_scores(q, [c.metadata["bm25_score"] for c in q.candidates], ranker="bm25")
             for q in retrieved]
    if format_from_suffix(args.output) == "jsonl":
        write_jsonl(args.output, lists)
    else:
        write_run(args.output, lists, tag="bm25")
    echo(f"wrote {args.output}")
    if args.save_stats:
        stats = index.corpus_stats()
        stats.save(args.save_stats)
        echo(f"wrote {args.save_stats} ({len(stats.df)} terms, {stats.n_docs} documents)")
    if args.qrels:
        result = evaluate(first_stage_run(retrieved), read_qrels(args.qrels),
                          ("nDCG@10", "MAP", f"R@{args.k}"), args.rel_level)
        echo("  ".join(f"{m} {v:.4f}" for m, v in result.aggregate.items())
             + f"  ({result.queries_evaluated} judged queries)")
    return 0
