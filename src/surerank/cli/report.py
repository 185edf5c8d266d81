"""``surerank report``: one self-contained HTML page from evaluation, trust, robustness and throughput."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from surerank.errors import InputError
from surerank.eval.datasets import load_trec_dl
from surerank.formats import read_qrels
from surerank.report import (
    EVAL_KIND,
    RunSpec,
    TrustFigures,
    build_report,
    evaluate_runs,
    evaluation_from_json,
    figures_from_eval,
    load_json,
    read_robustness,
    read_throughput,
    read_training,
    read_trust,
    write_report,
)

logger = logging.getLogger(__name__)

EXAMPLES = """examples:
  surerank report --output report.html --qrels dl19 --qrels dl20 \\
      --run dl19:bm25=dl19-bm25.run --run dl19:embedding=dl19-emb.run \\
      --run dl20:bm25=dl20-bm25.run --run dl20:embedding=dl20-emb.run \\
      --robustness robustness-embedding.json --trust trust.json --throughput throughput.json
  surerank report --output report.html --eval-json eval.json --baseline bm25
  surerank report --output training.html --training my-reranker
--qrels NAME=PATH names a dataset's judgments; dl19 / dl20 alone use the TREC DL qrels (dl19 ships with
surerank, dl20 is read from SURERANK_DATA).
--run DATASET:RANKER=PATH adds a TREC run file; significance marks compare each ranker with --baseline
(default bm25 when present, else the first run of the dataset).
Every JSON input names its kind and version ("kind": "surerank.eval", "surerank.trust", ...); a file of
another kind, or with a field missing, is refused with the file and the field.
"""

QRELS_ALIASES = {"dl19": 19, "dl20": 20}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report", help="write one self-contained HTML report with plots",
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output", "-o", type=Path, required=True, help="the HTML file to write")
    parser.add_argument("--title", default="surerank report")
    ev = parser.add_argument_group("evaluation")
    ev.add_argument("--qrels", action="append", default=[], metavar="NAME=PATH",
                    help="judgments of one dataset; repeatable (dl19 / dl20 alone: the shared qrels)")
    ev.add_argument("--run", action="append", default=[], metavar="DATASET:RANKER=PATH",
                    help="a TREC run file; repeatable")
    ev.add_argument("--eval-json", action="append", default=[], metavar="[DATASET=]PATH",
                    help="evaluation JSON with per-query values, e.g. from `surerank eval --json`; "
                         "DATASET= names the dataset (default: from the qrels file name)")
    ev.add_argument("--baseline", help="ranker the significance marks compare against")
    ev.add_argument("--rel-level", type=int, default=2, help="lowest relevant grade for binary measures")
    other = parser.add_argument_group("other sections (each optional, each repeatable)")
    other.add_argument("--trust", action="append", default=[], type=Path, metavar="PATH",
                       help="a trust artifact or the summary `surerank calibrate` prints (in-sample figures), "
                            "`surerank eval --json` of trust runs, or trust figures (kind "
                            "surerank.trust-figures, e.g. benchmarks/trust_dl.py --json)")
    other.add_argument("--robustness", action="append", default=[], type=Path, metavar="PATH",
                       help="JSON written by `surerank robustness --output`")
    other.add_argument("--throughput", action="append", default=[], type=Path, metavar="PATH",
                       help="throughput rows (kind surerank.throughput, e.g. benchmarks/throughput.py --json)")
    other.add_argument("--training", action="append", default=[], type=Path, metavar="DIR",
                       help="a model folder written by `surerank train --student` (its training_card.json), or "
                            "its work folder / training_result.json (a collapsed run): the training curve and "
                            "base, student and teacher on the dev split")
    parser.set_defaults(func=run)


def resolve_qrels(specs: list[str]) -> tuple[dict[str, dict], list[str]]:
    qrels, sources = {}, []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            if name.lower() not in QRELS_ALIASES:
                known = ", ".join(QRELS_ALIASES)
                raise InputError(f"--qrels {spec!r}: expected NAME=PATH, or one of {known}")
            qrels[name.lower()] = load_trec_dl(QRELS_ALIASES[name.lower()])[1]
            sources.append(f"{name} qrels")
            continue
        if not name or not path:
            raise InputError(f"--qrels {spec!r}: expected NAME=PATH")
        qrels[name] = read_qrels(Path(path))
        sources.append(path)
    return qrels, sources


def run(args: argparse.Namespace) -> int:
    sources: list[str] = []
    evaluation: dict = {}
    trust = TrustFigures()
    if args.run:
        qrels, qrels_sources = resolve_qrels(args.qrels)
        specs = [RunSpec.parse(text) for text in args.run]
        if len(qrels) == 1:  # one dataset: runs may leave it out
            only = next(iter(qrels))
            specs = [RunSpec(only, s.ranker, s.path) if s.dataset == "default" else s for s in specs]
        evaluation = evaluate_runs(specs, qrels, rel_level=args.rel_level)
        sources += qrels_sources + [str(s.path) for s in specs]
    elif args.qrels:
        raise InputError("--qrels given without any --run")
    for spec in args.eval_json:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = "", spec
        data = load_json(path)
        if not isinstance(data, dict) or data.get("kind") != EVAL_KIND:
            found = data.get("kind") if isinstance(data, dict) else type(data).__name__
            raise InputError(f"{path}: field 'kind' must be {EVAL_KIND!r} (the JSON of `surerank eval "
                             f"--json`), got {found!r}")
        for dataset, rankers in evaluation_from_json(data, path, dataset=name or None).items():
            evaluation.setdefault(dataset, {}).update(rankers)
        trust.merge(figures_from_eval(data, path, dataset=name or None))  # runs written by rerank --trust
        sources.append(path)
    labels = _labels(args.trust)
    for path, label in zip(args.trust, labels, strict=True):
        trust.merge(read_trust(load_json(path), str(path), label=label))
    robustness = [read_robustness(load_json(path), str(path)) for path in args.robustness]
    throughput = [read_throughput(load_json(path), str(path)) for path in args.throughput]
    training = [read_training(path) for path in args.training]
    sources += [str(p) for p in [*args.trust, *args.robustness, *args.throughput, *args.training]]
    html = build_report(evaluation=evaluation or None, trust=None if trust.empty else trust,
                        robustness=robustness, throughput=throughput, training=training, baseline=args.baseline,
                        title=args.title, sources=[Path(s).name for s in sources])
    path = write_report(args.output, html)
    sys.stdout.write(f"wrote {path} ({len(html):,} bytes)\n")
    return 0


def _labels(paths: list[Path]) -> list[str]:
    """Each --trust file's label: its stem, or its parent/stem when two files share a stem."""
    stems = [p.stem for p in paths]
    return [f"{p.parent.name}/{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in paths]
