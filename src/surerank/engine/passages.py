"""Deprecated path: long documents as passages moved to :mod:`surerank.engine.text.passages`.

Kept for code that imports ``surerank.engine.passages``.
"""

from __future__ import annotations

import warnings

from surerank.engine.text.passages import AGGREGATES, PassagePolicy, aggregate_scores, covered

__all__ = ["AGGREGATES", "PassagePolicy", "aggregate_scores", "covered"]

warnings.warn("surerank.engine.passages moved to surerank.engine.text.passages", DeprecationWarning, stacklevel=2)
