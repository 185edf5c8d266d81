"""``surerank calibrate``: fit the trust layer on labelled queries and write its JSON artifact.

Either run a ranker over input files (``--input`` + ``--ranker``), or reuse scored TREC runs (``--run``:
the ranker is built only to record its configuration, nothing is scored).  Both, and ``--qrels``, are
repeatable: fitting on two years takes two ``--input`` and two ``--qrels``.  Everything that can be
checked is checked before the first pair is scored: the files, the judgments (at least one query of
the input must have some), duplicate query ids across files, the options and the output's folder.

The artifact records the ranker's configuration; ``surerank rerank --trust`` refuses it for a ranker
whose scores would differ (another model, precision, max length...), not for another machine.
The command prints a JSON summary (``"kind": "surerank.calibration"``) that ``surerank report --trust``
draws, as it does the artifact itself.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import surerank
from surerank.cli._common import DATASETS, parse_options
from surerank.errors import InputError, SureRankError
from surerank.eval.datasets import dataset_file
from surerank.formats import read_qrels, read_queries, read_run
from surerank.registry import create
from surerank.trust.artifact import fit_trust
from surerank.types import Candidate, Query, RankedList

logger = logging.getLogger(__name__)

EXAMPLES = """examples:
  surerank calibrate --input dl19 --qrels dl19 --ranker embedding --method platt \\
      --abstain u_lin --abstain-rate 0.1 --cutoff-alpha 0.2 --output embedding.trust.json
  surerank calibrate --input dl19 --input dl20 --qrels dl19 --qrels dl20 --ranker embedding \\
      --output emb.trust.json
  surerank calibrate --run dl19.embedding.run --ranker embedding --qrels dl19 \\
      --method isotonic --output embedding.trust.json
