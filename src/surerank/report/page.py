"""The page: the sections the inputs call for, in one self-contained HTML file."""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Sequence
from html import escape
from pathlib import Path

from surerank.engine.checkpoint.training_run import TrainingRun
from surerank.errors import InputError
from surerank.report.documents import ThroughputTable, TrustFigures
from surerank.report.html import CHECK_SCRIPT, CSS, section
from surerank.report.readers import Evaluation
from surerank.report.robustness_section import robustness as robustness_html
from surerank.report.sections import cutoffs, effectiveness, reliability, risk_coverage
from surerank.report.sections import throughput as throughput_html
from surerank.report.training_section import training as training_html
from surerank.robustness import RobustnessResult
from surerank.storage import atomic_write_text

logger = logging.getLogger(__name__)


def build_report(*, evaluation: Evaluation | None = None, trust: TrustFigures | None = None,
                 robustness: Sequence[RobustnessResult] = (), throughput: Sequence[ThroughputTable] = (),
                 training: Sequence[TrainingRun] = (), baseline: str | None = None, title: str = "surerank report",
                 sources: Sequence[str] = ()) -> str:
    """Render the HTML page; each argument left empty drops its section.

    The inputs are already typed: :func:`read_trust`, :func:`read_robustness`, :func:`read_throughput`,
    :func:`read_training` and :func:`evaluation_from_json` read (and check) the files; a plain dict is refused,
    never crawled for keys.
    """
    _typed(robustness, RobustnessResult, "robustness", "read_robustness(data, path)")
    _typed(training, TrainingRun, "training", "read_training(path)")
    sections: list[tuple[str, str, str]] = []
    if evaluation:
        main, deltas, _ = effectiveness(evaluation, baseline)
        sections.append(("effectiveness", "Effectiveness", main))
        if deltas:
            sections.append(("per-query", "Per-query deltas", deltas))
    if training:  # after the held-out figures (a year's runs of base, student and teacher) when both are given
        sections.append(("training", "Training", training_html(training)))
    figures = trust or TrustFigures()
    if figures.risk_coverage:
        sections.append(("risk-coverage", "Risk-coverage", risk_coverage(figures)))
    if figures.reliability:
        sections.append(("reliability", "Reliability diagrams", reliability(figures)))
    if figures.cutoffs:
        sections.append(("cutoffs", "Cutoff trade-offs", cutoffs(figures)))
    if robustness:
        sections.append(("robustness", "Robustness", robustness_html(robustness)))
    if throughput:
        sections.append(("throughput", "Throughput", throughput_html(throughput)))
    if not sections:
        raise InputError("nothing to report: give runs with qrels, --eval-json, --trust, --robustness, "
                         "--throughput or --training")
    nav = "".join(f'<a href="#{key}">{escape(name)}</a>' for key, name, _ in sections)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    source_list = ", ".join(escape(s) for s in sources)
    body = "".join(section(key, name, html) for key, name, html in sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
        f"<style>{CSS}</style></head>"
        f'<body data-report="surerank" data-sections="{" ".join(k for k, _, _ in sections)}">'
        f"<header><h1>{escape(title)}</h1><p>generated {stamp}"
        + (f" from {source_list}" if source_list else "") + "</p></header>"
        f"<nav>{nav}</nav><main>{body}</main><script>{CHECK_SCRIPT}</script></body></html>"
    )


def _typed(items: Sequence[object], kind: type, name: str, reader: str) -> None:
    """Each item of a section's input is its typed object, not a dict read from JSON."""
    untyped = [i for i, r in enumerate(items) if not isinstance(r, kind)]
    if untyped:
        raise InputError(f"{name}[{untyped[0]}]: expected a {kind.__name__}, got {type(items[untyped[0]]).__name__}; "
                         f"read files with {reader}")


def write_report(path: str | Path, html: str) -> Path:
    path = Path(path)
    atomic_write_text(path, html)
    logger.info("report written to %s (%d bytes)", path, len(html))
    return path



__all__ = ["build_report", "write_report"]
