"""Small inline-SVG charts for the HTML report: lines, grouped bars, signed bars, reliability diagrams.

Hand-written so that the report is one self-contained file with no plotting dependency and no network
asset.  Every drawn mark carries ``data-mark`` (the report's own check counts them) and a ``<title>``
that the browser shows on hover with the exact value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
POSITIVE, NEGATIVE, NEUTRAL = "#2ca02c", "#d62728", "#9e9e9e"


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1-2-5 steps)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    digits = max(0, 2 - math.floor(math.log10(step)))
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    ticks = [round(k * step, digits) for k in range(first, last + 1)]
    if ticks[0] > low:
        ticks.insert(0, round((first - 1) * step, digits))
    if ticks[-1] < high:
        ticks.append(round((last + 1) * step, digits))
    return ticks


def _fmt_tick(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


@dataclass
class Frame:
    """Pixel mapping of one chart: data ranges to the plotting area inside the margins."""

    width: int
    height: int
    x_min: float
    x_max: float
    y_min: float
    y_max: float
    left: int = 58
    right: int = 16
    top: int = 14
    bottom: int = 46

    def x(self, value: float) -> float:
        span = (self.x_max - self.x_min) or 1.0
        return self.left + (value - self.x_min) / span * (self.width - self.left - self.right)

    def y(self, value: float) -> float:
        span = (self.y_max - self.y_min) or 1.0
        inner = self.height - self.top - self.bottom
        return self.height - self.bottom - (value - self.y_min) / span * inner


def _open(width: int, height: int, label: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{escape(label)}" font-family="sans-serif" '
            f'font-size="11">']


def _inside(value: float, low: float, high: float) -> bool:
    """Within [low, high], up to rounding (a tick at 0.30000000000000004 on an axis ending at 0.3 is in)."""
    slack = 1e-9 * max(abs(high - low), 1e-12)
    return low - slack <= value <= high + slack


def _axes(frame: Frame, x_ticks: Sequence[float] | None, y_ticks: Sequence[float], x_label: str,
          y_label: str, x_tick_labels: Sequence[tuple[float, str]] | None = None) -> list[str]:
    out = []
    x0, x1 = frame.left, frame.width - frame.right
    y0, y1 = frame.height - frame.bottom, frame.top
    # nice_ticks rounds outward (ticks over 1..10 start at 0): only ticks inside the axis are drawn
    y_ticks = [t for t in y_ticks if _inside(t, frame.y_min, frame.y_max)]
    x_tick_labels = [(t, text) for t, text in x_tick_labels if _inside(t, frame.x_min, frame.x_max)] \
        if x_tick_labels is not None else None
    x_ticks = [t for t in (x_ticks or []) if _inside(t, frame.x_min, frame.x_max)]
    for t in y_ticks:
        py = frame.y(t)
        out.append(f'<line x1="{x0}" x2="{x1}" y1="{py:.1f}" y2="{py:.1f}" stroke="#e4e4e4"/>')
        out.append(f'<text x="{x0 - 6}" y="{py + 4:.1f}" text-anchor="end" fill="#444">{_fmt_tick(t)}</text>')
    labels = x_tick_labels if x_tick_labels is not None else [(t, _fmt_tick(t)) for t in (x_ticks or [])]
    for t, text in labels:
        px = frame.x(t)
        out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{y0}" y2="{y0 + 4}" stroke="#444"/>')
        out.append(f'<text x="{px:.1f}" y="{y0 + 16}" text-anchor="middle" fill="#444">{escape(text)}</text>')
    out.append(f'<line x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}" stroke="#444"/>')
    out.append(f'<line x1="{x0}" x2="{x0}" y1="{y0}" y2="{y1}" stroke="#444"/>')
    out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{frame.height - 8}" text-anchor="middle" '
               f'fill="#222">{escape(x_label)}</text>')
    out.append(f'<text transform="translate(14,{(y0 + y1) / 2:.1f}) rotate(-90)" text-anchor="middle" '
               f'fill="#222">{escape(y_label)}</text>')
    return out


def _legend(labels: Sequence[str], frame: Frame, colours: Sequence[str]) -> list[str]:
    """Legend in a row above the plotting area (the caller reserved ``frame.top`` for it)."""
    out = []
    x, y = frame.left, 6
    for label, c in zip(labels, colours, strict=True):
        width = 20 + 6.2 * len(label)
        if x + width > frame.width - frame.right and x > frame.left:
            x, y = frame.left, y + 14
        out.append(f'<rect x="{x:.1f}" y="{y}" width="10" height="10" fill="{c}"/>')
        out.append(f'<text x="{x + 14:.1f}" y="{y + 9}" fill="#222">{escape(label)}</text>')
        x += width
    return out


def _legend_top(labels: Sequence[str], width: int) -> int:
    """Top margin that fits the legend rows."""
    rows, x = 1, 58.0
    for label in labels:
        w = 20 + 6.2 * len(label)
        if x + w > width - 16 and x > 58:
            rows, x = rows + 1, 58.0
        x += w
    return 14 + 14 * rows


def _range(values: Sequence[float], include_zero: bool = False, pad: float = 0.05) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if include_zero:
        finite.append(0.0)
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    if high == low:
        return low - 0.5, high + 0.5
    span = high - low
    return low - span * pad if low != 0 else 0.0, high + span * pad


def line_chart(series: Sequence[tuple[str, Sequence[float], Sequence[float]]], *, x_label: str,
               y_label: str, title: str, width: int = 520, height: int = 300,
               x_range: tuple[float, float] | None = None, y_range: tuple[float, float] | None = None,
               diagonal: bool = False, markers: bool = True, legend: bool = True,
               x_categories: Sequence[str] | None = None, x_marks: Sequence[tuple[float, str]] = ()) -> str:
    """Lines (one per series) over numeric x; ``x_categories`` spaces labelled points evenly instead;
    ``x_marks`` draws a labelled dashed vertical line at each x (an event on the x axis: a kept checkpoint)."""
    xs_all = [x for _, xs, _ in series for x in xs]
    ys_all = [y for _, _, ys in series for y in ys if y is not None]
    x_lo, x_hi = x_range or _range(xs_all, pad=0.0)
    y_lo, y_hi = y_range or _range(ys_all)
    y_ticks = nice_ticks(y_lo, y_hi)
    if not y_range:
        y_lo, y_hi = min(y_ticks[0], y_lo), max(y_ticks[-1], y_hi)
    show_legend = legend and bool(series) and (len(series) > 1 or bool(series[0][0]))
    frame = Frame(width, height, x_lo, x_hi, y_lo, y_hi)
    if show_legend:
        frame.top = _legend_top([s[0] for s in series], width)
    out = _open(width, height, title)
    if x_categories is not None:
        tick_labels = [(float(i), str(c)) for i, c in enumerate(x_categories)]
        out += _axes(frame, None, y_ticks, x_label, y_label, x_tick_labels=tick_labels)
    else:
        out += _axes(frame, nice_ticks(x_lo, x_hi), y_ticks, x_label, y_label)
    if diagonal:
        lo, hi = max(x_lo, y_lo), min(x_hi, y_hi)
        out.append(f'<line x1="{frame.x(lo):.1f}" y1="{frame.y(lo):.1f}" x2="{frame.x(hi):.1f}" '
                   f'y2="{frame.y(hi):.1f}" stroke="#999" stroke-dasharray="4 3"/>')
    out += _x_marks(frame, x_marks)
    for i, (label, xs, ys) in enumerate(series):
        c = colour(i)
        points = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None and math.isfinite(y)]
        if not points:
            continue
        path = " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in points)
        out.append(f'<polyline data-mark="line" points="{path}" fill="none" stroke="{c}" stroke-width="2">'
                   f'<title>{escape(label)}</title></polyline>')
        if markers and len(points) <= 60:
            for x, y in points:
                shown = x_categories[int(x)] if x_categories is not None else _fmt_tick(x)
                out.append(f'<circle data-mark="point" cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="3" '
                           f'fill="{c}"><title>{escape(label)}: {escape(str(shown))} → {y:.4f}</title>'
                           f'</circle>')
    if show_legend:
        out += _legend([s[0] for s in series], frame, [colour(i) for i in range(len(series))])
    out.append("</svg>")
    return "".join(out)


def _x_marks(frame: Frame, marks: Sequence[tuple[float, str]]) -> list[str]:
    """A dashed vertical line with its label at each x; the label sits on the side with room for it."""
    out = []
    for x, label in marks:
        px, mid = frame.x(x), (frame.left + frame.width - frame.right) / 2
        out.append(f'<line data-mark="x-mark" x1="{px:.1f}" x2="{px:.1f}" y1="{frame.top}" '
                   f'y2="{frame.height - frame.bottom}" stroke="#555" stroke-dasharray="5 3">'
                   f"<title>{escape(label)}</title></line>")
        anchor, tx = ("end", px - 4) if px > mid else ("start", px + 4)
        out.append(f'<text x="{tx:.1f}" y="{frame.top + 11}" text-anchor="{anchor}" fill="#555">'
                   f"{escape(label)}</text>")
    return out


def bar_chart(categories: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], *,
              y_label: str, title: str, width: int = 520, height: int = 300,
              y_range: tuple[float, float] | None = None, annotations: Sequence[Sequence[str]] | None = None,
              x_label: str = "") -> str:
    """Grouped bars: one group per category, one bar per series; ``annotations`` print over bars."""
    values = [v for _, vs in series for v in vs if v is not None]
    y_lo, y_hi = y_range or _range(values, include_zero=True)
    y_ticks = nice_ticks(y_lo, y_hi)
    if not y_range:
        y_lo, y_hi = min(y_ticks[0], y_lo), max(y_ticks[-1], y_hi)
    frame = Frame(width, height, -0.5, len(categories) - 0.5, y_lo, y_hi)
    if len(series) > 1:
        frame.top = _legend_top([s[0] for s in series], width)
    out = _open(width, height, title)
    out += _axes(frame, None, y_ticks, x_label, y_label,
                 x_tick_labels=[(float(i), c) for i, c in enumerate(categories)])
    group = 0.8 / max(len(series), 1)
    zero = frame.y(max(y_lo, min(0.0, y_hi)))
    for s, (label, vs) in enumerate(series):
        for i, v in enumerate(vs):
            if v is None or not math.isfinite(v):
                continue
            x_left = frame.x(i - 0.4 + s * group)
            bar_w = frame.x(i - 0.4 + (s + 1) * group) - x_left - 1
            top = min(frame.y(v), zero)
            h = max(abs(frame.y(v) - zero), 0.5)
            out.append(f'<rect data-mark="bar" x="{x_left:.1f}" y="{top:.1f}" width="{max(bar_w, 1):.1f}" '
                       f'height="{h:.1f}" fill="{colour(s)}"><title>{escape(label)} · '
                       f'{escape(categories[i])}: {v:.4f}</title></rect>')
            note = annotations[s][i] if annotations else ""
            if note:
                out.append(f'<text x="{x_left + bar_w / 2:.1f}" y="{top - 3:.1f}" text-anchor="middle" '
                           f'fill="#222" font-size="13" font-weight="bold">{escape(note)}</text>')
    if len(series) > 1:
        out += _legend([s[0] for s in series], frame, [colour(i) for i in range(len(series))])
    out.append("</svg>")
    return "".join(out)


def delta_bars(labels: Sequence[str], deltas: Sequence[float], *, y_label: str, title: str,
               width: int = 520, height: int = 260) -> str:
    """One bar per query, sorted by the caller: green above zero (better), red below (worse)."""
    lo, hi = _range(list(deltas), include_zero=True)
    bound = max(abs(lo), abs(hi), 1e-6)
    y_ticks = nice_ticks(-bound, bound)
    frame = Frame(width, height, -0.5, max(len(deltas), 1) - 0.5, y_ticks[0], y_ticks[-1])
    out = _open(width, height, title)
    out += _axes(frame, None, y_ticks, f"queries (n={len(deltas)}), sorted by delta", y_label,
                 x_tick_labels=[])
    zero = frame.y(0.0)
    bar_w = max((frame.width - frame.left - frame.right) / max(len(deltas), 1) - 1, 1)
    for i, (label, d) in enumerate(zip(labels, deltas, strict=True)):
        fill = POSITIVE if d > 0 else NEGATIVE if d < 0 else NEUTRAL
        top = min(frame.y(d), zero)
        h = max(abs(frame.y(d) - zero), 1.0)
        out.append(f'<rect data-mark="bar" x="{frame.x(i) - bar_w / 2:.1f}" y="{top:.1f}" '
                   f'width="{bar_w:.1f}" height="{h:.1f}" fill="{fill}">'
                   f'<title>query {escape(label)}: {d:+.4f}</title></rect>')
    out.append(f'<line x1="{frame.left}" x2="{frame.width - frame.right}" y1="{zero:.1f}" y2="{zero:.1f}" '
               f'stroke="#222"/>')
    out.append("</svg>")
    return "".join(out)


def reliability_diagram(bins: Sequence[tuple[float, float, float, float | None]], *, title: str,
                        width: int = 360, height: int = 320) -> str:
    """Observed relevance rate per confidence bin against the diagonal of perfect calibration.

    ``bins`` are (low, high, observed rate, mean confidence or None); bar width spans the bin.
    """
    frame = Frame(width, height, 0.0, 1.0, 0.0, 1.0)
    ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    out = _open(width, height, title)
    out += _axes(frame, ticks, ticks, "predicted probability", "observed relevance rate")
    for low, high, observed, confidence in bins:
        if observed is None or not math.isfinite(observed):
            continue
        x_left, x_right = frame.x(low), frame.x(high)
        top = frame.y(observed)
        out.append(f'<rect data-mark="bar" x="{x_left + 0.5:.1f}" y="{top:.1f}" '
                   f'width="{max(x_right - x_left - 1, 1):.1f}" height="{max(frame.y(0) - top, 0.5):.1f}" '
                   f'fill="{PALETTE[0]}" fill-opacity="0.75"><title>[{low:.2f}, {high:.2f}): observed '
                   f'{observed:.3f}'
                   + (f", mean predicted {confidence:.3f}" if confidence is not None else "")
                   + "</title></rect>")
        if confidence is not None and math.isfinite(confidence):
            out.append(f'<circle data-mark="point" cx="{frame.x(confidence):.1f}" '
                       f'cy="{frame.y(observed):.1f}" r="3" fill="{PALETTE[3]}">'
                       f'<title>mean predicted {confidence:.3f}</title></circle>')
    out.append(f'<line x1="{frame.x(0):.1f}" y1="{frame.y(0):.1f}" x2="{frame.x(1):.1f}" '
               f'y2="{frame.y(1):.1f}" stroke="#444" stroke-dasharray="4 3"/>')
    out.append("</svg>")
    return "".join(out)


__all__ = ["PALETTE", "Frame", "bar_chart", "colour", "delta_bars", "line_chart", "nice_ticks", "reliability_diagram"]
