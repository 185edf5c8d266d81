"""The report's hand-written SVG charts: every tick drawn lies on its axis (issue 12, item 10)."""

from __future__ import annotations

import re

import pytest

from surerank.report import svg


def _x_tick_positions(chart: str) -> list[tuple[float, str]]:
    """(x pixel, label) of each x tick: the labels printed under the x axis."""
    return [(float(x), label) for x, label in
            re.findall(r'<text x="([\d.]+)" y="\d+" text-anchor="middle" fill="#444">([^<]*)</text>', chart)]


def _y_tick_labels(chart: str) -> list[str]:
    return re.findall(r'text-anchor="end" fill="#444">([^<]*)</text>', chart)


@pytest.mark.parametrize("positions", [list(range(1, 11)), list(range(1, 6)), [3, 4, 5, 6, 7, 8, 9]])
def test_position_plot_draws_no_tick_outside_its_x_axis(positions) -> None:
    # the position chart: x from 1 to N; nice_ticks(1, 10) starts at 0, which used to be drawn left of the axis
    chart = svg.line_chart([("ranker", positions, [0.5] * len(positions))], x_label="position",
                           y_label="top-1 accuracy", title="position bias", y_range=(0.0, 1.0))
    frame = svg.Frame(520, 300, positions[0], positions[-1], 0.0, 1.0)
    ticks = _x_tick_positions(chart)
    assert ticks, "the x axis has ticks"
    for x, label in ticks:
        assert frame.left - 1e-6 <= x <= frame.width - frame.right + 1e-6, (label, x)
        assert positions[0] <= float(label) <= positions[-1], label


def test_y_ticks_outside_a_given_range_are_not_drawn() -> None:
    chart = svg.line_chart([("a", [0, 1, 2], [0.42, 0.47, 0.55])], x_label="x", y_label="y", title="t",
                           y_range=(0.33, 0.61))  # ticks every 0.1: 0.3 and 0.7 fall outside
    labels = [float(t) for t in _y_tick_labels(chart)]
    assert labels == [0.4, 0.5, 0.6]
