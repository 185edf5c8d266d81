"""``surerank train``: learn from your own lists.  ``--student`` trains a reranker model (``surerank[train]``),
``--fusion`` fits the weights of a fusion of rankers.

``--student cross-encoder|bi-encoder`` distils a teacher (``--teacher``, any ranker spec: its scores of the
lists are cached in the work folder and reused by a resumed run) and/or learns from judgments (``--qrels``),
on sentence-transformers' trainers, starting from ``--model`` (default: the embedded all-MiniLM-L6-v2).  The
model folder it writes carries ``training_card.json`` and loads with ``Reranker("cross-encoder"|"embedding",
model=DIR)``.  Started again after a kill, it resumes from the last checkpoint in ``OUTPUT.work``.  A collapsed
student is not saved: the command says why and exits 1.  ``--calibrate QRELS`` then fits the trust layer of the
saved model on held-out judged queries (the dev split, or ``--calibrate-input``) and writes ``OUTPUT/trust.json``,
which ``surerank rerank --trust`` and ``surerank serve`` apply (never applied unasked).  See docs/train.md.

``--fusion``: learn fusion weights on a dev split and write them as a JSON document.

``--soup STUDENT STUDENT ...``: average the weights of students trained from one checkpoint (seeds, or recipes)
into the ``--output`` folder (a model soup; its card names the members).  See docs/train.md.

``--synthesise CORPUS``: training queries a corpus does not have (InPars/UDAPDR): an LLM backend (``--llm``,
options ``-o KEY=VALUE``) writes queries for sampled passages, a round trip keeps those whose passage BM25 finds
again in its top ``--round-trip-k``, and the folder ``--output`` receives the lists (``queries.json``, the
``--input`` of ``--student``), their qrels, every dropped query and why, and a summary.  Rerun after a kill, it
asks only for the passages not yet answered (the answers are cached).  See docs/synthetic.md.

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

from surerank.cli._common import DATASETS, echo, parse_options
from surerank.errors import InputError
from surerank.eval.datasets import dataset_file
from surerank.formats import read_qrels, read_queries, read_run
from surerank.llm import BACKENDS
from surerank.train.calibrate import CalibrationSettings
from surerank.train.config import STUDENTS, TEACHER_LABELS, TrainConfig
from surerank.train.fusion import fit_fusion, member_runs
from surerank.train.model import TrainingCollapsedError, train_model
from surerank.train.soup import soup_students
from surerank.train.synthetic import SynthesisConfig, synthesise
from surerank.trust.abstention import CONFIDENCES
from surerank.trust.calibration import CALIBRATORS

EXAMPLES = """examples:
  surerank train --student bi-encoder --input dl19 --teacher '{"name": "embedding", "model": "all-mpnet-base-v2"}' \\
      --loss kl --temperature 0.05 --epochs 2 --output minilm-distilled
  surerank train --student cross-encoder --input lists.json --qrels my.qrels --loss bce --output my-reranker
  surerank train --student bi-encoder --input dl19 --teacher TEACHER --calibrate dl20 --calibrate-input dl20 \\
      --output minilm-distilled      # + minilm-distilled/trust.json: rerank ... --trust minilm-distilled/trust.json
  surerank train --fusion --input dl19 --qrels dl19 --method combsum --norm zscore \\
      --rankers '[{"name": "bm25", "idf": "background"}, "embedding"]' --output hybrid.weights.json
  surerank rerank --input dl20 --qrels dl20 --ranker fusion -o weights=hybrid.weights.json --output dl20.run
  surerank train --synthesise cran.all.1400 --llm openai -o base_url=http://127.0.0.1:8000/v1 -o model=M \\
      --passages 500 --output cranfield-synthetic      # then: --student ... --input cranfield-synthetic/queries.json
  surerank train --soup student-seed0 student-seed1 student-seed2 --output student-soup   # average their weights
  surerank train --fusion --run dl19.bm25.run --run dl19.embedding.run --qrels dl19 \\
      --rankers '["bm25", "embedding"]' --output w.json          # scores already at hand: nothing is scored
