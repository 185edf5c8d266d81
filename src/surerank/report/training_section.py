"""The report's training section: the curve of one ``surerank train --student`` run and its comparison of the
untrained student (base), the kept student and the teacher on the dev split.

It reads :class:`~surerank.engine.checkpoint.training_run.TrainingRun` fields only (the card, its dev record and
resources typed; :func:`surerank.report.readers.read_training` reads and checks the file first).  Step 0 of each
curve is the untrained student (the card's ``dev.base`` and its dev loss before training); a dashed line marks
the evaluation whose checkpoint is the saved model.  Held-out figures of another year are not on the card: rank
that year with the saved model, the base and the teacher, and give the runs (``--run`` / ``--eval-json``) to the
same page's effectiveness section.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from html import escape
from pathlib import Path

from surerank.engine.checkpoint.training_run import MEMORISED, NOT_FITTING, DevRecord, TrainingFit, TrainingRun
from surerank.report import svg
from surerank.report.html import figure, html_table, num, plain

#: the rank figures the curves and the comparison draw
FIGURES = {"spearman_teacher": "Spearman with the teacher", "ndcg@10": "nDCG@10"}
#: figures in the table only: the score scale differs between students and teacher (what collapse watching reads)
TABLE_ONLY = {"score_spread": "score spread (median std in a list)"}


def _loss(value: float | None) -> str:
    """A loss to four significant digits (a KL loss is 0.0005; four decimals would say 0.0006 and 0.0009)."""
    return f"{value:.4g}" if value is not None and math.isfinite(value) else "–"


def _finite(values: Sequence[float | None]) -> int:
    return sum(v is not None and math.isfinite(v) for v in values)


def _kept_mark(dev: DevRecord) -> list[tuple[float, str]]:
    kept = dev.kept
    return [(float(kept.step), f"kept: step {kept.step}")] if kept is not None else []


def _gaps(series: Sequence[tuple[str, Sequence[float], Sequence[float | None]]]) -> str:
    """Says how many points of each series are not drawn (NaN or infinite: a diverged run), never silently."""
    missing = [f"{len(ys) - _finite(ys)} {label}" for label, _, ys in series if _finite(ys) < len(ys)]
    return f" Not drawn (not finite): {', '.join(missing)}." if missing else ""


def loss_curve(run: TrainingRun, name: str) -> str:
    """Training loss per logged step and dev loss per evaluation (step 0: the untrained student)."""
    dev = run.dev
    dev_points = ([(0, dev.base_loss)] if dev.base_loss is not None else []) + [(e.step, e.loss)
                                                                                 for e in dev.evaluations]
    series = [(label, [float(s) for s, _ in points], [v for _, v in points]) for label, points in (
        ("training loss", [(p.step, p.loss) for p in dev.train_loss]), ("dev loss", dev_points)) if points]
    if not any(_finite(ys) for _, _, ys in series):
        return ""
    chart = svg.line_chart(series, x_label="training step", y_label=f"loss ({run.card.loss})",
                           title="training and dev loss", x_marks=_kept_mark(dev))
    start = " (step 0: the untrained student)" if dev.base_loss is not None else \
        " (no step 0: a resumed run does not know the untrained student's dev loss)"
    return figure(name, chart, f"Training loss at each of its {len(dev.train_loss)} logged steps (the mean since "
                  f"the previous log) and dev loss at each of {len(dev.evaluations)} evaluations{start}. The dashed "
                  f"line marks the kept checkpoint, chosen by {escape(dev.selected_by)}." + _gaps(series))


def dev_curve(run: TrainingRun, name: str) -> str:
    """The dev rank figures at step 0 (the untrained student) and at each evaluation."""
    dev = run.dev
    names = [n for n in FIGURES if n in dev.base or any(n in e.figures for e in dev.evaluations)]
    if not names:
        return ""
    steps = [0.0] + [float(e.step) for e in dev.evaluations]
    series = [(FIGURES[n], steps, [dev.base.get(n)] + [e.figures.get(n) for e in dev.evaluations]) for n in names]
    chart = svg.line_chart(series, x_label="training step", y_label="dev figure", title="dev figures",
                           x_marks=_kept_mark(dev))
    return figure(name, chart, f"{' and '.join(FIGURES[n] for n in names)} on the dev queries (held out of "
                  "training), at step 0 (the untrained student) and at each evaluation; the dashed line marks the "
                  "kept checkpoint." + _gaps(series))


def _columns(run: TrainingRun) -> list[tuple[str, dict[str, float]]]:
    dev = run.dev
    columns = [("untrained student (base)", dev.base), ("kept student", dev.final)]
    return columns + ([("teacher", dev.teacher)] if dev.teacher is not None else [])


def comparison(run: TrainingRun, name: str) -> tuple[str, str]:
    """The bar chart and the table of base, kept student and teacher on the dev split."""
    dev = run.dev
    names = [n for n in FIGURES if n in dev.base or n in dev.final]
    columns = _columns(run)
    chart = ""
    if names:
        bars = svg.bar_chart([FIGURES[n] for n in names], [(label, [f.get(n) for n in names]) for label, f in columns],
                             y_label="dev figure", title="base, student and teacher on dev",
                             width=max(360, 60 * len(names) * len(columns) + 120),
                             annotations=[[plain(f.get(n), 3) for n in names] for _, f in columns])
        if run.card.teacher is None:
            why = "no teacher: the student learnt from judgments."
        elif dev.teacher is None:
            why = "this card does not record the teacher's own dev figures."
        else:
            why = "the teacher's Spearman with itself is 1 by definition."
        chart = figure(name, bars, f"The untrained student, the kept student and the teacher on the dev split; {why}")
    kept = dev.kept
    shown = {**FIGURES, **TABLE_ONLY}
    rows = [[escape(shown[n])] + [num(f.get(n)) for _, f in columns]
            + [num(dev.final[n] - dev.base[n]) if n in dev.final and n in dev.base else "–"]
            for n in [*names, *(n for n in TABLE_ONLY if n in dev.base or n in dev.final)]]
    rows.append(["dev loss", _loss(dev.base_loss), _loss(kept.loss if kept else None)]
                + ["–"] * (len(columns) - 2)
                + [_loss(kept.loss - dev.base_loss) if kept and dev.base_loss is not None else "–"])
    table = html_table(["dev figure", *(label for label, _ in columns), "kept − base"], rows)
    return chart, table


def _fit(fit: TrainingFit | None) -> str:
    """The fit check: the training loss on a sample of the training lists before and after, and its verdict."""
    if fit is None:
        return "not recorded (a card written before the fit check)"
    said = {None: "", NOT_FITTING: '; <span class="down">no better than untrained: the learning rate is likely '
            'too high</span>', MEMORISED: '; <span class="down">fits them, worse on dev: memorised; more queries '
            'help</span>'}[fit.verdict]
    return f"loss {_loss(fit.loss_before)} → {_loss(fit.loss_after)} on {fit.examples:,} examples" + said


def facts(run: TrainingRun) -> str:
    """What the card says of the run, one fact a row."""
    card, dev, res = run.card, run.dev, run.resources
    kept = dev.kept
    worse = {True: '<span class="down">yes: the kept model is below the untrained student on dev</span>',
             False: "no", None: "not recorded (a card written before the flag)"}[dev.worse_than_base]
    status = "saved" if run.status == "saved" else \
        f'<span class="down">collapsed: {escape(str(run.collapse))}; no model saved</span>'
    rows = [
        ("status", status),
        ("student", escape(card.student) + (" (fresh classification head)" if card.seeded_head else "")),
        ("base model", escape(card.base_model)),
        ("teacher", escape(json.dumps(run.teacher_spec)) if run.teacher_spec is not None else "none"),
        ("judgments", escape(card.judgments) if card.judgments else "none"),
        ("loss", escape(card.loss)),
        ("epochs / steps", f"{card.epochs:g} / {card.steps:,}"),
        ("kept checkpoint", f"step {kept.step} (epoch {kept.epoch:g}), by {escape(dev.selected_by)} = "
                            f"{_loss(dev.best) if dev.metric == 'loss' else num(dev.best)}" if kept else "none"),
        ("dev worse than base", worse),
        ("fit of its training lists", _fit(dev.training_fit)),
        ("resumed from", escape(dev.resumed_from) if dev.resumed_from else "no"),
        ("pairs/s (training)", num(res.pairs_per_s, 1)),
        ("peak RSS", f"{num(res.peak_rss_mb, 1)} MiB"),
        ("seconds", f"{num(res.seconds, 1)} (training loop {num(res.train_seconds, 1)})"),
        ("seed", str(card.seed)),
    ]
    return html_table(["fact", "value"], ([escape(k), v] for k, v in rows), cls="text")


def training(runs: Sequence[TrainingRun]) -> str:
    """The section's HTML: per run, the loss and dev curves, the comparison chart, its table and the facts."""
    parts = []
    for i, run in enumerate(runs):
        label = Path(run.source).parent.name or run.source
        bars, table = comparison(run, f"training-comparison-{i}")
        figs = loss_curve(run, f"training-loss-{i}") + dev_curve(run, f"training-dev-{i}") + bars
        parts.append(f"<h3>{escape(label)}</h3>" + (f'<div class="figs">{figs}</div>' if figs else "")
                     + table + facts(run) + f'<p class="note">from {escape(run.source)}</p>')
    return "".join(parts)


__all__ = ["FIGURES", "TABLE_ONLY", "comparison", "dev_curve", "facts", "loss_curve", "training"]
