"""Moved: :mod:`surerank.trust.output_metrics` (this was one of two ``report.py``, and made no report).
This alias keeps old imports working and warns once."""

from __future__ import annotations

import warnings

from surerank.trust.output_metrics import CURVE_POINTS, from_record, read_ranked_jsonl, trust_metrics

warnings.warn("surerank.trust.report moved to surerank.trust.output_metrics", DeprecationWarning, stacklevel=2)

__all__ = ["CURVE_POINTS", "from_record", "read_ranked_jsonl", "trust_metrics"]
