"""The ``surerank`` command line: a thin layer that parses arguments and calls the library.

Each subcommand lives in its own module exposing ``register(subparsers)``; the table below is the
explicit list, so ``surerank --help`` shows everything without importing any model backend.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from surerank.errors import SureRankError

COMMANDS: dict[str, str] = {
    "rerank": "surerank.cli.rerank",
    "retrieve": "surerank.cli.retrieve",
    "eval": "surerank.cli.evaluate",
    "rankers": "surerank.cli.rankers",
    "calibrate": "surerank.cli.calibrate",
    "batch": "surerank.cli.batch",
    "serve": "surerank.cli.serve",
    "robustness": "surerank.cli.robustness",
    "report": "surerank.cli.report",
    "train": "surerank.cli.train",
}

EPILOG = """examples:
  surerank rerank --input dl19 --qrels dl19 --ranker embedding --output dl19.run
  surerank rerank --input dl19 --ranker bm25 --output bm25.run
  surerank eval --run dl19.run --qrels dl19 --baseline bm25.run
  surerank retrieve --corpus cranfield/cran.all.1400 --queries cranfield/cran.qry
  surerank rankers
dl19 names the TREC DL 2019 passage top-100 and judgments that ship with surerank (dl20 needs
SURERANK_DATA); any .json / .jsonl query file and TREC qrels file works the same way.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="surerank",
        description="Rerank search results and RAG context, and say how far to trust each ranking.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).register(subparsers)
    for sub in subparsers.choices.values():  # `surerank rerank -v` as well as `surerank -v rerank`
        sub.add_argument("-v", "--verbose", dest="verbose_after", action="count", default=0,
                         help="more logging (-vv for debug); also accepted before the subcommand")
    return parser


def verbosity(args: argparse.Namespace) -> int:
    """-v given before and after the subcommand, added up: 0 warnings, 1 info, 2 or more debug."""
    return int(args.verbose) + int(getattr(args, "verbose_after", 0))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity(args), 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (SureRankError, FileNotFoundError) as error:
        sys.stderr.write(f"surerank {args.command}: error: {error}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
