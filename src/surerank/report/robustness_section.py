"""The report's robustness section: per dataset, one plot per check and the table ``surerank robustness`` prints.

It reads :class:`~surerank.robustness.RobustnessResult` fields only; files are read (and checked) by
:func:`surerank.report.readers.read_robustness` first, so a plot never meets a missing key.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from surerank.report import svg
from surerank.report.html import figure, html_table, plain
from surerank.robustness import TYPO_KINDS, RobustnessResult, format_table
from surerank.robustness.result import TypoExample

MAIN_MEASURE = "nDCG@10"


def _order(group: Sequence[RobustnessResult], dataset: str) -> str:
    ordered = [(r.ranker, r.order) for r in group if r.order]
    if not ordered:
        return ""
    taus = [o.kendall_tau_mean for _, o in ordered]
    flips = [o.top1_flip_rate for _, o in ordered]
    chart = svg.bar_chart([name for name, _ in ordered], [("Kendall tau (mean)", taus), ("top-1 flip rate", flips)],
                          y_label="value", title="input-order sensitivity", y_range=(0.0, 1.05),
                          annotations=[[plain(v, 3) for v in taus], [plain(v, 3) for v in flips]])
    first = ordered[0][1]
    lists = f"top-{first.depth}" if first.depth else "full"
    return figure(f"robust-order-{dataset}", chart, f"{first.shuffles} shuffles of each {lists} candidate list: "
                  "tau 1 and flip rate 0 mean the ranker ignores input order.")


def _position(group: Sequence[RobustnessResult], dataset: str) -> str:
    positioned = [(r.ranker, r.position) for r in group if r.position and r.position.top1_accuracy]
    if not positioned:
        return ""
    series = [(name, p.positions, p.top1_accuracy) for name, p in positioned]
    chart = svg.line_chart(series, x_label="position of the relevant passage", y_label="top-1 accuracy",
                           title="position bias", y_range=(0.0, 1.0))
    first = positioned[0][1]
    return figure(f"robust-position-{dataset}", chart,
                  f"One relevant passage among {first.list_size - 1} judged non-relevant ones, moved through "
                  f"every position ({first.n_queries} queries); a flat line means no position bias.")


def _typos(group: Sequence[RobustnessResult], dataset: str) -> str:
    typed = [(r.ranker, r.typos) for r in group if r.typos and r.typos.kinds]
    if not typed:
        return ""
    kinds = [k for k in TYPO_KINDS if any(k in t.kinds for _, t in typed)]
    series = [(name, [t.kinds[k].delta if k in t.kinds else None for k in kinds]) for name, t in typed]
    chart = svg.bar_chart(kinds, series, y_label=f"Δ {MAIN_MEASURE}", title="query typos")
    seeds = ", ".join(map(str, typed[0][1].seeds))
    return figure(f"robust-typos-{dataset}", chart,
                  f"Change in {MAIN_MEASURE} after one typo in one content word, mean over seeds {seeds}.")


def _trap(group: Sequence[RobustnessResult], dataset: str) -> str:
    trapped = [(r.ranker, r.trap) for r in group if r.trap]
    if not trapped:
        return ""
    first = trapped[0][1]
    cats = [name for name, _ in trapped] + ["bm25 (first stage)"]
    trap_vals = [t.ranker.trap for _, t in trapped] + [first.bm25.trap]
    rest_vals = [t.ranker.rest for _, t in trapped] + [first.bm25.rest]
    chart = svg.bar_chart(cats, [(f"trap slice (n={first.n_queries})", trap_vals),
                                 (f"other queries (n={first.n_rest})", rest_vals)],
                          y_label=MAIN_MEASURE, title="lexical trap slice", y_range=(0.0, 1.0))
    return figure(f"robust-trap-{dataset}", chart, "Queries whose best judged non-relevant passage out-scores "
                  "every relevant one under BM25, against the other queries.")


def _depth(group: Sequence[RobustnessResult], dataset: str) -> str:
    deep = [(r.ranker, r.depth) for r in group if r.depth and r.depth.depths]
    if not deep:
        return ""
    depths = sorted({row.depth for _, d in deep for row in d.depths})
    xs = list(range(len(depths)))
    series = []
    for name, d in deep:
        by = {row.depth: row.ndcg for row in d.depths}
        series.append((name, xs, [by.get(k) for k in depths]))
    first = deep[0][1].first_stage
    if first is not None:
        series.append(("first stage", xs, [first] * len(depths)))
    chart = svg.line_chart(series, x_label="candidates reranked (first-stage top k)", y_label=MAIN_MEASURE,
                           title="reranking depth", x_range=(-0.3, len(depths) - 0.7),
                           x_categories=[str(k) for k in depths])
    return figure(f"robust-depth-{dataset}", chart,
                  f"{MAIN_MEASURE} when the ranker reorders only the first-stage top k.")


def _per_kind(examples: Sequence[TypoExample], keep: int) -> list[TypoExample]:
    """The first ``keep`` examples of each typo kind."""
    seen: dict[str, int] = {}
    out = []
    for e in examples:
        seen[e.kind] = seen.get(e.kind, 0) + 1
        if seen[e.kind] <= keep:
            out.append(e)
    return out


def _examples(group: Sequence[RobustnessResult]) -> str:
    examples = next((r.typos.examples for r in group if r.typos and r.typos.kinds and r.typos.examples), [])
    if not examples:
        return ""
    return html_table(["typo", "query", "with the typo"],
                      ([escape(e.kind), escape(e.query), escape(e.typo)] for e in _per_kind(examples, 2)),
                      cls="text")


CHECK_FIGURES = (_order, _position, _typos, _trap, _depth)


def robustness(results: Sequence[RobustnessResult]) -> str:
    """The section's HTML: per dataset, a plot per check that any of its rankers ran, then the table."""
    by_dataset: dict[str, list[RobustnessResult]] = {}
    for r in results:
        by_dataset.setdefault(r.dataset or "data", []).append(r)
    parts = []
    for dataset, group in by_dataset.items():
        names = ", ".join(r.ranker for r in group)
        figs = "".join(draw(group, dataset) for draw in CHECK_FIGURES)
        parts.append(f"<h3>{escape(dataset)}: {escape(names)}</h3>"
                     f'<div class="figs">{figs}</div><pre class="note">{escape(format_table(group))}</pre>'
                     + _examples(group))
    return "".join(parts)


__all__ = ["robustness"]
