"""The report's readers: every input file becomes a typed object before any HTML is drawn.

Run files + qrels become an :data:`Evaluation`; ``surerank eval --json`` its runs' :class:`EvalResult`
(and the trust parts, :class:`TrustFigures`); a trust artifact or calibrate's summary its
:class:`FitSummary`'s figures; robustness files a :class:`RobustnessResult`; throughput files a
:class:`ThroughputTable`; a training run's card a :class:`TrainingRun`.  Each refuses another kind, or a
missing or mistyped field, naming the file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from surerank import documents as schema
from surerank.engine.checkpoint.training_run import TrainingRun
from surerank.errors import InputError
from surerank.eval.metrics import EvalResult, evaluate
from surerank.formats import read_run
from surerank.report.documents import (
    EVAL_KIND,
    THROUGHPUT_KIND,
    TRUST_KINDS,
    ThroughputTable,
    TrustFigures,
    kind_of,
    read_bins,
    scalars,
)
from surerank.robustness import RobustnessResult
from surerank.trust.artifact import FitSummary, TrustArtifact

logger = logging.getLogger(__name__)

DEFAULT_MEASURES = ("nDCG@10", "MAP", "MRR@10", "R@100")  # as surerank.eval.metrics
# per_query: qid -> measure -> value; aggregate: measure -> value
RankerEval = dict[str, Any]
Evaluation = dict[str, dict[str, RankerEval]]  # dataset -> ranker -> {"aggregate", "per_query", "source"}


@dataclass(frozen=True)
class RunSpec:
    """One run file to evaluate: which dataset (qrels) it belongs to and the ranker's label."""

    dataset: str
    ranker: str
    path: Path

    @classmethod
    def parse(cls, text: str) -> RunSpec:
        """``dataset:ranker=path`` (or ``ranker=path`` for a single, unnamed dataset)."""
        label, sep, path = text.partition("=")
        if not sep or not path or not label:
            raise InputError(f"--run {text!r}: expected DATASET:RANKER=PATH (or RANKER=PATH)")
        dataset, _, ranker = label.rpartition(":")
        return cls(dataset=dataset or "default", ranker=ranker, path=Path(path))


def evaluate_runs(runs: Sequence[RunSpec], qrels: Mapping[str, Mapping[str, Mapping[str, int]]],
                  measures: Sequence[str] = DEFAULT_MEASURES, rel_level: int = 2) -> Evaluation:
    """Evaluate each run against its dataset's qrels (through surerank.eval.metrics)."""
    evaluation: Evaluation = {}
    for spec in runs:
        if spec.dataset not in qrels:
            raise InputError(f"run {spec.path}: no qrels given for dataset {spec.dataset!r} "
                             f"(known: {', '.join(sorted(qrels)) or 'none'})")
        run = read_run(spec.path)
        dataset_qrels = qrels[spec.dataset]
        judged = {qid: dataset_qrels[qid] for qid in run if qid in dataset_qrels}
        result = evaluate(run, judged or dataset_qrels, measures=tuple(measures), rel_level=rel_level)
        per_query = {str(q): dict(v) for q, v in result.per_query.items()}
        missing = [q for q in run if str(q) not in per_query]
        if missing:  # a query of the run without judgments is not scored: say so, do not drop silently
            logger.warning("%s: %d queries have no judgments in %s qrels and are not scored",
                           spec.path, len(missing), spec.dataset)
        evaluation.setdefault(spec.dataset, {})[spec.ranker] = {
            "aggregate": dict(result.aggregate), "per_query": per_query, "source": str(spec.path),
        }
    return evaluation


def dataset_label(qrels_path: Any) -> str:
    """``…/qrels.dl19-passage.txt`` → ``dl19-passage``: a readable dataset name from a qrels path."""
    if not qrels_path:
        return "default"
    name = Path(str(qrels_path)).name
    name = name.removeprefix("qrels.").removeprefix("qrels-")
    return Path(name).stem if "." in name else name


def eval_results(data: Any, where: str) -> dict[str, Any]:
    """``surerank eval --json`` → ``{run path: EvalResult}`` (the library's dataclass), checked field by field."""
    schema.header(data, EVAL_KIND, (1,), where)
    runs = schema.get(data, "runs", "object", where)
    out = {}
    for run, record in runs.items():
        path = f"runs.{run}"
        if not isinstance(record, Mapping):
            raise InputError(f"{where}: field '{path}' must be a JSON object")
        aggregate = scalars(schema.get(record, "aggregate", "object", where, path), where, f"{path}.aggregate")
        per_query = {}
        for qid, values in schema.get(record, "per_query", "object", where, path).items():
            if not isinstance(values, Mapping):
                raise InputError(f"{where}: field '{path}.per_query.{qid}' must be a JSON object")
            per_query[str(qid)] = scalars(values, where, f"{path}.per_query.{qid}")
        queries = schema.get(record, "queries", "int", where, path)
        out[str(run)] = EvalResult(aggregate=aggregate, per_query=per_query, queries_evaluated=queries)
    return out


def evaluation_from_json(data: Any, source: str = "", dataset: str | None = None) -> Evaluation:
    """Read ``surerank eval --json`` (``"kind": "surerank.eval"``): one dataset, one ranker per run file.

    The dataset is named by ``dataset`` or, by default, after the qrels file; rankers after the run files.
    """
    where = source or "evaluation JSON"
    results = eval_results(data, where)
    label = dataset or dataset_label(data.get("qrels"))
    baseline = data.get("baseline")
    out: Evaluation = {label: {}}
    for run, result in results.items():
        out[label][Path(run).stem or run] = {
            "aggregate": dict(result.aggregate), "per_query": result.per_query, "source": run,
            "baseline": baseline is not None and str(baseline) == run,
        }
    return out



