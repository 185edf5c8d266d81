"""``surerank batch``: rerank a whole file of queries, locally or on Ray; rerun the same command to resume."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from surerank.cli._common import DATASETS, parse_options
from surerank.eval.datasets import dataset_file

logger = logging.getLogger(__name__)

EXAMPLES = """examples:
  surerank batch --input dl19 --ranker embedding --output dl19.parquet
  surerank batch --input run.trec --passages collection.tsv --queries queries.tsv --output reranked.run \\
      --engine ray --actors 4 --cpus-per-actor 2
  surerank batch --input pairs.parquet --output out.jsonl --engine ray --ray-address ray://head:10001 \\
      --gpus-per-actor 1 --option device=cuda
A job that died is continued by running the same command again (finished shards are kept).
""" + DATASETS


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "batch", help="rerank a large input file in resumable shards (local or Ray)",
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = parser.add_argument_group("input and output")
    io.add_argument("--input", action="append", required=True, type=Path,
                    help="JSONL, Parquet, RankGPT JSON or TREC run; repeat for several files")
    io.add_argument("--input-format", default="auto", choices=["auto", "jsonl", "parquet", "rankgpt", "trec"])
    io.add_argument("--passages", type=Path, help="for a TREC run: passage texts (id<TAB>text TSV or JSONL)")
    io.add_argument("--queries", type=Path, help="for a TREC run: query texts (qid<TAB>text TSV or JSONL)")
    io.add_argument("--output", required=True, type=Path, help="result file: .parquet, .jsonl or .run/.trec")
    io.add_argument("--output-format", default="auto", choices=["auto", "parquet", "jsonl", "trec"])
    io.add_argument("--keep-text", action="store_true", help="also write the query and passage texts")
    io.add_argument("--tag", help="run tag for TREC output (default surerank-<ranker>)")
    ranking = parser.add_argument_group("ranker")
    ranking.add_argument("--ranker", default="embedding", help="registered ranker (`surerank rankers`)")
    ranking.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help="ranker option, repeatable; values parsed as JSON when possible")
    job = parser.add_argument_group("job")
    job.add_argument("--shard-size", type=int, default=10_000, metavar="PAIRS",
                     help="about this many pairs per shard; whole queries only (default 10000)")
    job.add_argument("--work-dir", type=Path, help="shards + manifest (default <output>.shards)")
    job.add_argument("--overwrite", action="count", default=0,
                     help="discard an existing job: removes only the files its manifest lists (shards, "
                          "output, manifest); refused in an input file's folder or a parent of it unless "
                          "given twice")
    job.add_argument("--clean", action="store_true", help="delete shard files after a successful merge")
    job.add_argument("--no-progress", action="store_true", help="no progress bar")
    engine = parser.add_argument_group("engine")
    engine.add_argument("--engine", default="local", choices=["local", "ray"])
    engine.add_argument("--actors", type=int, default=1, help="Ray: model actors (one ranker each)")
    engine.add_argument("--cpus-per-actor", type=float, default=1.0)
    engine.add_argument("--gpus-per-actor", type=float, default=0.0)
    engine.add_argument("--ray-address", help="Ray: connect to this cluster (else start a local one)")
    engine.add_argument("--ray-cpus", type=int, help="Ray: CPUs of the local cluster started here")
    engine.add_argument("--max-retries", type=int, default=2, metavar="N",
                        help="Ray: restarts of a model actor that died, and retries of its shard, before the "
                             "job stops naming the shard (default 2)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from surerank.batch import BatchConfig, RayOptions, run_batch

    inputs = [dataset_file(p, "queries") for p in args.input]  # dl19 / dl20 stand for the TREC DL files
    config = BatchConfig(
        inputs=inputs, output=args.output, ranker=args.ranker, ranker_options=parse_options(args.option),
        input_format=args.input_format, output_format=args.output_format, passages=args.passages,
        queries=args.queries, shard_pairs=args.shard_size, work_dir=args.work_dir, engine=args.engine,
        ray=RayOptions(actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                       gpus_per_actor=args.gpus_per_actor, address=args.ray_address, local_cpus=args.ray_cpus,
                       progress_bars=not args.no_progress, max_retries=args.max_retries),
        keep_text=args.keep_text, overwrite=args.overwrite, clean=args.clean, tag=args.tag,
        progress=not args.no_progress,
    )
    result = run_batch(config)
    if result.removed:
        sys.stderr.write(f"surerank batch: --overwrite removed {len(result.removed)} file(s) of the previous "
                         "job (its manifest, shards and output)\n")
    if result.temp_removed:
        sys.stderr.write(f"surerank batch: removed {len(result.temp_removed)} temporary file(s) left by a "
                         "killed run\n")
    sys.stderr.write(
        f"surerank batch: {result.pairs} pairs of {result.queries} queries -> {result.output} "
        f"({result.shards} shards: {result.shards_skipped} kept from before, {result.shards_ranked} ranked; "
        f"{result.pairs_per_second:.0f} pairs/s this run)\n"
    )
    return 0
