"""Deprecated: the report's SVG charts moved to :mod:`surerank.report.svg`."""

import warnings

from surerank.report.svg import (  # noqa: F401  (re-exported for old imports)
    PALETTE,
    Frame,
    bar_chart,
    colour,
    delta_bars,
    line_chart,
    nice_ticks,
    reliability_diagram,
)

warnings.warn("surerank.eval.report_svg is deprecated; import from surerank.report.svg", DeprecationWarning,
              stacklevel=2)
