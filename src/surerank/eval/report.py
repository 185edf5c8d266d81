"""One self-contained HTML report from evaluation, trust, robustness and throughput outputs.

Every section is optional: the report shows what it was given.  Plots are inline SVG drawn by
:mod:`surerank.eval.report_svg`, so the file opens offline and carries no script or font from the
network.  A short inline script marks each figure ``data-rendered="ok"`` once the browser has laid out
its marks, which is what the headless-browser test checks.

Inputs: TREC run files, and JSON documents that name their kind and version; each is read field by field
(:mod:`surerank.documents`) into the dataclass the library uses, and anything else is refused with the
file and the missing or mistyped field:

* evaluation: TREC run files + qrels, grouped by dataset (``dataset:ranker=path``), or ``surerank eval
  --json`` (``"kind": "surerank.eval"``, runs read as :class:`~surerank.eval.metrics.EvalResult`);
  significance is a two-sided paired t-test per query against a baseline;
* trust: a trust artifact (``surerank.trust``) or what ``surerank calibrate`` prints
  (``surerank.calibration``), both read as :class:`~surerank.trust.artifact.FitSummary` (in-sample
  reliability bins, abstention curve, conformal cutoff); the trust parts of ``surerank eval --json``;
  or :class:`TrustFigures` (``surerank.trust-figures``: what ``benchmarks/trust_dl.py --json`` writes);
* robustness: the JSON of ``surerank robustness`` (schema ``surerank.robustness/1``);
* throughput: :class:`ThroughputTable` (``surerank.throughput``: rows with a ``name`` and a rate column,
  what ``benchmarks/throughput.py --json`` writes).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from surerank import documents as schema
from surerank.errors import InputError
from surerank.eval import report_svg as svg

logger = logging.getLogger(__name__)

MAIN_MEASURE = "nDCG@10"
DEFAULT_MEASURES = ("nDCG@10", "MAP", "MRR@10", "R@100")  # as surerank.eval.metrics
ALPHA = 0.05

# per_query: qid -> measure -> value; aggregate: measure -> value
RankerEval = dict[str, Any]
Evaluation = dict[str, dict[str, RankerEval]]  # dataset -> ranker -> {"aggregate", "per_query"}


# --------------------------------------------------------------------------------------------------
# Loading inputs
# --------------------------------------------------------------------------------------------------


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
    from surerank.eval.formats import read_run
    from surerank.eval.metrics import evaluate

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


def load_json(path: str | Path) -> Any:
    """The parsed JSON of ``path``; unreadable or invalid files are refused with the file and position."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        # some messages end in "at" ("Unterminated string starting at"): do not say "at at"
        said = f"{error.msg} {where}" if error.msg.endswith(" at") else f"{error.msg} at {where}"
        raise InputError(f"{path}: not valid JSON ({said})") from None


# --------------------------------------------------------------------------------------------------
# Typed inputs: every JSON the report reads names its kind and version, and is read field by field
# --------------------------------------------------------------------------------------------------

EVAL_KIND = "surerank.eval"  # `surerank eval --json`
TRUST_FIGURES_KIND = "surerank.trust-figures"  # benchmarks/trust_dl.py --json, or made by hand
THROUGHPUT_KIND = "surerank.throughput"  # benchmarks/throughput.py --json
ROBUSTNESS_SCHEMA = "surerank.robustness/1"  # `surerank robustness --output` (its own "schema" field)
#: what ``--trust`` accepts: the artifact, calibrate's printed summary, figures, eval JSON with trust parts
TRUST_KINDS = ("surerank.trust", "surerank.calibration", TRUST_FIGURES_KIND, EVAL_KIND)
_RISK_MEASURES = ("risk", "miss_rate", "error", "loss")  # lower is better; any other measure is a quality


def _is_number(value: Any) -> bool:
    return schema.is_number(value)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def _kind_of(data: Any, path: str, accepted: Sequence[str]) -> str:
    """The document's ``kind`` if it is one of ``accepted``; else an error naming the file and the field."""
    if not isinstance(data, Mapping):
        raise InputError(f"{path}: expected a JSON object with a 'kind' field (one of {', '.join(accepted)}), "
                         f"got {type(data).__name__}")
    kind = data.get("kind")
    if kind is None and data.get("format") == "surerank.trust" and "surerank.trust" in accepted:
        return "surerank.trust"  # version-1 artifacts said "format"
    if kind is None:
        raise InputError(f"{path}: field 'kind' is missing; expected one of {', '.join(accepted)} "
                         "(the JSON written by surerank's commands and benchmarks)")
    if kind not in accepted:
        raise InputError(f"{path}: field 'kind' is {kind!r}; this option reads {', '.join(accepted)}")
    return str(kind)


