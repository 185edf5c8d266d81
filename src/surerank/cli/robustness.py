"""``surerank robustness``: a ranker's self-checks on judged data (order, position, typos, traps, depth)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from surerank.cli._common import parse_options
from surerank.errors import InputError
from surerank.eval.datasets import load_trec_dl
from surerank.formats import read_qrels, read_queries
from surerank.registry import create
from surerank.robustness import CHECKS, TYPO_KINDS, RobustnessConfig, format_table, run_robustness
from surerank.storage import atomic_write_text

logger = logging.getLogger(__name__)

EXAMPLES = """examples:
  surerank robustness bm25 --dataset dl19 --output robustness-bm25.json
  surerank robustness embedding --dataset dl19 --shuffles 3 --typo-seeds 0,1 --depth 50
  surerank robustness llm-listwise --dataset dl19 --checks position,order --max-queries 10
  surerank robustness embedding --dataset my-top100.json --qrels my.qrels --option model_path=./minilm
The dataset is dl19 / dl20 (TREC DL passage top-100 and judgments; dl19 ships with surerank, dl20 is read
from SURERANK_DATA), a RankGPT JSON file or a JSONL file of {qid, query, candidates}; files need --qrels.
"""

DATASET_ALIASES = {"dl19": 19, "dl20": 20, "trec-dl-2019": 19, "trec-dl-2020": 20, "2019": 19, "2020": 20}


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from error
    if not values:
        raise argparse.ArgumentTypeError("give at least one integer")
    return values


def name_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "robustness", help="order, position, typo, lexical-trap and depth checks of a ranker",
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("ranker", help="registered ranker name (`surerank rankers`)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="ranker option, repeatable; values parsed as JSON when possible")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="dl19", help="dl19, dl20, or a RankGPT JSON / JSONL file")
    data.add_argument("--qrels", type=Path, help="TREC qrels for a dataset file")
    data.add_argument("--max-queries", type=int, help="use only the first N judged queries")
    data.add_argument("--rel-level", type=int, default=2,
                      help="lowest grade counted relevant (TREC DL: 2)")
    checks = parser.add_argument_group("checks")
    checks.add_argument("--checks", type=name_list, default=CHECKS,
                        help=f"comma-separated subset of {','.join(CHECKS)} (default: all)")
    checks.add_argument("--depth", type=int, help="rerank only the first-stage top N (default: all)")
    checks.add_argument("--shuffles", type=int, default=5, help="order check: shuffles per query")
    checks.add_argument("--order-depth", type=int, help="order check: list length (default: --depth)")
    checks.add_argument("--list-size", type=int, default=10,
                        help="position check: one relevant among N-1 judged non-relevant passages")
    checks.add_argument("--typo-kinds", type=name_list, default=TYPO_KINDS,
                        help=f"comma-separated subset of {','.join(TYPO_KINDS)}")
    checks.add_argument("--typo-depth", type=int, help="typo check: rerank the top N (default: --depth)")
    checks.add_argument("--typo-seeds", type=int_list, default=(0, 1, 2), help="comma-separated seeds")
    checks.add_argument("--depths", type=int_list, default=(10, 20, 50, 100),
                        help="depth check: comma-separated reranking depths")
    checks.add_argument("--seed", type=int, default=0, help="seed of the shuffles")
    out = parser.add_argument_group("output")
    out.add_argument("--output", type=Path, help="write the JSON result here")
    out.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    parser.set_defaults(func=run)


def load_dataset(name: str, qrels_path: Path | None) -> tuple[list, dict, str]:
    """(queries, qrels, label) for a dataset alias or a file."""
    alias = DATASET_ALIASES.get(name.lower())
    if alias is not None and not Path(name).exists():
        queries, qrels = load_trec_dl(alias)
        if qrels_path is not None:
            qrels = read_qrels(qrels_path)
        return list(queries), qrels, f"dl{alias % 100}"
    path = Path(name)
    if not path.exists():
        raise InputError(f"--dataset {name!r}: neither a known dataset ({', '.join(DATASET_ALIASES)}) "
                         "nor an existing file")
    if qrels_path is None:
        raise InputError(f"--dataset {name}: a dataset file needs --qrels")
    return list(read_queries(path)), read_qrels(qrels_path), path.stem


def run(args: argparse.Namespace) -> int:
    config = RobustnessConfig(
        checks=tuple(args.checks), depth=args.depth, shuffles=args.shuffles, order_depth=args.order_depth,
        typo_depth=args.typo_depth,
        position_list_size=args.list_size, typo_kinds=tuple(args.typo_kinds),
        typo_seeds=tuple(args.typo_seeds), depths=tuple(args.depths), rel_level=args.rel_level,
        seed=args.seed, max_queries=args.max_queries,
    )
    config.validate()
    queries, qrels, label = load_dataset(args.dataset, args.qrels)
    ranker = create(args.ranker, **parse_options(args.option))
    result = run_robustness(ranker, queries, qrels, config, dataset=label)
    result.ranker = args.ranker
    text = json.dumps(result.to_dict(), indent=1, sort_keys=False)
    if args.output:
        atomic_write_text(args.output, text + "\n")
        logger.info("wrote %s", args.output)
    sys.stdout.write((text if args.json else format_table([result])) + "\n")
    return 0
