"""``surerank eval``: run files + judgments → metrics table, per-query values, significance."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from surerank.cli._common import DATASETS, echo, read_scored
from surerank.errors import InputError
from surerank.eval.datasets import dataset_file
from surerank.eval.metrics import DEFAULT_MEASURES, evaluate, paired_test
from surerank.formats import read_qrels
from surerank.storage import atomic_write_json
from surerank.trust.cli_options import trust_summary


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate runs against judgments (nDCG, MAP, MRR, Recall, P)",
        description="Evaluate one or more runs (TREC run files or surerank JSONL output) against TREC "
                    "qrels with trec_eval conventions: graded gains for nDCG, grade >= --rel-level "
                    "relevant for MAP, MRR, Recall and P; tied scores are ordered by docid "
                    "(descending) as trec_eval does, and the command says how many ties a run has. "
                    "With --baseline, every run gets a paired significance test per measure against it.",
        epilog="example:\n  surerank eval --run dl19.embedding.run --baseline dl19.bm25.run --qrels dl19\n" + DATASETS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--run", action="append", required=True, help="a run to evaluate (repeatable)")
    parser.add_argument("--qrels", required=True, help="TREC qrels (or 3-column Cranfield judgments), or dl19")
    parser.add_argument("--baseline", help="run to test every --run against (paired test per query)")
    parser.add_argument("--measures", default=",".join(DEFAULT_MEASURES),
                        help="comma-separated: nDCG@k, MAP, MRR@k, R@k, P@k (default %(default)s)")
    parser.add_argument("--rel-level", type=int, default=2, help="minimum relevant grade for binary measures")
    parser.add_argument("--test", default="t-test", choices=["t-test", "permutation"],
                        help="paired significance test")
    parser.add_argument("--per-query", action="store_true", help="also print every query's values")
    parser.add_argument("--json", help="write aggregate and per-query values to this JSON file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    measures = [m.strip() for m in args.measures.split(",") if m.strip()]
    if not measures:
        raise InputError("--measures is empty")
    qrels = read_qrels(dataset_file(args.qrels, "qrels"))
    names = list(args.run)
    if args.baseline and args.baseline not in names:
        names.insert(0, args.baseline)
    results = {name: evaluate(read_scored(name), qrels, measures, args.rel_level) for name in names}
    base = results.get(args.baseline) if args.baseline else None
    label = max(len(Path(n).name) for n in names)
    echo(f"{'run':<{label}}" + "".join(f"{m:>12}" for m in measures) + f"{'queries':>9}")
    report: dict[str, dict] = {}
    for name, result in results.items():
        cells = []
        tests = {}
        for m in measures:
            mark = ""
            if base is not None and name != args.baseline:
                t = paired_test(result.values(m), base.values(m), m, test=args.test)
                tests[m] = {"difference": t.mean_difference, "p_value": t.p_value}
                mark = "*" if t.p_value < 0.05 else " "
            cells.append(f"{result.aggregate[m]:>11.4f}{mark or ' '}")
        echo(f"{Path(name).name:<{label}}" + "".join(cells) + f"{result.queries_evaluated:>9}")
        report[name] = {"aggregate": result.aggregate, "per_query": result.per_query,
                        "queries": result.queries_evaluated, "tests_vs_baseline": tests,
                        "ties": {"order": result.order, **asdict(result.ties)}}
        if args.per_query:
            for qid, values in result.per_query.items():
                echo(f"  {qid:<{label - 2}}" + "".join(f"{values[m]:>11.4f} " for m in measures))
    if base is not None:
        echo(f"* p < 0.05, paired {args.test} against {Path(args.baseline).name}")
    for name, result in results.items():  # trec_eval's tie rule, said out loud where it matters
        if result.ties:
            echo(f"note: {Path(name).name}: {result.ties.describe()}; as in trec_eval, tied documents "
                 "are ordered by docid (descending), not by the rank column")
    for name in names:  # ECE/Brier, keep flags, abstention of JSONL runs that carry them
        if (trust := trust_summary(name, qrels, args.rel_level, echo)) is not None:
            report[name]["trust"] = trust
    if args.json:
        atomic_write_json(args.json, {"kind": "surerank.eval", "version": 1,  # surerank report reads it
                                      "qrels": args.qrels, "measures": measures, "rel_level": args.rel_level,
                                      "baseline": args.baseline, "runs": report}, indent=1)
        echo(f"wrote {args.json}")
    return 0
