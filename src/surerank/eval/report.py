"""Deprecated: the HTML report moved to :mod:`surerank.report` (readers, sections, SVG, the page).

``read_robustness`` now returns a typed :class:`~surerank.robustness.RobustnessResult`, which
``build_report`` requires.
"""

import warnings

from surerank.report import *  # noqa: F403  (the whole public API, re-exported)
from surerank.report import __all__  # noqa: F401
from surerank.report.sections import choose_baseline  # noqa: F401

warnings.warn("surerank.eval.report is deprecated; import from surerank.report", DeprecationWarning, stacklevel=2)
