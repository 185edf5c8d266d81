"""``surerank calibrate``: fit the trust layer on labelled queries and write its JSON artifact.

Either run a ranker over an input file (``--input`` + ``--ranker``), or reuse a scored TREC run
(``--run``: the ranker is built only to record its configuration, nothing is scored).  The artifact
records the ranker's configuration; ``surerank rerank --trust`` refuses it for another configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from surerank.cli._common import parse_options

logger = logging.getLogger(__name__)

EXAMPLES = """examples:
  surerank calibrate --input ../shared/data/trec-dl/dl20-bm25-top100.json \\
      --qrels ../shared/data/trec-dl/qrels.dl20-passage.txt --ranker embedding --method platt \\
      --abstain u_lin --abstain-rate 0.1 --cutoff-alpha 0.2 --output embedding.trust.json
  surerank calibrate --run dl20.embedding.run --ranker embedding --qrels qrels.dl20-passage.txt \\
      --method isotonic --output embedding.trust.json
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "calibrate", help="fit calibration / abstention / conformal cutoff on labelled queries",
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", type=Path,
                     help="queries + candidates (RankGPT JSON as in trec-dl/, or JSONL)")
    src.add_argument("--run", type=Path, help="an already scored TREC run file (scores are used as-is)")
    p.add_argument("--qrels", type=Path, required=True, help="TREC qrels: qid Q0 docid grade")
    p.add_argument("--ranker", required=True, help="ranker name (scores --input; recorded for --run)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="ranker option (repeatable); values are parsed as JSON when they can be")
    p.add_argument("--output", type=Path, required=True, help="where to write the artifact (JSON)")
    p.add_argument("--method", default="platt", choices=["platt", "temperature", "isotonic", "none"],
                   help="calibration map (default platt; none: no probabilities)")
    p.add_argument("--relevance-level", type=int, default=2,
                   help="grade counted as relevant (default 2, the TREC DL convention)")
    p.add_argument("--unjudged", default="nonrelevant", choices=["nonrelevant", "skip"],
                   help="unjudged candidates count as not relevant (default) or are left out")
    p.add_argument("--abstain", choices=["max", "std", "gap", "u_lin", "u_log"],
                   help="fit an abstention rule with this confidence")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--abstain-rate", type=float, help="share of queries to abstain on (default 0.1)")
    target.add_argument("--abstain-quality", type=float,
                        help="mean nDCG@10 the answered queries must reach")
    p.add_argument("--confidence-k", type=int, default=10, help="top-K scores the confidence reads")
    p.add_argument("--cutoff-alpha", type=float, help="fit a conformal cutoff with this target miss rate")
    p.add_argument("--cutoff-kind", default="topk", choices=["topk", "threshold"])
    p.add_argument("--cutoff-method", default="crc", choices=["crc", "ltt"],
                   help="crc: E[miss rate] <= alpha; ltt: P(miss rate <= alpha) >= 1 - delta")
    p.add_argument("--delta", type=float, default=0.1, help="LTT failure probability (default 0.1)")
    p.add_argument("--scope", default="candidates", choices=["candidates", "judged"],
                   help="miss rate relative to relevant candidates (default) or to all judged relevant")
    p.set_defaults(func=run)


def _ranked_from_run(path: Path, ranker: str) -> list:
    from surerank.eval.formats import read_run
    from surerank.types import Candidate, Query, RankedList

    run = read_run(path)
    lists = []
    for qid, docs in run.items():
        query = Query(text="", id=str(qid), candidates=[Candidate(id=str(d), text="") for d in docs])
        lists.append(RankedList.from_scores(query, [float(s) for s in docs.values()], ranker=ranker))
    return lists


def run(args: argparse.Namespace) -> int:
    from surerank.eval.formats import read_qrels
    from surerank.trust.artifact import fit_trust

    options = parse_options(args.option)
    qrels = {str(q): dict(v) for q, v in read_qrels(args.qrels).items()}
    if args.run is not None:
        lists = _ranked_from_run(args.run, args.ranker)
        description = _describe(args.ranker, options)
        source = str(args.run)
    else:
        import surerank

        ranker = surerank.Reranker(args.ranker, **options)
        lists = ranker.rank_many(_read_queries(args.input))
        description = ranker.describe()
        source = str(args.input)
    artifact = fit_trust(
        lists, qrels, description,
        calibration=None if args.method == "none" else args.method,
        relevance_level=args.relevance_level, unjudged=args.unjudged,
        abstention=args.abstain, abstain_rate=args.abstain_rate, abstain_quality=args.abstain_quality,
        confidence_k=args.confidence_k, cutoff_alpha=args.cutoff_alpha, cutoff_kind=args.cutoff_kind,
        cutoff_method=args.cutoff_method, delta=args.delta, scope=args.scope, source=source,
    )
    artifact.save(args.output)
    summary: dict[str, Any] = {"output": str(args.output), **artifact.fitted_on}
    if artifact.abstention is not None:
        summary["abstention"] = artifact.abstention.fit_info
    if artifact.cutoff is not None:
        summary["cutoff"] = {"k": artifact.cutoff.k, "threshold": artifact.cutoff.threshold,
                             **artifact.cutoff.report}
    print(json.dumps(summary, indent=2))  # noqa: T201 - the command's answer
    return 0


def _describe(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The configuration `rerank --trust` will compare against: the ranker's own describe().

    Building the ranker loads its model but scores nothing; when it cannot be built here (a missing
    extra), the name and options are recorded instead, with a warning that rerank may refuse them.
    """
    from surerank.errors import SureRankError
    from surerank.registry import create

    try:
        return dict(create(name, **options).describe())
    except (SureRankError, ImportError, OSError) as error:
        logger.warning("could not build ranker %r to record its configuration (%s); recording name and "
                       "options only, which `rerank --trust` may not accept", name, error)
        return {"ranker": name, **options}


def _read_queries(path: Path) -> list:
    from surerank.eval.formats import read_queries

    return read_queries(path)
