"""One self-contained HTML report from evaluation, trust, robustness and throughput results.

Every section is optional: the report shows what it was given.  Plots are inline SVG drawn by
:mod:`surerank.report.svg`, so the file opens offline and carries no script or font from the network.  A
short inline script marks each figure ``data-rendered="ok"`` once the browser has laid out its marks,
which is what the headless-browser test checks.

The report reads typed objects only: :mod:`~surerank.report.readers` turns each input file into one
(refusing another kind, or a missing or mistyped field, with the file and the field), and the sections
read their fields:

* evaluation: TREC run files + qrels (``dataset:ranker=path``), or ``surerank eval --json``
  (``"kind": "surerank.eval"``, runs read as :class:`~surerank.eval.metrics.EvalResult`); significance is a
  two-sided paired t-test per query against a baseline (:mod:`surerank.eval.significance`);
* trust: a trust artifact or calibrate's summary (read as :class:`~surerank.trust.artifact.FitSummary`), the
  trust parts of ``surerank eval --json``, or :class:`TrustFigures` (``surerank.trust-figures``);
* robustness: :class:`~surerank.robustness.RobustnessResult` (``surerank.robustness``);
* throughput: :class:`ThroughputTable` (``surerank.throughput``);
* training: a ``surerank train --student`` run's card, read as
  :class:`~surerank.engine.checkpoint.training_run.TrainingRun` (the training curve, base/student/teacher on dev).

Modules: ``documents`` (the kinds; TrustFigures, ThroughputTable), ``readers``, ``sections``,
``robustness_section`` and ``training_section`` (HTML fragments), ``html`` (CSS, check script, helpers), ``svg``
(charts), ``page``.
"""

from surerank.eval.significance import paired_p_value
from surerank.report.documents import (
    EVAL_KIND,
    THROUGHPUT_KIND,
    TRUST_FIGURES_KIND,
    TRUST_KINDS,
    ThroughputTable,
    TrustFigures,
    load_json,
)
from surerank.report.page import build_report, write_report
from surerank.report.readers import (
    Evaluation,
    RunSpec,
    eval_results,
    evaluate_runs,
    evaluation_from_json,
    figures_from_eval,
    figures_from_fit,
    read_robustness,
    read_throughput,
    read_training,
    read_trust,
)

__all__ = [
    "EVAL_KIND", "THROUGHPUT_KIND", "TRUST_FIGURES_KIND", "TRUST_KINDS", "Evaluation", "RunSpec", "ThroughputTable",
    "TrustFigures", "build_report", "eval_results", "evaluate_runs", "evaluation_from_json", "figures_from_eval",
    "figures_from_fit", "load_json", "paired_p_value", "read_robustness", "read_throughput", "read_training",
    "read_trust", "write_report",
]