def _scalars(record: Mapping[str, Any], where: str, path: str, nullable: bool = False) -> dict[str, Any]:
    """Every value a finite number (``nullable``: or null / NaN, read as None: a ratio with nothing to divide)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if nullable and (value is None or (isinstance(value, float) and math.isnan(value))):
            out[str(key)] = None
        elif not _is_number(value):
            raise InputError(f"{where}: field '{path}.{key}' must be a finite number, got {value!r}")
        else:
            out[str(key)] = float(value)
    return out


# -- evaluation --------------------------------------------------------------------------------------


def _dataset_label(qrels_path: Any) -> str:
    """``…/qrels.dl19-passage.txt`` → ``dl19-passage``: a readable dataset name from a qrels path."""
    if not qrels_path:
        return "default"
    name = Path(str(qrels_path)).name
    name = name.removeprefix("qrels.").removeprefix("qrels-")
    return Path(name).stem if "." in name else name


def eval_results(data: Any, where: str) -> dict[str, Any]:
    """``surerank eval --json`` → ``{run path: EvalResult}`` (the library's dataclass), checked field by field."""
    from surerank.eval.metrics import EvalResult

    schema.header(data, EVAL_KIND, (1,), where)
    runs = schema.get(data, "runs", "object", where)
    out = {}
    for run, record in runs.items():
        path = f"runs.{run}"
        if not isinstance(record, Mapping):
            raise InputError(f"{where}: field '{path}' must be a JSON object")
        aggregate = _scalars(schema.get(record, "aggregate", "object", where, path), where, f"{path}.aggregate")
        per_query = {}
        for qid, values in schema.get(record, "per_query", "object", where, path).items():
            if not isinstance(values, Mapping):
                raise InputError(f"{where}: field '{path}.per_query.{qid}' must be a JSON object")
            per_query[str(qid)] = _scalars(values, where, f"{path}.per_query.{qid}")
        queries = schema.get(record, "queries", "int", where, path)
        out[str(run)] = EvalResult(aggregate=aggregate, per_query=per_query, queries_evaluated=queries)
    return out


def evaluation_from_json(data: Any, source: str = "", dataset: str | None = None) -> Evaluation:
    """Read ``surerank eval --json`` (``"kind": "surerank.eval"``): one dataset, one ranker per run file.

    The dataset is named by ``dataset`` or, by default, after the qrels file; rankers after the run files.
    """
    where = source or "evaluation JSON"
    results = eval_results(data, where)
    label = dataset or _dataset_label(data.get("qrels"))
    baseline = data.get("baseline")
    out: Evaluation = {label: {}}
    for run, result in results.items():
        out[label][Path(run).stem or run] = {
            "aggregate": dict(result.aggregate), "per_query": result.per_query, "source": run,
            "baseline": baseline is not None and str(baseline) == run,
        }
    return out


# -- trust ---------------------------------------------------------------------------------------------


@dataclass
class TrustFigures:
    """What the trust sections draw, by label: risk-coverage curves (with the measure on their y axis),
    reliability bins (low, high, observed, mean confidence) with summary scalars, and cutoff tables.

    Also a document of its own (``"kind": "surerank.trust-figures"``, :meth:`to_dict` / :meth:`from_dict`)::

        {"kind": "surerank.trust-figures", "version": 1,
         "risk_coverage": {label: {"measure": "nDCG@10" | "risk" | ..., "coverage": [...], "values": [...]}},
         "reliability": {label: {"bins": [{"low", "high", "observed", "confidence", "count"}],
                                 "summary": {"ece": ..., ...}}},
         "cutoffs": {label: {"x": column or null, "rows": [{column: number | string | bool | null}]}}}
    """

    risk_coverage: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    curve_measures: dict[str, str] = field(default_factory=dict)
    reliability: dict[str, tuple[list, dict]] = field(default_factory=dict)
    cutoffs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    cutoff_x: dict[str, str | None] = field(default_factory=dict)

    KIND = TRUST_FIGURES_KIND
    VERSION = 1

    @property
    def empty(self) -> bool:
        return not (self.risk_coverage or self.reliability or self.cutoffs)

    def add_curve(self, label: str, measure: str, coverage: Sequence[float], values: Sequence[float]) -> None:
        self.risk_coverage[label] = sorted(zip(map(float, coverage), map(float, values), strict=True))
        self.curve_measures[label] = measure

    def add_bins(self, label: str, bins: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> None:
        drawn = [(float(b["low"]), float(b["high"]), float(b["observed"]),
                  None if b.get("confidence") is None else float(b["confidence"]))
                 for b in bins if b.get("count", 1)]  # an empty bin has nothing to draw
        self.reliability[label] = (drawn, {k: v for k, v in summary.items() if _is_number(v)})

    def add_rows(self, label: str, rows: Sequence[Mapping[str, Any]], x: str | None = None) -> None:
        self.cutoffs.setdefault(label, []).extend(dict(r) for r in rows)
        self.cutoff_x[label] = x

    def merge(self, other: TrustFigures, prefix: str = "") -> TrustFigures:
        def name(label: str) -> str:
            return f"{prefix}: {label}" if prefix else label

        for label, points in other.risk_coverage.items():
            self.risk_coverage[name(label)] = points
            self.curve_measures[name(label)] = other.curve_measures[label]
        for label, bins in other.reliability.items():
            self.reliability[name(label)] = bins
        for label, rows in other.cutoffs.items():
            self.add_rows(name(label), rows, other.cutoff_x.get(label))
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.KIND, "version": self.VERSION,
            "risk_coverage": {label: {"measure": self.curve_measures[label], "coverage": [p[0] for p in pts],
                                      "values": [p[1] for p in pts]}
                              for label, pts in self.risk_coverage.items()},
            "reliability": {label: {"bins": [{"low": lo, "high": hi, "observed": ob, "confidence": co}
                                             for lo, hi, ob, co in bins], "summary": summary}
                            for label, (bins, summary) in self.reliability.items()},
            "cutoffs": {label: {"x": self.cutoff_x.get(label), "rows": rows} for label, rows in self.cutoffs.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "trust figures") -> TrustFigures:
        schema.header(data, cls.KIND, (cls.VERSION,), where)
        figures = cls()
        curves = schema.get(data, "risk_coverage", "object", where, optional=True, default={})
        for label, curve in curves.items():
            path = f"risk_coverage.{label}"
            if not isinstance(curve, Mapping):
                raise InputError(f"{where}: field '{path}' must be a JSON object")
            measure = schema.get(curve, "measure", "str", where, path)
            xs = schema.numbers(curve, "coverage", where, path, non_empty=True)
            figures.add_curve(str(label), measure, xs, schema.numbers(curve, "values", where, path, length=len(xs)))
        for label, rel in schema.get(data, "reliability", "object", where, optional=True, default={}).items():
            path = f"reliability.{label}"
            if not isinstance(rel, Mapping):
                raise InputError(f"{where}: field '{path}' must be a JSON object")
            bins = _bins(schema.get(rel, "bins", "list", where, path), where, f"{path}.bins")
            summary = _scalars(schema.get(rel, "summary", "object", where, path, optional=True, default={}),
                               where, f"{path}.summary")
            figures.add_bins(str(label), bins, summary)
        for label, table in schema.get(data, "cutoffs", "object", where, optional=True, default={}).items():
            path = f"cutoffs.{label}"
            if not isinstance(table, Mapping):
                raise InputError(f"{where}: field '{path}' must be a JSON object with 'rows'")
            rows = schema.get(table, "rows", "list", where, path)
            x = schema.get(table, "x", "str", where, path, optional=True, nullable=True)
            for i, row in enumerate(rows):
                if not isinstance(row, Mapping) or not all(
                        v is None or isinstance(v, (str, bool)) or _is_number(v) for v in row.values()):
                    raise InputError(f"{where}: field '{path}.rows[{i}]' must be an object of numbers, "
                                     "strings, booleans or nulls")
                if x is not None and not _is_number(row.get(x)):
                    raise InputError(f"{where}: field '{path}.rows[{i}].{x}' (the x column) must be a number")
            figures.add_rows(str(label), rows, x)
        if figures.empty:
            raise InputError(f"{where}: no figures: 'risk_coverage', 'reliability' and 'cutoffs' are all empty")
        return figures


def _bins(bins: list[Any], where: str, path: str) -> list[dict[str, Any]]:
    out = []
    for i, b in enumerate(bins):
        here = f"{path}[{i}]"
        if not isinstance(b, Mapping):
            raise InputError(f"{where}: field '{here}' must be a JSON object")
        out.append({"low": schema.get(b, "low", "number", where, here),
                    "high": schema.get(b, "high", "number", where, here),
                    "observed": schema.get(b, "observed", "number", where, here),
                    "confidence": schema.get(b, "confidence", "number", where, here, optional=True,
                                             nullable=True),
                    "count": schema.get(b, "count", "int", where, here, optional=True, default=1)})
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
    label = dataset or _dataset_label(data.get("qrels"))
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
            bins = _bins(schema.get(calibration, "reliability", "list", where, f"{path}.calibration"), where,
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
            summary_rows.append({"run": name, **_scalars(cutoff, where, f"{path}.cutoff", nullable=True)})
    if summary_rows:
        figures.add_rows("what the cutoffs kept", summary_rows)
    return figures


def read_trust(data: Any, path: str, label: str | None = None) -> TrustFigures:
    """One ``--trust`` file: a trust artifact, calibrate's summary, trust figures or eval JSON with trust."""
    kind = _kind_of(data, path, TRUST_KINDS)
    label = label or Path(path).stem
    if kind == "surerank.trust":
        from surerank.trust.artifact import TrustArtifact

        figures = figures_from_fit(TrustArtifact.from_dict(data, where=path).summary(path), label)
    elif kind == "surerank.calibration":
        from surerank.trust.artifact import FitSummary

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


# -- robustness ----------------------------------------------------------------------------------------


def read_robustness(data: Any, path: str) -> dict[str, Any]:
    """``surerank robustness --output`` JSON (``"schema": "surerank.robustness/1"``), with every field the
    report reads checked, so a truncated or hand-made file is refused with its name and the field."""
    if not isinstance(data, Mapping):
        raise InputError(f"{path}: expected the JSON object written by `surerank robustness --output`")
    if data.get("schema") != ROBUSTNESS_SCHEMA and (data.get("kind"), data.get("version")) != (
            "surerank.robustness", 1):
        found = data.get("schema", data.get("kind"))
        raise InputError(f"{path}: field 'schema' must be {ROBUSTNESS_SCHEMA!r} (the JSON of `surerank "
                         f"robustness --output`), got {found!r}" if found is not None else
                         f"{path}: field 'schema' is missing; expected {ROBUSTNESS_SCHEMA!r} (the JSON of "
                         "`surerank robustness --output`)")
    schema.get(data, "ranker", "str", path)
    schema.get(data, "dataset", "str", path, optional=True)
    clean = schema.get(data, "clean", "object", path)
    schema.get(clean, MAIN_MEASURE, "number", path, "clean")
    if "order" in data:
        order = schema.get(data, "order", "object", path)
        for name in ("kendall_tau_mean", "top1_flip_rate"):
            schema.get(order, name, "number", path, "order")
        schema.get(order, "shuffles", "int", path, "order")
        schema.get(order, "depth", "int", path, "order", optional=True, nullable=True)
    if "position" in data:
        position = schema.get(data, "position", "object", path)
        accuracy = schema.get(position, "top1_accuracy", "list", path, "position")
        if accuracy:
            schema.numbers(position, "top1_accuracy", path, "position")
            schema.numbers(position, "positions", path, "position", length=len(accuracy))
            schema.get(position, "list_size", "int", path, "position")
            schema.get(position, "n_queries", "int", path, "position")
    if "typos" in data:
        typos = schema.get(data, "typos", "object", path)
        for kind, value in schema.get(typos, "kinds", "object", path, "typos").items():
            schema.get(value, "delta", "number", path, f"typos.kinds.{kind}", nullable=True)
        schema.get(typos, "seeds", "list", path, "typos")
        for i, example in enumerate(schema.get(typos, "examples", "list", path, "typos", optional=True,
                                               default=[])):
            for name in ("kind", "query", "typo"):
                schema.get(example, name, "str", path, f"typos.examples[{i}]")
    if "trap" in data:
        trap = schema.get(data, "trap", "object", path)
        for side in ("ranker", "bm25"):
            part = schema.get(trap, side, "object", path, "trap")
            for name in ("trap", "rest"):
                schema.get(part, name, "number", path, f"trap.{side}", nullable=True)
        schema.get(trap, "n_queries", "int", path, "trap")
        schema.get(trap, "n_rest", "int", path, "trap")
    if "depth" in data:
        depth = schema.get(data, "depth", "object", path)
        for i, row in enumerate(schema.get(depth, "depths", "list", path, "depth")):
            schema.get(row, "depth", "int", path, f"depth.depths[{i}]")
            schema.get(row, MAIN_MEASURE, "number", path, f"depth.depths[{i}]")
        schema.get(depth, "first_stage", "number", path, "depth", optional=True, nullable=True)
    return dict(data)


# -- throughput ----------------------------------------------------------------------------------------


@dataclass
class ThroughputTable:
    """Rows of throughput measurements (``"kind": "surerank.throughput"``): each row has a ``name`` and
    the ``rate`` column (``pairs_per_s`` unless the document says otherwise), plus any scalar columns::

        {"kind": "surerank.throughput", "version": 1, "rate": "pairs_per_s",
         "rows": [{"name": "surerank fp32", "pairs_per_s": 131.2, "peak_rss_mb": 412, ...}]}
    """

    rows: list[dict[str, Any]]
    rate: str = "pairs_per_s"
    source: str = ""

    KIND = THROUGHPUT_KIND
    VERSION = 1

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.KIND, "version": self.VERSION, "rate": self.rate, "rows": self.rows}

    @classmethod
    def from_dict(cls, data: Any, where: str = "throughput JSON") -> ThroughputTable:
        schema.header(data, cls.KIND, (cls.VERSION,), where)
        rate = schema.get(data, "rate", "str", where, optional=True, default="pairs_per_s")
        rows = schema.get(data, "rows", "list", where)
        if not rows:
            raise InputError(f"{where}: field 'rows' is empty: nothing to draw")
        for i, row in enumerate(rows):
            here = f"rows[{i}]"
            if not isinstance(row, Mapping):
                raise InputError(f"{where}: field '{here}' must be a JSON object")
            schema.get(row, "name", "str", where, here)
            schema.get(row, rate, "number", where, here)
            for key, value in row.items():
                if not (value is None or isinstance(value, (str, bool)) or _is_number(value)):
                    raise InputError(f"{where}: field '{here}.{key}' must be a number, string, boolean or "
                                     f"null, got {type(value).__name__}")
        return cls(rows=[dict(r) for r in rows], rate=rate, source=where)


def read_throughput(data: Any, path: str) -> ThroughputTable:
    _kind_of(data, path, (THROUGHPUT_KIND,))
    return ThroughputTable.from_dict(data, where=path)


# --------------------------------------------------------------------------------------------------
# Significance
# --------------------------------------------------------------------------------------------------


def paired_p_value(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[float | None, int]:
    """Two-sided paired t-test (surerank.eval.metrics) over the queries both rankers were scored on."""
    from surerank.eval.metrics import paired_test

    common = set(a) & set(b)
    if len(common) < 2:
        return None, len(common)
    diffs = [a[q] - b[q] for q in common]
    if max(diffs) - min(diffs) < 1e-12:  # no spread: identical (p = 1) or a constant shift (p = 0)
        return (1.0 if abs(diffs[0]) < 1e-12 else 0.0), len(common)
    result = paired_test(a, b)
    p = result.p_value
    return (p if math.isfinite(p) else None), result.queries


def _per_query(ev: RankerEval, measure: str) -> dict[str, float]:
    return {q: v[measure] for q, v in ev.get("per_query", {}).items() if measure in v}


def choose_baseline(rankers: Sequence[str], requested: str | None) -> str:
    if requested and requested in rankers:
        return requested
    if requested:
        raise InputError(f"--baseline {requested!r} is not among the rankers: {', '.join(rankers)}")
    return "bm25" if "bm25" in rankers else rankers[0]


# --------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{background:#1d3557;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:24px}
header p{margin:0;opacity:.85;font-size:13px}nav{padding:8px 32px;background:#e9eef5;font-size:14px}
nav a{margin-right:16px;color:#1d3557}main{padding:8px 32px 40px;max-width:1160px}
section{background:#fff;border:1px solid #e2e2e2;border-radius:6px;padding:8px 20px 16px;margin:18px 0}
h2{font-size:19px;margin:12px 0 6px;color:#1d3557}h3{font-size:15px;margin:14px 0 6px}
.figs{display:flex;flex-wrap:wrap;gap:14px}figure{margin:0;border:1px solid #eee;padding:6px;background:#fff}
figcaption{font-size:12px;color:#555;max-width:520px;margin-top:4px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 10px}
th,td{border-bottom:1px solid #e6e6e6;padding:4px 10px;text-align:right}th{background:#f3f5f8}
td:first-child,th:first-child{text-align:left}.up{color:#1b7f2a;font-weight:600}
.down{color:#c0392b;font-weight:600}.text td,.text th{text-align:left}
.note{font-size:12px;color:#555}.base{font-style:italic}
"""

CHECK_SCRIPT = """
(function(){
  var figs = document.querySelectorAll('figure.plot'), ok = 0;
  figs.forEach(function(f){
    var s = f.querySelector('svg'), marks = s ? s.querySelectorAll('[data-mark]').length : 0;
    var box = s ? s.getBBox() : {width: 0, height: 0};
    var good = !!s && marks > 0 && box.width > 0 && box.height > 0;
    f.setAttribute('data-marks', marks);
    f.setAttribute('data-rendered', good ? 'ok' : 'empty');
    if (good) ok++;
  });
  document.body.setAttribute('data-plots-total', figs.length);
  document.body.setAttribute('data-plots-ok', ok);
})();
"""


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.1f}"
        return f"{value:.{digits}f}"
    return escape(str(value))


def _per_kind(examples: Sequence[Mapping[str, Any]], keep: int) -> list[Mapping[str, Any]]:
    seen: dict[str, int] = {}
    out = []
    for e in examples:
        seen[e["kind"]] = seen.get(e["kind"], 0) + 1
        if seen[e["kind"]] <= keep:
            out.append(e)
    return out


def _plain(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if _is_number(value) else ""


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figure(name: str, chart: str, caption: str) -> str:
    return (f'<figure class="plot" data-plot="{escape(name)}">{chart}'
            f"<figcaption>{caption}</figcaption></figure>")


def _section(key: str, title: str, body: str) -> str:
    return f'<section id="{key}" data-section="{key}"><h2>{escape(title)}</h2>{body}</section>'


def _effectiveness(evaluation: Evaluation, baseline: str | None) -> tuple[str, str, dict[str, str]]:
    tables, delta_figs, baselines = [], [], {}
    all_rankers = list(dict.fromkeys(name for rankers in evaluation.values() for name in rankers))
    chart_values: dict[str, list[float | None]] = {name: [] for name in all_rankers}
    chart_notes: dict[str, list[str]] = {name: [] for name in all_rankers}
    for dataset, rankers in evaluation.items():
        names = list(rankers)
        marked = [n for n in names if rankers[n].get("baseline")]
        base = choose_baseline(names, baseline if baseline in names else (marked[0] if marked else None))
        baselines[dataset] = base
        measures = [m for m in DEFAULT_MEASURES if any(m in r["aggregate"] for r in rankers.values())]
        measures += sorted({m for r in rankers.values() for m in r["aggregate"]} - set(measures))
        rows = []
        for name in names:
            ev = rankers[name]
            cells = [escape(name) + (' <span class="base">(baseline)</span>' if name == base else "")]
            for m in measures:
                value = ev["aggregate"].get(m)
                mark = ""
                if name != base and value is not None:
                    p, n = paired_p_value(_per_query(ev, m), _per_query(rankers[base], m))
                    if p is not None and p < ALPHA:
                        better = value > rankers[base]["aggregate"].get(m, float("-inf"))
                        mark = (f' <span class="{"up" if better else "down"}" title="p={p:.3g}, n={n}">'
                                f'{"▲" if better else "▼"}</span>')
                cells.append(_num(value) + mark)
            cells.append(str(len(ev.get("per_query", {}))))
            rows.append(cells)
        for name in all_rankers:
            ev = rankers.get(name)
            chart_values[name].append(ev["aggregate"].get(MAIN_MEASURE) if ev else None)
            p = None
            if ev and name != base:
                p, _ = paired_p_value(_per_query(ev, MAIN_MEASURE), _per_query(rankers[base], MAIN_MEASURE))
            chart_notes[name].append("*" if p is not None and p < ALPHA else "")
        tables.append(f"<h3>{escape(dataset)}</h3>" + _table(["ranker", *measures, "queries"], rows))
        for name in names:
            if name == base:
                continue
            a, b = _per_query(rankers[name], MAIN_MEASURE), _per_query(rankers[base], MAIN_MEASURE)
            common = sorted(set(a) & set(b), key=lambda q: a[q] - b[q], reverse=True)
            if not common:
                continue
            deltas = [a[q] - b[q] for q in common]
            wins = sum(d > 1e-12 for d in deltas)
            losses = sum(d < -1e-12 for d in deltas)
            chart = svg.delta_bars(common, deltas, y_label=f"Δ {MAIN_MEASURE}",
                                   title=f"{name} minus {base}, {dataset}")
            delta_figs.append(_figure(
                f"deltas-{dataset}-{name}", chart,
                f"<b>{escape(dataset)}: {escape(name)} − {escape(base)}</b> per query. Better on {wins}, "
                f"worse on {losses}, tied on {len(deltas) - wins - losses}; mean Δ {_mean(deltas):+.4f}."))
    datasets = list(evaluation)
    chart = svg.bar_chart(datasets, [(name, chart_values[name]) for name in all_rankers],
                          y_label=MAIN_MEASURE, title=f"{MAIN_MEASURE} per ranker and dataset",
                          annotations=[chart_notes[name] for name in all_rankers],
                          width=max(520, 90 * len(datasets) * max(len(all_rankers), 1)))
    base_names = ", ".join(f"{escape(b)} on {escape(d)}" for d, b in baselines.items())
    body = (
        '<div class="figs">'
        + _figure("effectiveness", chart, f"{MAIN_MEASURE} per ranker; * marks a significant difference "
                  f"from the baseline ({base_names}) at p &lt; {ALPHA}, two-sided paired t-test over "
                  "queries.")
        + "</div>" + "".join(tables)
        + f'<p class="note">▲/▼: better/worse than the baseline at p &lt; {ALPHA} (two-sided paired t-test '
        "over the queries both runs were scored on); hover a mark for p and n.</p>"
    )
    deltas_html = f'<div class="figs">{"".join(delta_figs)}</div>' if delta_figs else ""
    return body, deltas_html, baselines


def _risk_coverage(figures: TrustFigures) -> str:
    curves = list(figures.risk_coverage.items())
    measures = sorted(set(figures.curve_measures.get(label, "risk") for label, _ in curves))
    y_label = " / ".join(measures)
    risky = all(m in _RISK_MEASURES for m in measures)
    chart = svg.line_chart([(label, [p[0] for p in pts], [p[1] for p in pts]) for label, pts in curves],
                           x_label="coverage (fraction of queries answered)", y_label=y_label,
                           title="risk-coverage curves", x_range=(0.0, 1.0), markers=True)
    rows = []
    for label, pts in curves:
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        area = sum((xs[i + 1] - xs[i]) * (ys[i + 1] + ys[i]) / 2 for i in range(len(xs) - 1))
        span = (xs[-1] - xs[0]) or 1.0
        rows.append([escape(label), escape(figures.curve_measures.get(label, "risk")), str(len(pts)),
                     _num(ys[-1]), _num(area / span)])
    how = ("Risk of the answered queries as coverage grows; lower is better. Abstaining on the least "
           "confident queries should pull the curve down on the left." if risky else
           f"Mean {escape(y_label)} of the answered queries as coverage grows (a quality: higher is better, "
           "so a useful confidence bends the curve up on the left).")
    return ('<div class="figs">' + _figure("risk-coverage", chart, how) + "</div>"
            + _table(["curve", "measure", "points", "at full coverage", "mean (area / span)"], rows))


def _reliability(figures: TrustFigures) -> str:
    figs = []
    for i, (label, (bins, extras)) in enumerate(figures.reliability.items()):
        chart = svg.reliability_diagram(bins, title=f"reliability: {label}")
        summary = ", ".join(f"{escape(k)} {_num(v)}" for k, v in extras.items()
                            if k.lower() in ("ece", "brier", "log_loss", "mce", "pairs", "n"))
        figs.append(_figure(f"reliability-{i}", chart,
                            f"{escape(label)}: observed relevance rate per predicted-probability bin; the "
                            f"dashed diagonal is perfect calibration." + (f" {summary}." if summary else "")))
    return f'<div class="figs">{"".join(figs)}</div>'


def _cutoffs(figures: TrustFigures) -> str:
    parts = []
    for i, (label, rows) in enumerate(figures.cutoffs.items()):
        columns = list(dict.fromkeys(k for r in rows for k in r))
        table = _table(columns, ([_num(r.get(c)) for c in columns] for r in rows))
        x_key = figures.cutoff_x.get(label)  # the document says which column is the x axis, if any
        fig = ""
        if x_key is not None:
            ys = [c for c in columns if c != x_key and all(_is_number(r.get(c)) for r in rows)
                  and all(0.0 <= float(r[c]) <= 1.0 for r in rows)]
            if ys:
                ordered = sorted(rows, key=lambda r: float(r[x_key]))
                xs = [float(r[x_key]) for r in ordered]
                chart = svg.line_chart([(c, xs, [float(r[c]) for r in ordered]) for c in ys], x_label=x_key,
                                       y_label="value", title=f"cutoff trade-off {label}", y_range=(0.0, 1.0))
                fig = '<div class="figs">' + _figure(
                    f"cutoffs-{i}", chart, f"{escape(label)}: what each cutoff setting keeps and achieves, "
                    f"against {escape(x_key)}.") + "</div>"
        parts.append(f"<h3>{escape(label)}</h3>{fig}{table}")
    return "".join(parts)


def _robustness(results: Sequence[Mapping[str, Any]]) -> str:
    from surerank.eval.robustness import TYPO_KINDS, format_table

    by_dataset: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        by_dataset.setdefault(str(r.get("dataset") or "data"), []).append(r)
    parts = []
    for dataset, group in by_dataset.items():
        names = [str(r.get("ranker", "?")) for r in group]
        text = format_table(group)
        figs = []
        ordered = [r for r in group if "order" in r]
        if ordered:
            taus = [r["order"]["kendall_tau_mean"] for r in ordered]
            flips = [r["order"]["top1_flip_rate"] for r in ordered]
            chart = svg.bar_chart([str(r["ranker"]) for r in ordered],
                                  [("Kendall tau (mean)", taus), ("top-1 flip rate", flips)],
                                  y_label="value", title="input-order sensitivity", y_range=(0.0, 1.05),
                                  annotations=[[_plain(v, 3) for v in taus], [_plain(v, 3) for v in flips]])
            m = ordered[0]["order"]
            lists = f"top-{m['depth']}" if m.get("depth") else "full"
            figs.append(_figure(f"robust-order-{dataset}", chart,
                                f"{m['shuffles']} shuffles of each {lists} candidate list: tau 1 and flip "
                                "rate 0 mean the ranker ignores input order."))
        positioned = [r for r in group if r.get("position", {}).get("top1_accuracy")]
        if positioned:
            series = [(str(r["ranker"]), r["position"]["positions"], r["position"]["top1_accuracy"])
                      for r in positioned]
            chart = svg.line_chart(series, x_label="position of the relevant passage",
                                   y_label="top-1 accuracy", title="position bias", y_range=(0.0, 1.0))
            p = positioned[0]["position"]
            figs.append(_figure(f"robust-position-{dataset}", chart,
                                f"One relevant passage among {p['list_size'] - 1} judged non-relevant ones, "
                                f"moved through every position ({p['n_queries']} queries); a flat line "
                                "means no position bias."))
        typed = [r for r in group if r.get("typos", {}).get("kinds")]
        if typed:
            kinds = [k for k in TYPO_KINDS if any(k in r["typos"]["kinds"] for r in typed)]
            chart = svg.bar_chart(kinds, [(str(r["ranker"]), [r["typos"]["kinds"].get(k, {}).get("delta")
                                                              for k in kinds]) for r in typed],
                                  y_label=f"Δ {MAIN_MEASURE}", title="query typos")
            figs.append(_figure(f"robust-typos-{dataset}", chart,
                                f"Change in {MAIN_MEASURE} after one typo in one content word, mean over "
                                f"seeds {', '.join(map(str, typed[0]['typos']['seeds']))}."))
        trapped = [r for r in group if "trap" in r]
        if trapped:
            cats = [str(r["ranker"]) for r in trapped] + ["bm25 (first stage)"]
            trap_vals = [r["trap"]["ranker"]["trap"] for r in trapped] + [trapped[0]["trap"]["bm25"]["trap"]]
            rest_vals = [r["trap"]["ranker"]["rest"] for r in trapped] + [trapped[0]["trap"]["bm25"]["rest"]]
            chart = svg.bar_chart(cats, [(f"trap slice (n={trapped[0]['trap']['n_queries']})", trap_vals),
                                         (f"other queries (n={trapped[0]['trap']['n_rest']})", rest_vals)],
                                  y_label=MAIN_MEASURE, title="lexical trap slice", y_range=(0.0, 1.0))
            figs.append(_figure(f"robust-trap-{dataset}", chart,
                                "Queries whose best judged non-relevant passage out-scores every relevant "
                                "one under BM25, against the other queries."))
        deep = [r for r in group if r.get("depth", {}).get("depths")]
        if deep:
            depths = sorted({row["depth"] for r in deep for row in r["depth"]["depths"]})
            series = []
            for r in deep:
                by = {row["depth"]: row[MAIN_MEASURE] for row in r["depth"]["depths"]}
                series.append((str(r["ranker"]), list(range(len(depths))), [by.get(d) for d in depths]))
            first = deep[0]["depth"].get("first_stage")
            if first is not None:
                series.append(("first stage", list(range(len(depths))), [first] * len(depths)))
            chart = svg.line_chart(series, x_label="candidates reranked (first-stage top k)",
                                   y_label=MAIN_MEASURE, title="reranking depth",
                                   x_range=(-0.3, len(depths) - 0.7), x_categories=[str(d) for d in depths])
            figs.append(_figure(f"robust-depth-{dataset}", chart,
                                f"{MAIN_MEASURE} when the ranker reorders only the first-stage top k."))
        examples = next((r["typos"]["examples"] for r in typed if r["typos"].get("examples")), [])
        example_table = _table(["typo", "query", "with the typo"],
                               ([escape(e["kind"]), escape(e["query"]), escape(e["typo"])]
                                for e in _per_kind(examples, 2)), cls="text") if examples else ""
        parts.append(f"<h3>{escape(dataset)}: {escape(', '.join(names))}</h3>"
                     f'<div class="figs">{"".join(figs)}</div><pre class="note">{escape(text)}</pre>'
                     + example_table)
    return "".join(parts)


def _throughput(tables: Sequence[ThroughputTable]) -> str:
    parts = []
    for i, t in enumerate(tables):
        columns = list(dict.fromkeys(k for r in t.rows for k in r))
        table = _table(columns, ([_num(r.get(c)) for c in columns] for r in t.rows))
        chart = svg.bar_chart([str(r["name"]) for r in t.rows], [(t.rate, [float(r[t.rate]) for r in t.rows])],
                              y_label=t.rate, title="throughput" + (f": {Path(t.source).name}" if i else ""),
                              width=max(520, 70 * len(t.rows)))
        name = "throughput" if i == 0 else f"throughput-{i}"
        parts.append('<div class="figs">' + _figure(name, chart, f"{escape(t.rate)} per configuration "
                                                    "(higher is better); the table has every measured column.")
                     + "</div>" + table)
    return "".join(parts)


def build_report(*, evaluation: Evaluation | None = None, trust: TrustFigures | None = None,
                 robustness: Sequence[Mapping[str, Any]] = (), throughput: Sequence[ThroughputTable] = (),
                 baseline: str | None = None, title: str = "surerank report",
                 sources: Sequence[str] = ()) -> str:
    """Render the HTML page; each argument left empty drops its section.

    The inputs are already typed: :func:`read_trust`, :func:`read_robustness`, :func:`read_throughput`
    and :func:`evaluation_from_json` read (and check) the JSON files.
    """
    sections: list[tuple[str, str, str]] = []
    if evaluation:
        effectiveness, deltas, _ = _effectiveness(evaluation, baseline)
        sections.append(("effectiveness", "Effectiveness", effectiveness))
        if deltas:
            sections.append(("per-query", "Per-query deltas", deltas))
    figures = trust or TrustFigures()
    if figures.risk_coverage:
        sections.append(("risk-coverage", "Risk-coverage", _risk_coverage(figures)))
    if figures.reliability:
        sections.append(("reliability", "Reliability diagrams", _reliability(figures)))
    if figures.cutoffs:
        sections.append(("cutoffs", "Cutoff trade-offs", _cutoffs(figures)))
    if robustness:
        sections.append(("robustness", "Robustness", _robustness(robustness)))
    if throughput:
        sections.append(("throughput", "Throughput", _throughput(throughput)))
    if not sections:
        raise InputError("nothing to report: give runs with qrels, --eval-json, --trust, --robustness "
                         "or --throughput")
    nav = "".join(f'<a href="#{key}">{escape(name)}</a>' for key, name, _ in sections)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    source_list = ", ".join(escape(s) for s in sources)
    body = "".join(_section(key, name, html) for key, name, html in sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
        f"<style>{CSS}</style></head>"
        f'<body data-report="surerank" data-sections="{" ".join(k for k, _, _ in sections)}">'
        f"<header><h1>{escape(title)}</h1><p>generated {stamp}"
        + (f" from {source_list}" if source_list else "") + "</p></header>"
        f"<nav>{nav}</nav><main>{body}</main><script>{CHECK_SCRIPT}</script></body></html>"
    )


def write_report(path: str | Path, html: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    logger.info("report written to %s (%d bytes)", path, len(html))
    return path


__all__ = [
    "EVAL_KIND", "THROUGHPUT_KIND", "TRUST_FIGURES_KIND", "TRUST_KINDS", "RunSpec", "ThroughputTable",
    "TrustFigures", "build_report", "eval_results", "evaluate_runs", "evaluation_from_json", "figures_from_eval",
    "figures_from_fit", "load_json", "paired_p_value", "read_robustness", "read_throughput", "read_trust",
    "write_report",
]