""" + DATASETS


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "calibrate", help="fit calibration / abstention / conformal cutoff on labelled queries",
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", type=Path, action="append",
                     help="queries + candidates (RankGPT JSON as in trec-dl/, or JSONL); repeatable")
    src.add_argument("--run", type=Path, action="append",
                     help="an already scored TREC run file (scores are used as-is); repeatable")
    p.add_argument("--qrels", type=Path, action="append", required=True,
                   help="TREC qrels: qid Q0 docid grade; repeatable (the judgments are merged)")
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


def check_options(args: argparse.Namespace) -> None:
    """Option values the fit would refuse only after scoring; refused here, before."""
    if args.abstain_rate is not None and not 0 <= args.abstain_rate < 1:
        raise InputError(f"--abstain-rate: must be in [0, 1), got {args.abstain_rate}")
    if args.abstain_quality is not None and not 0 <= args.abstain_quality <= 1:
        raise InputError(f"--abstain-quality: must be in [0, 1] (a mean nDCG@10), got {args.abstain_quality}")
    if args.cutoff_alpha is not None and not 0 < args.cutoff_alpha < 1:
        raise InputError(f"--cutoff-alpha: must be in (0, 1), got {args.cutoff_alpha}")
    if not 0 < args.delta < 1:
        raise InputError(f"--delta: must be in (0, 1), got {args.delta}")
    if args.confidence_k < 1:
        raise InputError(f"--confidence-k: must be >= 1, got {args.confidence_k}")
    if args.output.is_dir():
        raise InputError(f"--output {args.output}: is a folder; give the artifact's file name")
    if not args.output.parent.is_dir():
        raise InputError(f"--output {args.output}: folder {args.output.parent} does not exist")


def read_all_qrels(paths: list[Path]) -> dict[str, dict[str, int]]:
    """Merge several qrels files; one (query, document) judged differently in two files is an error."""
    merged: dict[str, dict[str, int]] = {}
    origin: dict[str, Path] = {}
    for path in paths:
        for qid, docs in read_qrels(path).items():
            qid = str(qid)
            mine = merged.setdefault(qid, {})
            for doc, grade in docs.items():
                if doc in mine and mine[doc] != grade:
                    raise InputError(f"--qrels: query {qid!r} document {doc!r} is judged {mine[doc]} in "
                                     f"{origin[qid]} and {grade} in {path}")
                mine[str(doc)] = int(grade)
            origin.setdefault(qid, path)
    return merged


def _check_ids(by_file: list[tuple[Path, list[str]]], qrels: dict[str, Any], qrels_paths: list[Path]) -> None:
    """Every query id once across the files, and at least one judged query (else nothing can be fitted)."""
    seen: dict[str, Path] = {}
    for path, qids in by_file:
        for qid in qids:
            if qid in seen:
                where = "twice in" if seen[qid] == path else f"in {seen[qid]} and in"
                raise InputError(f"query {qid!r} appears {where} {path}: query ids must be unique across "
                                 "the calibration files (their judgments would be ambiguous)")
            seen[qid] = path
    judged = [q for q in seen if q in qrels]
    if not judged:
        sample = ", ".join(repr(q) for q in list(seen)[:3])
        judged_sample = ", ".join(repr(q) for q in list(qrels)[:3])
        raise InputError(f"none of the {len(seen)} queries of {', '.join(str(p) for p, _ in by_file)} has "
                         f"judgments in {', '.join(map(str, qrels_paths))} (query ids such as {sample}; "
                         f"judged ids such as {judged_sample}): check that the files belong together")
    missing = len(seen) - len(judged)
    if missing:
        logger.warning("%d of %d calibration queries have no judgments and are left out of the fit",
                       missing, len(seen))


def run(args: argparse.Namespace) -> int:
    if args.input:  # dl19 / dl20 stand for the TREC DL files
        args.input = [dataset_file(p, "queries") for p in args.input]
    args.qrels = [dataset_file(p, "qrels") for p in args.qrels]
    check_options(args)
    options = parse_options(args.option)
    qrels = read_all_qrels(args.qrels)
    if args.run:
        lists_by_file = [(path, _ranked_from_run(path, args.ranker)) for path in args.run]
        _check_ids([(p, [r.query.id for r in lists]) for p, lists in lists_by_file], qrels, args.qrels)
        lists = [r for _, file_lists in lists_by_file for r in file_lists]
        description = _describe(args.ranker, options)
        sources = [str(p) for p in args.run]
    else:
        queries_by_file = [(path, _read_queries(path)) for path in args.input]
        _check_ids([(p, [q.id for q in qs]) for p, qs in queries_by_file], qrels, args.qrels)
        ranker = surerank.Reranker(args.ranker, **options)
        description = ranker.describe()  # loads the model: a bad model fails here, before scoring
        lists = ranker.rank_many([q for _, qs in queries_by_file for q in qs])
        sources = [str(p) for p in args.input]
    artifact = fit_trust(
        lists, qrels, description,
        calibration=None if args.method == "none" else args.method,
        relevance_level=args.relevance_level, unjudged=args.unjudged,
        abstention=args.abstain, abstain_rate=args.abstain_rate, abstain_quality=args.abstain_quality,
        confidence_k=args.confidence_k, cutoff_alpha=args.cutoff_alpha, cutoff_kind=args.cutoff_kind,
        cutoff_method=args.cutoff_method, delta=args.delta, scope=args.scope, source=sources,
    )
    artifact.fitted_on["qrels"] = [str(p) for p in args.qrels]
    artifact.save(args.output)
    summary = artifact.summary(str(args.output)).to_dict()
    print(json.dumps(summary, indent=2))  # noqa: T201 - the command's answer
    return 0


def _ranked_from_run(path: Path, ranker: str) -> list:
    run = read_run(path)
    lists = []
    for qid, docs in run.items():
        query = Query(text="", id=str(qid), candidates=[Candidate(id=str(d), text="") for d in docs])
        lists.append(RankedList.from_scores(query, [float(s) for s in docs.values()], ranker=ranker))
    return lists


def _describe(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The configuration `rerank --trust` will compare against: the ranker's own describe().

    Building the ranker loads its model but scores nothing; when it cannot be built here (a missing
    extra), the name and options are recorded instead, with a warning that rerank may refuse them.
    """
    try:
        return dict(create(name, **options).describe())
    except (SureRankError, ImportError, OSError) as error:
        logger.warning("could not build ranker %r to record its configuration (%s); recording name and "
                       "options only, which `rerank --trust` may not accept", name, error)
        return {"ranker": name, **options}


def _read_queries(path: Path) -> list:
    return read_queries(path)
