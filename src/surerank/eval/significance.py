"""Significance of a difference between two rankers, per query, as the report marks it."""

from __future__ import annotations

import math
from collections.abc import Mapping

from surerank.eval.metrics import paired_test


def paired_p_value(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[float | None, int]:
    """Two-sided paired t-test (surerank.eval.metrics) over the queries both rankers were scored on.

    No spread in the differences (identical values, or a constant shift) is answered without a test:
    p = 1 or p = 0; fewer than two common queries give no p.
    """
    common = set(a) & set(b)
    if len(common) < 2:
        return None, len(common)
    diffs = [a[q] - b[q] for q in common]
    if max(diffs) - min(diffs) < 1e-12:  # no spread: identical (p = 1) or a constant shift (p = 0)
        return (1.0 if abs(diffs[0]) < 1e-12 else 0.0), len(common)
    result = paired_test(a, b)
    p = result.p_value
    return (p if math.isfinite(p) else None), result.queries


__all__ = ["paired_p_value"]