""" + DATASETS


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train", help="learn from your lists: a reranker model (--student) or fusion weights (--fusion)",
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--student", choices=STUDENTS, help="train a reranker model of this kind")
    what.add_argument("--fusion", action="store_true", help="fit the weights of a fusion of rankers")
    what.add_argument("--soup", type=Path, nargs="+", metavar="STUDENT",
                      help="average the weights of two or more students trained from one checkpoint (a model soup) "
                           "into the --output folder")
    what.add_argument("--synthesise", type=Path, metavar="CORPUS",
                      help="write training queries for a corpus (JSONL or SMART) with an LLM backend")
    p.add_argument("--rankers", help='--fusion: the members, a JSON list: names or {"name": ..., options}')
    src = p.add_mutually_exclusive_group()
    src.add_argument("--input", type=Path, help="queries + first-stage candidates (RankGPT JSON or JSONL), "
                                                "or dl19/dl20")
    src.add_argument("--run", type=Path, action="append",
                     help="--fusion: a member's scored TREC run, once per member in --rankers order")
    p.add_argument("--qrels", type=Path, help="TREC qrels (or dl19/dl20): --fusion's dev judgments; a "
                                              "student's labels (bce, mnrl, bce-mix) or dev nDCG")
    p.add_argument("--method", default="combsum", choices=["combsum", "combmnz", "rrf"],
                   help="fusion method (default combsum)")
    p.add_argument("--norm", default="zscore", choices=["zscore", "minmax", "none"],
                   help="per-list score normalisation before CombSUM/CombMNZ (default zscore)")
    p.add_argument("--k", type=int, default=60, help="RRF's k (default 60)")
    p.add_argument("--passes", type=int, default=10, help="most coordinate-ascent passes (default 10)")
    p.add_argument("--output", type=Path, required=True,
                   help="--fusion: the weights file (JSON); --student: the model folder (new or empty)")
    _student_arguments(p.add_argument_group("--student options"))
    _synthesis_arguments(p.add_argument_group("--synthesise options"))
    p.set_defaults(func=run)


def _synthesis_arguments(g: Any) -> None:
    g.add_argument("--llm", default="openai", help=f"the LLM backend: one of {', '.join(BACKENDS)} (default openai)")
    g.add_argument("--option", "-o", action="append", metavar="KEY=VALUE",
                   help="an LLM backend option, repeatable, e.g. -o base_url=http://127.0.0.1:8000/v1 -o model=M")
    _defaulted_flags(g, SynthesisConfig, "synth_", (
        ("--passages", "passages", int, "passages sampled, seeded; None: every passage"),
        ("--queries-per-passage", "queries_per_passage", int, "requests per passage"),
        ("--shots", "shots", int, "few-shot examples in each prompt (0: zero-shot)"),
        ("--round-trip-k", "k", int, "keep a query when its passage is in BM25's top k for it"),
        ("--round-trip-depth", "depth", int, "first-stage candidates per kept query"),
        ("--max-calls", "max_calls", int, "a call budget over the whole run")))


def _defaulted_flags(g: Any, settings: type, prefix: str, rows: tuple[tuple[str, str, type, str], ...]) -> None:
    """One flag per (flag, field, type, help) row, its default and --help text from the dataclass ``settings``."""
    fields = settings.__dataclass_fields__  # type: ignore[attr-defined]
    for flag, name, kind, text in rows:
        g.add_argument(flag, dest=f"{prefix}{name}", type=kind, default=fields[name].default,
                       metavar=flag.lstrip("-").replace("-", "_").upper(),
                       help=f"{text} (default {fields[name].default})")


def run_synthesis(args: argparse.Namespace) -> int:
    config = SynthesisConfig(
        passages=args.synth_passages, queries_per_passage=args.synth_queries_per_passage, seed=args.seed,
        shots=args.synth_shots, k=args.synth_k, depth=args.synth_depth, max_calls=args.synth_max_calls)
    result = synthesise(args.synthesise, args.output, args.llm, config,
                        backend_options=parse_options(args.option))
    echo(json.dumps({"output": str(args.output), "complete": result.complete, "counts": result.counts,
                     "dropped": result.dropped, "files": result.files}, indent=2))
    return 0 if result.complete else 1


def _student_arguments(g: Any) -> None:
    g.add_argument("--teacher", help='the teacher: a ranker name or JSON {"name": ..., options}')
    g.add_argument("--model", help="the checkpoint the student starts from (default: all-MiniLM-L6-v2)")
    g.add_argument("--loss", help="cross-encoder: mse, listnet, ranknet (teacher), bce (judgments), bce-mix (both: "
                                  "judged pairs' judgments, the teacher's soft labels elsewhere); bi-encoder: kl, "
                                  "margin-mse (teacher), embedding-mse (an embedding teacher's vectors of each "
                                  "query and passage), mnrl (judgments)")
    g.add_argument("--teacher-labels", choices=TEACHER_LABELS, default="scores",
                   help="what the teacher's output is: scores (default), or order: a comparison-based teacher "
                        "(pairwise/setwise/listwise LLM) whose ranking is the label (n - rank), its scores unread")
    _defaulted_flags(g, TrainConfig, "", (
        ("--candidates", "candidates", int, "first-stage candidates per list"),
        ("--negatives", "negatives", int, "mined negatives per judged positive"),
        ("--margin", "margin", float, "an unjudged negative must score this far below the weakest positive"),
        ("--epochs", "epochs", float, "epochs"), ("--lr", "learning_rate", float, "learning rate"),
        ("--batch-size", "batch_size", int, "batch size"),
        ("--accumulation", "accumulation", int, "gradient accumulation steps"),
        ("--warmup", "warmup", float, "warm-up: a fraction of the steps (< 1) or steps"),
        ("--max-length", "max_length", int, "tokens per input"),
        ("--dev-fraction", "dev_fraction", float, "share of queries held out for dev"),
        ("--eval-steps", "eval_steps", int, "evaluate and checkpoint every N steps (default: each epoch)"),
        ("--max-steps", "max_steps", int, "stop after N optimiser steps (default: the epochs decide)"),
        ("--patience", "patience", int, "early stopping: evaluations without a better figure (0: off)"),
        ("--temperature", "temperature", float, "kl: temperature"),
        ("--teacher-temperature", "teacher_temperature", float, "kl: the teacher's own temperature"),
        ("--judgment-weight", "judgment_weight", float, "bce-mix: a judged pair's label is w * judgment + (1 - w) "
                                                        "* the teacher's soft label"),
        ("--relevance-level", "relevance_level", int, "bce-mix: a judged grade >= this is relevant"),
        ("--embedding-mix", "embedding_mix", float, "embedding-mse: each target this share of the way from the "
                                                    "untrained student's vector to the teacher's"),
        ("--seed", "seed", int, "seed")))
    g.add_argument("--select", choices=["dev", "loss"], default="dev",
                   help="the checkpoint kept: best dev ranking figure (default) or dev loss")
    g.add_argument("--work-dir", type=Path, help="checkpoints and the teacher cache (default OUTPUT.work)")
    g.add_argument("--teacher-cache", type=Path, help="the teacher's score cache (default WORK/teacher_scores.json)")
    g.add_argument("--no-dropout", dest="dropout", action="store_false",
                   help="train with the student's dropout off (all of it, as in eval mode); the default keeps the "
                        "model's own")
    g.add_argument("--no-group-by-length", dest="group_by_length", action="store_false",
                   help="embedding-mse: random batches of texts (the default groups texts of about one length, "
                        "so short queries are not padded to a passage's length)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--calibrate", type=Path, metavar="QRELS",
                   help="after saving, fit the trust layer of the saved model (default backend) on held-out queries "
                        "judged in QRELS (or dl19/dl20) and write OUTPUT/trust.json (apply: rerank --trust)")
    g.add_argument("--calibrate-input", type=Path, metavar="LISTS",
                   help="--calibrate: the held-out lists (default: the dev split's queries, their full lists)")
    g.add_argument("--calibrate-method", choices=list(CALIBRATORS), default="platt",
                   help="--calibrate: the calibration map (default platt)")
    g.add_argument("--calibrate-abstain", choices=list(CONFIDENCES), help="--calibrate: fit an abstention rule")
    g.add_argument("--calibrate-cutoff-alpha", type=float, metavar="ALPHA",
                   help="--calibrate: fit a conformal cutoff with this target miss rate")


def _spec(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare ranker name


def _calibration(args: argparse.Namespace) -> CalibrationSettings | None:
    """``--calibrate``'s settings; a --calibrate-* option without the judgments is refused, naming both."""
    if args.calibrate is None:
        given = [f for f, v in (("--calibrate-input", args.calibrate_input), ("--calibrate-abstain",
                 args.calibrate_abstain), ("--calibrate-cutoff-alpha", args.calibrate_cutoff_alpha)) if v is not None]
        if given:
            raise InputError(f"{given[0]}: calibration needs judgments of the held-out queries; give them with "
                             "--calibrate QRELS")
        return None
    lists = dataset_file(args.calibrate_input, "queries") if args.calibrate_input else None
    return CalibrationSettings(qrels=dataset_file(args.calibrate, "qrels"), lists=lists,
                               method=args.calibrate_method, abstention=args.calibrate_abstain,
                               cutoff_alpha=args.calibrate_cutoff_alpha)


