"""The plain-text table ``surerank robustness`` prints: one column per ranker, one row per figure."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from surerank.robustness.result import MEASURE, RobustnessResult
from surerank.robustness.typos import TYPO_KINDS


def _fmt(value: Any, signed: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:+.4f}" if signed else f"{value:.4f}"
    return str(value)


def _rows(results: Sequence[RobustnessResult]) -> list[tuple[str, Callable[[RobustnessResult], Any], bool]]:
    """(label, figure of one result or None, signed) for every row a table may have, in order."""
    rows: list[tuple[str, Callable[[RobustnessResult], Any], bool]] = [
        (f"{MEASURE} (clean)", lambda r: r.clean.ndcg, False),
        ("order: Kendall tau (mean)", lambda r: r.order and r.order.kendall_tau_mean, False),
        ("order: Kendall tau (min)", lambda r: r.order and r.order.kendall_tau_min, False),
        ("order: top-1 flip rate", lambda r: r.order and r.order.top1_flip_rate, False),
        ("order: duplicate texts (groups)", lambda r: (r.order and r.order.duplicate_groups) or None, False),
        ("position: top-1 acc @1", lambda r: r.position.top1_accuracy[0] if _accuracy(r) else None, False),
        ("position: top-1 acc @last", lambda r: r.position.top1_accuracy[-1] if _accuracy(r) else None, False),
        ("position: spread (max-min)", lambda r: r.position and r.position.spread, False),
    ]
    kinds = sorted({k for r in results if r.typos for k in r.typos.kinds}, key=TYPO_KINDS.index)
    rows += [(f"typo {kind}: delta {MEASURE}", lambda r, k=kind: _typo_delta(r, k), True) for kind in kinds]
    rows += [
        ("trap slice: queries", lambda r: r.trap and r.trap.n_queries, False),
        (f"trap slice: ranker {MEASURE}", lambda r: r.trap and r.trap.ranker.trap, False),
        (f"trap slice: bm25 {MEASURE}", lambda r: r.trap and r.trap.bm25.trap, False),
        (f"rest: ranker {MEASURE}", lambda r: r.trap and r.trap.ranker.rest, False),
        (f"rest: bm25 {MEASURE}", lambda r: r.trap and r.trap.bm25.rest, False),
    ]
    depths = sorted({row.depth for r in results if r.depth for row in r.depth.depths})
    rows += [(f"depth {d}: {MEASURE}", lambda r, d=d: _at_depth(r, d), False) for d in depths]
    rows.append(("seconds", lambda r: r.seconds, False))
    return rows


def _accuracy(result: RobustnessResult) -> bool:
    return bool(result.position and result.position.top1_accuracy)


def _typo_delta(result: RobustnessResult, kind: str) -> float | None:
    figures = result.typos.kinds.get(kind) if result.typos else None
    return figures.delta if figures else None


def _at_depth(result: RobustnessResult, depth: int) -> float | None:
    rows = [row for row in result.depth.depths if row.depth == depth] if result.depth else []
    return rows[0].ndcg if rows else None


def format_table(results: Sequence[RobustnessResult]) -> str:
    """One column per ranker, one row per figure that any of them has: what ``surerank robustness`` prints."""
    rows = []
    for label, figure, signed in _rows(results):
        values = [_fmt(figure(r), signed) for r in results]
        if any(v != "-" for v in values):
            rows.append((label, values))
    header = ["figure"] + [r.ranker for r in results]
    width0 = max(len(header[0]), *(len(label) for label, _ in rows)) if rows else len(header[0])
    widths = [max(len(header[i + 1]), *(len(v[i]) for _, v in rows)) if rows else len(header[i + 1])
              for i in range(len(results))]

    def line(first: str, cells: Sequence[str]) -> str:
        return "  ".join([first.ljust(width0)] + [c.rjust(w) for c, w in zip(cells, widths, strict=True)])

    lines = [line(header[0], header[1:]), line("-" * width0, ["-" * w for w in widths])]
    lines += [line(label, values) for label, values in rows]
    return "\n".join(lines)


__all__ = ["format_table"]
