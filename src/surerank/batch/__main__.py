"""``python -m surerank.batch ARGS`` is ``surerank batch ARGS`` (handy inside a Ray job submission)."""

from __future__ import annotations

import argparse
import logging
import sys

from surerank.cli import batch
from surerank.errors import SureRankError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m surerank.batch")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    batch.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["batch", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return batch.run(args)
    except (SureRankError, FileNotFoundError) as error:
        sys.stderr.write(f"surerank batch: error: {error}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
