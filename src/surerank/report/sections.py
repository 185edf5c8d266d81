"""The report's sections other than robustness: effectiveness with significance, trust figures, throughput.

Each takes typed inputs (:mod:`surerank.report.readers`) and returns an HTML fragment; plots are inline SVG
(:mod:`surerank.report.svg`).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path

from surerank.documents import is_number
from surerank.errors import InputError
from surerank.eval.significance import paired_p_value
from surerank.report import svg
from surerank.report.documents import RISK_MEASURES, ThroughputTable, TrustFigures
from surerank.report.html import figure, html_table, num
from surerank.report.readers import DEFAULT_MEASURES, Evaluation, RankerEval

MAIN_MEASURE = "nDCG@10"
ALPHA = 0.05


def mean_or_nan(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def _per_query(ev: RankerEval, measure: str) -> dict[str, float]:
    return {q: v[measure] for q, v in ev.get("per_query", {}).items() if measure in v}


def choose_baseline(rankers: Sequence[str], requested: str | None) -> str:
    if requested and requested in rankers:
        return requested
    if requested:
        raise InputError(f"--baseline {requested!r} is not among the rankers: {', '.join(rankers)}")
    return "bm25" if "bm25" in rankers else rankers[0]


def effectiveness(evaluation: Evaluation, baseline: str | None) -> tuple[str, str, dict[str, str]]:
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
                cells.append(num(value) + mark)
            cells.append(str(len(ev.get("per_query", {}))))
            rows.append(cells)
        for name in all_rankers:
            ev = rankers.get(name)
            chart_values[name].append(ev["aggregate"].get(MAIN_MEASURE) if ev else None)
            p = None
            if ev and name != base:
                p, _ = paired_p_value(_per_query(ev, MAIN_MEASURE), _per_query(rankers[base], MAIN_MEASURE))
            chart_notes[name].append("*" if p is not None and p < ALPHA else "")
        tables.append(f"<h3>{escape(dataset)}</h3>" + html_table(["ranker", *measures, "queries"], rows))
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
            delta_figs.append(figure(
                f"deltas-{dataset}-{name}", chart,
                f"<b>{escape(dataset)}: {escape(name)} − {escape(base)}</b> per query. Better on {wins}, "
                f"worse on {losses}, tied on {len(deltas) - wins - losses}; mean Δ {mean_or_nan(deltas):+.4f}."))
    datasets = list(evaluation)
    chart = svg.bar_chart(datasets, [(name, chart_values[name]) for name in all_rankers],
                          y_label=MAIN_MEASURE, title=f"{MAIN_MEASURE} per ranker and dataset",
                          annotations=[chart_notes[name] for name in all_rankers],
                          width=max(520, 90 * len(datasets) * max(len(all_rankers), 1)))
    base_names = ", ".join(f"{escape(b)} on {escape(d)}" for d, b in baselines.items())
    body = (
        '<div class="figs">'
        + figure("effectiveness", chart, f"{MAIN_MEASURE} per ranker; * marks a significant difference "
                  f"from the baseline ({base_names}) at p &lt; {ALPHA}, two-sided paired t-test over "
                  "queries.")
        + "</div>" + "".join(tables)
        + f'<p class="note">▲/▼: better/worse than the baseline at p &lt; {ALPHA} (two-sided paired t-test '
        "over the queries both runs were scored on); hover a mark for p and n.</p>"
    )
    deltas_html = f'<div class="figs">{"".join(delta_figs)}</div>' if delta_figs else ""
    return body, deltas_html, baselines


def risk_coverage(figures: TrustFigures) -> str:
    curves = list(figures.risk_coverage.items())
    measures = sorted(set(figures.curve_measures.get(label, "risk") for label, _ in curves))
    y_label = " / ".join(measures)
    risky = all(m in RISK_MEASURES for m in measures)
    chart = svg.line_chart([(label, [p[0] for p in pts], [p[1] for p in pts]) for label, pts in curves],
                           x_label="coverage (fraction of queries answered)", y_label=y_label,
                           title="risk-coverage curves", x_range=(0.0, 1.0), markers=True)
    rows = []
    for label, pts in curves:
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        area = sum((xs[i + 1] - xs[i]) * (ys[i + 1] + ys[i]) / 2 for i in range(len(xs) - 1))
        span = (xs[-1] - xs[0]) or 1.0
        rows.append([escape(label), escape(figures.curve_measures.get(label, "risk")), str(len(pts)),
                     num(ys[-1]), num(area / span)])
    how = ("Risk of the answered queries as coverage grows; lower is better. Abstaining on the least "
           "confident queries should pull the curve down on the left." if risky else
           f"Mean {escape(y_label)} of the answered queries as coverage grows (a quality: higher is better, "
           "so a useful confidence bends the curve up on the left).")
    return ('<div class="figs">' + figure("risk-coverage", chart, how) + "</div>"
            + html_table(["curve", "measure", "points", "at full coverage", "mean (area / span)"], rows))


def reliability(figures: TrustFigures) -> str:
    figs = []
    for i, (label, (bins, extras)) in enumerate(figures.reliability.items()):
        chart = svg.reliability_diagram(bins, title=f"reliability: {label}")
        summary = ", ".join(f"{escape(k)} {num(v)}" for k, v in extras.items()
                            if k.lower() in ("ece", "brier", "log_loss", "mce", "pairs", "n"))
        figs.append(figure(f"reliability-{i}", chart,
                            f"{escape(label)}: observed relevance rate per predicted-probability bin; the "
                            f"dashed diagonal is perfect calibration." + (f" {summary}." if summary else "")))
    return f'<div class="figs">{"".join(figs)}</div>'


def cutoffs(figures: TrustFigures) -> str:
    parts = []
    for i, (label, rows) in enumerate(figures.cutoffs.items()):
        columns = list(dict.fromkeys(k for r in rows for k in r))
        table = html_table(columns, ([num(r.get(c)) for c in columns] for r in rows))
        x_key = figures.cutoff_x.get(label)  # the document says which column is the x axis, if any
        fig = ""
        if x_key is not None:
            ys = [c for c in columns if c != x_key and all(is_number(r.get(c)) for r in rows)
                  and all(0.0 <= float(r[c]) <= 1.0 for r in rows)]
            if ys:
                ordered = sorted(rows, key=lambda r: float(r[x_key]))
                xs = [float(r[x_key]) for r in ordered]
                chart = svg.line_chart([(c, xs, [float(r[c]) for r in ordered]) for c in ys], x_label=x_key,
                                       y_label="value", title=f"cutoff trade-off {label}", y_range=(0.0, 1.0))
                fig = '<div class="figs">' + figure(
                    f"cutoffs-{i}", chart, f"{escape(label)}: what each cutoff setting keeps and achieves, "
                    f"against {escape(x_key)}.") + "</div>"
        parts.append(f"<h3>{escape(label)}</h3>{fig}{table}")
    return "".join(parts)


def throughput(tables: Sequence[ThroughputTable]) -> str:
    parts = []
    for i, t in enumerate(tables):
        columns = list(dict.fromkeys(k for r in t.rows for k in r))
        table = html_table(columns, ([num(r.get(c)) for c in columns] for r in t.rows))
        chart = svg.bar_chart([str(r["name"]) for r in t.rows], [(t.rate, [float(r[t.rate]) for r in t.rows])],
                              y_label=t.rate, title="throughput" + (f": {Path(t.source).name}" if i else ""),
                              width=max(520, 70 * len(t.rows)))
        name = "throughput" if i == 0 else f"throughput-{i}"
        parts.append('<div class="figs">' + figure(name, chart, f"{escape(t.rate)} per configuration "
                                                    "(higher is better); the table has every measured column.")
                     + "</div>" + table)
    return "".join(parts)


__all__ = ["ALPHA", "MAIN_MEASURE", "choose_baseline", "cutoffs", "effectiveness", "reliability", "risk_coverage",
           "throughput"]
