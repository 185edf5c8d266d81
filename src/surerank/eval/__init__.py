"""Evaluation: metrics, significance and the benchmark datasets.

Nothing here calls a model: evaluation reads runs and judgments only.  The file formats are
:mod:`surerank.formats`, the robustness checks (which call rankers) :mod:`surerank.robustness`, and the
HTML report :mod:`surerank.report`; the old ``surerank.eval.formats`` / ``robustness`` / ``report`` /
``report_svg`` paths still import, with a DeprecationWarning.
"""
