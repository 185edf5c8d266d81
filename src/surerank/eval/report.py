"""One self-contained HTML report from evaluation, trust, robustness and throughput outputs.

Every section is optional: the report shows what it was given.  Plots are inline SVG drawn by
:mod:`surerank.eval.report_svg`, so the file opens offline and carries no script or font from the
network.  A short inline script marks each figure ``data-rendered="ok"`` once the browser has laid out
its marks, which is what the headless-browser test checks.

Inputs (all JSON unless a run file):

* evaluation: TREC run files + qrels, grouped by dataset (``dataset:ranker=path``), or the JSON written by
  ``surerank eval --json``; significance is a two-sided paired t-test per query against a baseline;
* trust: any JSON holding ``risk_coverage`` curves (lists of points with ``coverage`` and ``risk``),
  ``reliability`` bins (``low``/``high`` or ``confidence``, and ``accuracy``/``observed``), and
  ``cutoffs`` tables (lists of rows); found at any nesting depth, labelled by their path;
* robustness: the JSON of ``surerank robustness`` (schema ``surerank.robustness/1``);
* throughput: a list of rows (or ``{"rows": [...]}``) with a name column and numeric columns.
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


def _dataset_label(qrels_path: Any) -> str:
    """``…/qrels.dl19-passage.txt`` → ``dl19-passage``: a readable dataset name from a qrels path."""
    if not qrels_path:
        return "default"
    name = Path(str(qrels_path)).name
    name = name.removeprefix("qrels.").removeprefix("qrels-")
    return Path(name).stem if "." in name else name


def evaluation_from_json(data: Any, source: str = "", dataset: str | None = None) -> Evaluation:
    """Read evaluation JSON: what ``surerank eval --json`` writes (``{"qrels", "runs": {path: record}}``),
    ``{dataset: {ranker: {aggregate, per_query}}}``, a list of records with ``dataset``/``ranker`` (or
    ``run``) fields, or one record.  ``dataset`` overrides the name taken from the file."""
    records: list[Mapping[str, Any]] = []
    if isinstance(data, Mapping) and isinstance(data.get("runs"), Mapping):
        label = dataset or _dataset_label(data.get("qrels"))
        out = {label: {}}
        for run, record in data["runs"].items():
            entry = _eval_record(record, f"{source}[runs][{run}]")
            entry["baseline"] = bool(data.get("baseline")) and str(data.get("baseline")) == str(run)
            out[label][Path(str(run)).stem or str(run)] = entry
        return out
    if isinstance(data, Mapping) and ("per_query" in data or "aggregate" in data):
        records = [data]
    elif isinstance(data, Mapping) and isinstance(data.get("runs"), list):
        records = data["runs"]
    elif isinstance(data, list):
        records = data
    elif isinstance(data, Mapping):
        out: Evaluation = {}
        for dataset, rankers in data.items():
            if not isinstance(rankers, Mapping):
                raise InputError(f"{source}: evaluation[{dataset!r}] should map ranker names to results")
            for ranker, value in rankers.items():
                where = f"{source}[{dataset}][{ranker}]"
                out.setdefault(str(dataset), {})[str(ranker)] = _eval_record(value, where)
        return out
    out = {}
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise InputError(f"{source}: record {i} is not an object")
        dataset_name = dataset or str(record.get("dataset") or "default")
        fallback = Path(str(record.get("run", f"run{i}"))).stem
        ranker = str(record.get("ranker") or record.get("name") or fallback)
        out.setdefault(dataset_name, {})[ranker] = _eval_record(record, f"{source}[{i}]")
    return out


def _eval_record(record: Any, where: str) -> RankerEval:
    if not isinstance(record, Mapping) or not isinstance(record.get("per_query", {}), Mapping):
        raise InputError(f"{where}: expected an object with 'aggregate' and 'per_query'")
    per_query = {str(q): {m: float(v) for m, v in vals.items() if _is_number(v)}
                 for q, vals in record.get("per_query", {}).items()}
    aggregate = {m: float(v) for m, v in (record.get("aggregate") or {}).items() if _is_number(v)}
    if not aggregate and per_query:
        measures = sorted({m for vals in per_query.values() for m in vals})
        aggregate = {m: _mean([v[m] for v in per_query.values() if m in v]) for m in measures}
    return {"aggregate": aggregate, "per_query": per_query, "source": str(record.get("run", ""))}


def load_json(path: str | Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from error


# --------------------------------------------------------------------------------------------------
# Normalising trust and throughput JSON of loosely agreed shape
# --------------------------------------------------------------------------------------------------

_COVERAGE_KEYS = ("coverage", "answered", "kept_fraction")
_RISK_KEYS = ("risk", "error", "loss", "selective_risk")
_QUALITY_KEYS = ("quality", "mean_quality", "ndcg", "nDCG@10", "metric", "value")
_Y_KEYS = _RISK_KEYS + _QUALITY_KEYS
_BIN_OBSERVED = ("accuracy", "observed", "fraction_positive", "frac_positive", "positive_rate", "empirical")
_BIN_CONFIDENCE = ("confidence", "mean_confidence", "mean_predicted", "mean_probability", "predicted")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def _first(mapping: Mapping[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        if key in mapping and mapping[key] is not None:
            return mapping[key]
    return None


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def curve_measure(value: Any) -> str:
    """The name of the y quantity of a curve ("risk" for bare pairs)."""
    if isinstance(value, Mapping):
        inner = _first(value, ("points", "curve"))
        if inner is not None and _first(value, _Y_KEYS) is None:
            return curve_measure(inner)
        return next((k for k in _Y_KEYS if k in value), "risk")
    if isinstance(value, list) and value and isinstance(value[0], Mapping):
        return next((k for k in _Y_KEYS if k in value[0]), "risk")
    return "risk"


def curve_points(value: Any) -> list[tuple[float, float]] | None:
    """(coverage, risk or quality) points from a list of dicts or pairs, or from parallel arrays."""
    if isinstance(value, Mapping):
        xs, ys = _first(value, _COVERAGE_KEYS), _first(value, _Y_KEYS)
        if isinstance(xs, list) and isinstance(ys, list) and len(xs) == len(ys):
            pairs = zip(xs, ys, strict=True)
            return sorted((float(x), float(y)) for x, y in pairs if _is_number(x) and _is_number(y))
        inner = _first(value, ("points", "curve"))
        return curve_points(inner) if inner is not None else None
    if isinstance(value, list) and value:
        points = []
        for p in value:
            if isinstance(p, Mapping):
                x, y = _first(p, _COVERAGE_KEYS), _first(p, _Y_KEYS)
            elif isinstance(p, (list, tuple)) and len(p) >= 2:
                x, y = p[0], p[1]
            else:
                return None
            if _is_number(x) and _is_number(y):
                points.append((float(x), float(y)))
        return sorted(points) if points else None
    return None


def reliability_bins(value: Any) -> tuple[list[tuple[float, float, float, float | None]], dict] | None:
    """(low, high, observed, mean confidence) bins plus any scalar summary (ece, brier…)."""
    extras: dict[str, Any] = {}
    if isinstance(value, Mapping):
        extras = {k: v for k, v in value.items() if _is_number(v)}
        if isinstance(value.get("bins"), list):
            value = value["bins"]
        else:
            observed, confidence = _first(value, _BIN_OBSERVED), _first(value, _BIN_CONFIDENCE)
            if isinstance(observed, list):
                n = len(observed)
                edges = value.get("edges") or value.get("bin_edges")
                value = [
                    {"low": edges[i] if edges else i / n, "high": edges[i + 1] if edges else (i + 1) / n,
                     "observed": observed[i],
                     "confidence": confidence[i] if isinstance(confidence, list) else None,
                     "count": (value.get("count") or value.get("counts") or [None] * n)[i]}
                    for i in range(n)
                ]
            else:
                return None
    if not isinstance(value, list) or not value or not all(isinstance(b, Mapping) for b in value):
        return None
    n = len(value)
    bins = []
    for i, b in enumerate(value):
        if b.get("count", 1) == 0:  # an empty bin (kept for regular edges) has nothing to draw
            continue
        observed = _first(b, _BIN_OBSERVED)
        if observed is None:
            return None
        confidence = _first(b, _BIN_CONFIDENCE)
        low = b.get("low", b.get("lower", b.get("bin_low")))
        high = b.get("high", b.get("upper", b.get("bin_high")))
        if not (_is_number(low) and _is_number(high)):
            low, high = i / n, (i + 1) / n
        bins.append((float(low), float(high), float(observed) if _is_number(observed) else float("nan"),
                     float(confidence) if _is_number(confidence) else None))
    return bins, extras


def _table_rows(value: Any) -> list[dict[str, Any]] | None:
    if isinstance(value, Mapping) and isinstance(value.get("rows"), list):
        value = value["rows"]
    if isinstance(value, list) and value and all(isinstance(r, Mapping) for r in value):
        return [dict(r) for r in value]
    return None


@dataclass
class TrustFigures:
    risk_coverage: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    curve_measures: dict[str, str] = field(default_factory=dict)
    reliability: dict[str, tuple[list, dict]] = field(default_factory=dict)
    cutoffs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


_SKIP_IN_LABELS = {"runs", "trust", "items"}
_SUMMARY_KEYS = ("ece", "brier", "log_loss", "mce", "pairs", "base_rate", "mean_probability")


def collect_trust(documents: Sequence[tuple[str, Any]]) -> TrustFigures:
    """Find risk-coverage curves, reliability bins and cutoff tables anywhere in the given JSON.

    Accepts the trust part of ``surerank eval --json`` (``runs/<run>/trust/{calibration,cutoff,
    abstention}``) as well as hand-made files; an object of scalars under a ``cutoff`` key becomes one
    row of a summary table.
    """
    figures = TrustFigures()
    summary_rows: list[dict[str, Any]] = []

    def name_of(path: list[str]) -> str:
        shown = [p for p in path if p not in _SKIP_IN_LABELS]
        return " / ".join(shown) or "trust"

    def visit(node: Any, path: list[str]) -> None:
        if not isinstance(node, Mapping):
            return
        siblings = {k: v for k, v in node.items() if str(k).lower() in _SUMMARY_KEYS and _is_number(v)}
        for key, value in node.items():
            lower = str(key).lower()
            here = [*path, str(key)]
            label = name_of(path)
            if "risk_coverage" in lower or lower in ("risk_coverage_curve", "aurc_curve"):
                if (points := curve_points(value)) is not None:
                    figures.risk_coverage[label] = points
                    figures.curve_measures[label] = curve_measure(value)
                elif isinstance(value, Mapping):
                    for name, curve in value.items():
                        if (points := curve_points(curve)) is not None:
                            name = f"{label} / {name}" if path else str(name)
                            figures.risk_coverage[name] = points
                            figures.curve_measures[name] = curve_measure(curve)
                continue
            if "reliability" in lower:
                if (found := reliability_bins(value)) is not None:
                    figures.reliability[label] = (found[0], {**siblings, **found[1]})
                elif isinstance(value, Mapping):
                    for name, bins in value.items():
                        if (found := reliability_bins(bins)) is not None:
                            figures.reliability[f"{label} / {name}" if path else str(name)] = found
                continue
            if "cutoff" in lower:
                if (rows := _table_rows(value)) is not None:
                    figures.cutoffs[label] = rows
                    continue
                if isinstance(value, Mapping) and value and all(_is_number(v) for v in value.values()):
                    summary_rows.append({"run": label, **value})
                    continue
                if isinstance(value, Mapping):
                    found_any = False
                    for name, table in value.items():
                        if (rows := _table_rows(table)) is not None:
                            figures.cutoffs[f"{label} / {name}" if path else str(name)] = rows
                            found_any = True
                    if found_any:
                        continue
            visit(value, here)

    for source, document in documents:
        if isinstance(document, list):
            document = {"items": {str(i): d for i, d in enumerate(document)}}
        visit(document, [source] if len(documents) > 1 else [])
    if summary_rows:
        figures.cutoffs["what the cutoffs kept"] = summary_rows
    return figures


def throughput_rows(documents: Sequence[tuple[str, Any]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for source, document in documents:
        found = _table_rows(document)
        if found is None and isinstance(document, Mapping):
            found = _table_rows(_first(document, ("results", "throughput", "rows")))
            if found is None and all(isinstance(v, Mapping) for v in document.values()):
                found = [{"name": k, **v} for k, v in document.items()]
        if found is None:
            raise InputError(f"{source}: throughput JSON should be a list of rows or {{'rows': [...]}}")
        rows.extend(found)
    return rows


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
    risky = all(m in _RISK_KEYS for m in measures)
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


_CUTOFF_X = ("target", "alpha", "risk_target", "epsilon", "delta", "threshold", "cutoff", "k", "budget",
             "coverage_target")


def _cutoffs(figures: TrustFigures) -> str:
    parts = []
    for i, (label, rows) in enumerate(figures.cutoffs.items()):
        columns = list(dict.fromkeys(k for r in rows for k in r))
        table = _table(columns, ([_num(r.get(c)) for c in columns] for r in rows))
        x_key = next((k for k in _CUTOFF_X if k in columns and all(_is_number(r.get(k)) for r in rows)), None)
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


_NAME_KEYS = ("name", "ranker", "label", "config", "backend", "engine", "mode")
_RATE_HINTS = ("per_s", "per_sec", "throughput", "qps", "rate")


def _throughput(rows: Sequence[Mapping[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    table = _table(columns, ([_num(r.get(c)) for c in columns] for r in rows))
    name_key = next((k for k in _NAME_KEYS if k in columns), None)
    rate_key = next((c for c in columns if any(h in c.lower() for h in _RATE_HINTS)
                     and all(_is_number(r.get(c)) for r in rows)), None)
    fig = ""
    if rate_key:
        labels = [str(r.get(name_key, i)) if name_key else str(i) for i, r in enumerate(rows)]
        chart = svg.bar_chart(labels, [(rate_key, [float(r[rate_key]) for r in rows])], y_label=rate_key,
                              title="throughput", width=max(520, 70 * len(rows)))
        fig = '<div class="figs">' + _figure("throughput", chart, f"{escape(rate_key)} per configuration "
                                             "(higher is better); the table has every measured column.")
        fig += "</div>"
    return fig + table


def build_report(*, evaluation: Evaluation | None = None, trust: Sequence[tuple[str, Any]] = (),
                 robustness: Sequence[Mapping[str, Any]] = (), throughput: Sequence[tuple[str, Any]] = (),
                 baseline: str | None = None, title: str = "surerank report",
                 sources: Sequence[str] = ()) -> str:
    """Render the HTML page; each argument left empty drops its section."""
    sections: list[tuple[str, str, str]] = []
    if evaluation:
        effectiveness, deltas, _ = _effectiveness(evaluation, baseline)
        sections.append(("effectiveness", "Effectiveness", effectiveness))
        if deltas:
            sections.append(("per-query", "Per-query deltas", deltas))
    figures = collect_trust(trust) if trust else TrustFigures()
    if figures.risk_coverage:
        sections.append(("risk-coverage", "Risk-coverage", _risk_coverage(figures)))
    if figures.reliability:
        sections.append(("reliability", "Reliability diagrams", _reliability(figures)))
    if figures.cutoffs:
        sections.append(("cutoffs", "Cutoff trade-offs", _cutoffs(figures)))
    if trust and not (figures.risk_coverage or figures.reliability or figures.cutoffs):
        raise InputError("trust JSON: found no risk_coverage, reliability or cutoffs entries in "
                         + ", ".join(name for name, _ in trust))
    if robustness:
        for r in robustness:
            if not isinstance(r, Mapping) or "clean" not in r:
                raise InputError("robustness JSON: expected the output of `surerank robustness` "
                                 "(an object with 'ranker' and 'clean')")
        sections.append(("robustness", "Robustness", _robustness(robustness)))
    if throughput:
        sections.append(("throughput", "Throughput", _throughput(throughput_rows(throughput))))
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
    "RunSpec", "TrustFigures", "build_report", "collect_trust", "curve_measure", "curve_points",
    "evaluate_runs", "evaluation_from_json", "load_json", "paired_p_value", "reliability_bins",
    "throughput_rows", "write_report",
]
