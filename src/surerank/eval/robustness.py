"""Deprecated: the robustness checks moved to :mod:`surerank.robustness` (they call rankers; eval does not).

Kept for old imports with the old contract: :func:`run_robustness` here returns the JSON-ready dict
(``RobustnessResult.to_dict()``), and :func:`format_table` takes those dicts as well as typed results.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from surerank.robustness import (
    CHECKS,
    KEYBOARD_NEIGHBOURS,
    TYPO_KINDS,
    RobustnessConfig,
    RobustnessResult,
    Typo,
    content_words,
    make_typo,
    ndcg_per_query,
    typo_rng,
)
from surerank.robustness import run as typed_run
from surerank.robustness import table as typed_table
from surerank.robustness.checks import (  # noqa: F401  (the checks, typed now, for old imports)
    bm25_scores,
    depth_check,
    first_stage_order,
    group_order,
    order_check,
    position_check,
    text_groups,
    trap_check,
    typo_check,
)

SCHEMA = "surerank.robustness/1"

warnings.warn("surerank.eval.robustness is deprecated; import from surerank.robustness (run_robustness there "
              "returns a typed RobustnessResult)", DeprecationWarning, stacklevel=2)


def run_robustness(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """:func:`surerank.robustness.run_robustness`, as the JSON-ready dict this module used to return."""
    return typed_run.run_robustness(*args, **kwargs).to_dict()


def format_table(results: Sequence[Mapping[str, Any] | RobustnessResult]) -> str:
    """:func:`surerank.robustness.format_table` of typed results or of their dicts."""
    typed = [r if isinstance(r, RobustnessResult) else RobustnessResult.from_dict(r) for r in results]
    return typed_table.format_table(typed)


__all__ = [
    "CHECKS", "KEYBOARD_NEIGHBOURS", "SCHEMA", "TYPO_KINDS", "RobustnessConfig", "Typo", "content_words",
    "format_table", "make_typo", "ndcg_per_query", "run_robustness", "typo_rng",
]