def figures_from_fit(summary: Any, label: str) -> TrustFigures:
    """The in-sample figures of a fit (:class:`surerank.trust.FitSummary`, from calibrate or an artifact)."""
    figures = TrustFigures()
    in_sample = summary.fitted_on.get("calibration_in_sample") or {}
    if summary.calibration and in_sample.get("reliability"):
        figures.add_bins(f"{label}: {summary.calibration} (in-sample)", in_sample["reliability"],
                         {k: v for k, v in in_sample.items() if k != "reliability"})
    curve = (summary.abstention or {}).get("risk_coverage")
    if curve:
        figures.add_curve(f"{label}: {summary.abstention['confidence']} (in-sample)", curve["measure"],
                          curve["coverage"], curve["values"])
    if summary.cutoff is not None:
        c, report = summary.cutoff, summary.cutoff.get("report") or {}
        figures.add_rows("conformal cutoffs (in-sample)", [{
            "artifact": label, "alpha": c["alpha"], "method": f"{c['method']}-{c['kind']}", "k": c.get("k"),
            "threshold": c.get("threshold"), "calibration_miss_rate": report.get("calibration_miss_rate"),
            "first_stage_miss_rate": report.get("first_stage_miss_rate"),
            "calibration_queries": report.get("calibration_queries")}], x="alpha")
    return figures


def figures_from_eval(data: Any, where: str, dataset: str | None = None) -> TrustFigures:
    """The trust parts of ``surerank eval --json`` (runs written by ``rerank --trust`` as JSONL)."""
    eval_results(data, where)  # the document is an evaluation first: checked as one
    label = dataset or dataset_label(data.get("qrels"))
    figures = TrustFigures()
    summary_rows = []
    for run, record in data["runs"].items():
        trust = record.get("trust")
        if trust is None:
            continue
        path, name = f"runs.{run}.trust", f"{label} / {Path(run).stem or run}"
        if not isinstance(trust, Mapping):
            raise InputError(f"{where}: field '{path}' must be a JSON object")
        calibration = schema.get(trust, "calibration", "object", where, path, optional=True)
        if calibration is not None:
            bins = read_bins(schema.get(calibration, "reliability", "list", where, f"{path}.calibration"), where,
                         f"{path}.calibration.reliability")
            figures.add_bins(f"{name} / calibration", bins,
                             {k: v for k, v in calibration.items() if k != "reliability"})
        abstention = schema.get(trust, "abstention", "object", where, path, optional=True)
        if abstention is not None:
            here = f"{path}.abstention.risk_coverage"
            curve = schema.get(abstention, "risk_coverage", "object", where, f"{path}.abstention")
            xs = schema.numbers(curve, "coverage", where, here, non_empty=True)
            figures.add_curve(f"{name} / abstention", schema.get(curve, "measure", "str", where, here), xs,
                              schema.numbers(curve, "values", where, here, length=len(xs)))
        cutoff = schema.get(trust, "cutoff", "object", where, path, optional=True)
        if cutoff is not None:
            summary_rows.append({"run": name, **scalars(cutoff, where, f"{path}.cutoff", nullable=True)})
    if summary_rows:
        figures.add_rows("what the cutoffs kept", summary_rows)
    return figures


def read_trust(data: Any, path: str, label: str | None = None) -> TrustFigures:
    """One ``--trust`` file: a trust artifact, calibrate's summary, trust figures or eval JSON with trust."""
    kind = kind_of(data, path, TRUST_KINDS)
    label = label or Path(path).stem
    if kind == "surerank.trust":
        figures = figures_from_fit(TrustArtifact.from_dict(data, where=path).summary(path), label)
    elif kind == "surerank.calibration":
        figures = figures_from_fit(FitSummary.from_dict(data, where=path), label)
    elif kind == EVAL_KIND:
        figures = figures_from_eval(data, path)
    else:
        return TrustFigures.from_dict(data, where=path)
    if figures.empty:
        raise InputError(f"{path}: a {kind} document with nothing to draw (no calibration bins, abstention "
                         "curve, cutoff or per-run trust metrics); fit with --method/--abstain/--cutoff-alpha, "
                         "or evaluate a JSONL run written by `rerank --trust`")
    return figures


def read_robustness(data: Any, path: str) -> RobustnessResult:
    """``surerank robustness --output`` JSON as a :class:`RobustnessResult`, every field the report draws checked,
    so an untyped, truncated or hand-made file is refused with its name and the field."""
    return RobustnessResult.from_dict(data, where=path)


def read_training(path: str | Path) -> TrainingRun:
    """A ``surerank train --student`` run: its model folder (``training_card.json``), its work folder or
    ``training_result.json`` (a collapsed run has only that), as a :class:`TrainingRun`, every field the section
    draws checked (a missing or mistyped one named with the file)."""
    return TrainingRun.load(path)


def read_throughput(data: Any, path: str) -> ThroughputTable:
    kind_of(data, path, (THROUGHPUT_KIND,))
    return ThroughputTable.from_dict(data, where=path)


__all__ = ["DEFAULT_MEASURES", "Evaluation", "RankerEval", "RunSpec", "dataset_label", "eval_results",
           "evaluate_runs", "evaluation_from_json", "figures_from_eval", "figures_from_fit", "read_robustness",
           "read_throughput", "read_training", "read_trust"]
