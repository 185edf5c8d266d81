"""``surerank train --fusion``: learn fusion weights on a dev split and write them as a JSON document.

Each member ranker (``--rankers``, a JSON list of names or ``{"name": ..., **options}``) scores the dev queries
once, or ``--run`` gives its scores already (one TREC run per member, in the same order: nothing is scored);
coordinate ascent then sets one weight at a time to maximise mean nDCG@10 on ``--qrels``.  The file
(``"kind": "surerank.fusion-weights"``) is what ``Reranker("fusion", weights=FILE)`` and ``surerank rerank
--ranker fusion -o weights=FILE`` read: it carries the members, the method and the normalisation.  Fit on one
year and evaluate on another: the dev figure it prints is optimistic by construction.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from surerank.cli._common import DATASETS, echo
from surerank.errors import InputError
from surerank.eval.datasets import dataset_file
from surerank.formats import read_qrels, read_queries, read_run
from surerank.train.fusion import fit_fusion, member_runs

EXAMPLES = """examples:
  surerank train --fusion --input dl19 --qrels dl19 --method combsum --norm zscore \\
      --rankers '[{"name": "bm25", "idf": "background"}, "embedding"]' --output hybrid.weights.json
  surerank rerank --input dl20 --qrels dl20 --ranker fusion -o weights=hybrid.weights.json --output dl20.run
  surerank train --fusion --run dl19.bm25.run --run dl19.embedding.run --qrels dl19 \\
      --rankers '["bm25", "embedding"]' --output w.json          # scores already at hand: nothing is scored
""" + DATASETS


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train", help="learn from judgments: fusion weights fitted on a dev split (--fusion)",
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fusion", action="store_true", required=True,
                   help="fit the weights of a fusion of rankers (the one kind of training so far)")
    p.add_argument("--rankers", required=True,
                   help='the members, a JSON list: names or {"name": ..., options}; recorded in the file')
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", type=Path, help="dev queries + candidates (RankGPT JSON or JSONL), or dl19/dl20")
    src.add_argument("--run", type=Path, action="append",
                     help="a member's scored TREC run, once per member in --rankers order (nothing is scored)")
    p.add_argument("--qrels", type=Path, required=True, help="TREC qrels of the dev queries, or dl19/dl20")
    p.add_argument("--method", default="combsum", choices=["combsum", "combmnz", "rrf"],
                   help="fusion method (default combsum)")
    p.add_argument("--norm", default="zscore", choices=["zscore", "minmax", "none"],
                   help="per-list score normalisation before CombSUM/CombMNZ (default zscore)")
    p.add_argument("--k", type=int, default=60, help="RRF's k (default 60)")
    p.add_argument("--passes", type=int, default=10, help="most coordinate-ascent passes (default 10)")
    p.add_argument("--output", type=Path, required=True, help="where to write the weights (JSON)")
    p.set_defaults(func=run)


def _members(text: str) -> list[Any]:
    try:
        members = json.loads(text)
    except json.JSONDecodeError:
        members = [m.strip() for m in text.split(",") if m.strip()]  # bm25,embedding
    if not isinstance(members, list) or len(members) < 2:
        raise InputError(f"--rankers: a JSON list of two or more rankers, got {text!r}")
    for i, m in enumerate(members):
        if not isinstance(m, str) and not (isinstance(m, dict) and isinstance(m.get("name"), str)):
            raise InputError(f"--rankers[{i}]: a ranker name or an object with a 'name', got {m!r}")
    return members


def run(args: argparse.Namespace) -> int:
    members = _members(args.rankers)
    if args.output.is_dir() or not args.output.parent.is_dir():
        raise InputError(f"--output {args.output}: give a file name in an existing folder")
    if args.passes < 1:
        raise InputError(f"--passes: must be >= 1, got {args.passes}")
    qrels = read_qrels(dataset_file(args.qrels, "qrels"))
    if args.run:
        if len(args.run) != len(members):
            raise InputError(f"--run: {len(args.run)} runs for {len(members)} rankers; give one per member")
        runs = [read_run(path) for path in args.run]
    else:
        runs = member_runs(members, read_queries(dataset_file(args.input, "queries")))
    weights = fit_fusion(runs, qrels, members, method=args.method, norm=args.norm, k=args.k, passes=args.passes)
    weights.save(args.output)
    echo(json.dumps({"output": str(args.output), "weights": weights.weights, "method": weights.method,
                     "norm": weights.norm, "fit": weights.fit}, indent=2))
    return 0