def run_student(args: argparse.Namespace) -> int:
    if args.input is None:
        raise InputError("--student: give the training lists with --input")
    names = ("candidates", "negatives", "margin", "epochs", "learning_rate", "batch_size", "accumulation",
             "warmup", "max_length", "dev_fraction", "eval_steps", "max_steps", "patience", "temperature",
             "teacher_temperature", "seed", "select", "work_dir", "teacher_cache", "teacher_labels",
             "judgment_weight", "relevance_level", "embedding_mix", "dropout", "group_by_length")
    config = TrainConfig(output=args.output, student=args.student, base_model=args.model,
                         teacher=_spec(args.teacher), loss=args.loss,
                         qrels=dataset_file(args.qrels, "qrels") if args.qrels else None,
                         progress=not args.no_progress, calibrate=_calibration(args),
                         **{n: getattr(args, n) for n in names})
    queries = read_queries(dataset_file(args.input, "queries"))
    try:
        result = train_model(config, queries)
    except TrainingCollapsedError as e:
        echo(json.dumps({"status": "collapsed", "reason": e.reason, "result": e.result["result_file"]}, indent=2))
        return 1
    card = result.card
    echo(json.dumps({"status": "saved", "output": str(result.output), "student": card.student,
                     "loss": card.loss, "steps": card.steps, "epochs": card.epochs, "dev": card.dev["final"],
                     "dev_base": card.dev["base"], "training_fit": card.dev["training_fit"],
                     "resources": card.resources,
                     "trust": str(result.output / card.trust["file"]) if card.trust else None}, indent=2))
    return 0


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


def run_soup(args: argparse.Namespace) -> int:
    card = soup_students(args.soup, args.output)
    members = card.data["soup"]["members"]
    echo(json.dumps({"status": "saved", "output": str(args.output), "student": card.student, "loss": card.loss,
                     "members": [{k: m[k] for k in ("path", "loss", "seed")} for m in members]}, indent=2))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.synthesise:
        return run_synthesis(args)
    if args.soup:
        return run_soup(args)
    if args.input is None and args.run is None:
        raise InputError("--input (or, for --fusion, --run): give the lists to learn from")
    if args.student:
        return run_student(args)
    if args.rankers is None or args.qrels is None:
        raise InputError("--fusion: give --rankers and --qrels")
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
