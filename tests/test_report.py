"""The HTML report: input normalisers, significance, self-containment (no browser here)."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surerank.errors import InputError
from surerank.eval import report_svg as svg
from surerank.eval.report import (
    RunSpec,
    build_report,
    collect_trust,
    curve_measure,
    curve_points,
    evaluation_from_json,
    paired_p_value,
    reliability_bins,
    throughput_rows,
)

unit = st.floats(0.0, 1.0, allow_nan=False)
points = st.lists(st.tuples(unit, unit), min_size=1, max_size=30)


@settings(max_examples=100, deadline=None)
@given(pts=points)
def test_every_curve_shape_gives_the_same_points(pts: list[tuple[float, float]]) -> None:
    expected = sorted(pts)
    as_dicts = [{"coverage": x, "risk": y} for x, y in pts]
    as_arrays = {"coverage": [x for x, _ in pts], "risk": [y for _, y in pts]}
    as_pairs = [list(p) for p in pts]
    nested = {"points": as_dicts}
    for shape in (as_dicts, as_arrays, as_pairs, nested):
        assert curve_points(shape) == expected
    assert curve_measure(as_dicts) == "risk"
    assert curve_measure({"coverage": [1.0], "quality": [0.5]}) == "quality"


@settings(max_examples=100, deadline=None)
@given(low=st.floats(-1e6, 1e6), span=st.floats(1e-6, 1e6))
def test_ticks_cover_the_range_in_even_steps(low: float, span: float) -> None:
    high = low + span
    ticks = svg.nice_ticks(low, high)
    assert ticks[0] <= low and ticks[-1] >= high
    steps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) >= 2 and all(s > 0 for s in steps)
    assert max(steps) - min(steps) <= 1e-6 * max(steps) + 1e-9 * max(1.0, abs(low), abs(high))
    assert len(ticks) <= 12


def test_reliability_bins_from_rows_and_from_arrays() -> None:
    rows = [{"low": 0.0, "high": 0.5, "accuracy": 0.2, "confidence": 0.25, "count": 4},
            {"low": 0.5, "high": 1.0, "accuracy": 0.7, "confidence": 0.8, "count": 0}]
    bins, extras = reliability_bins({"bins": rows, "ece": 0.05})
    assert bins == [(0.0, 0.5, 0.2, 0.25)]  # an empty bin is not drawn
    assert extras == {"ece": 0.05}
    bins, _ = reliability_bins({"observed": [0.1, 0.4, 0.9], "mean_predicted": [0.2, 0.5, 0.8]})
    assert [round(b[1], 4) for b in bins] == [0.3333, 0.6667, 1.0]
    assert reliability_bins({"nothing": 1}) is None


def test_trust_entries_are_found_at_any_depth() -> None:
    bins = [{"accuracy": 0.5, "confidence": 0.5}]
    doc = {"dl20": {"calibration": {"reliability": {"platt": {"bins": bins}}},
                    "abstention": {"risk_coverage": {"max": [[0.5, 0.2], [1.0, 0.3]]}},
                    "cutoffs": [{"target": 0.1, "recall": 0.9}]}}
    figures = collect_trust([("trust", doc)])
    assert list(figures.reliability) == ["dl20 / calibration / platt"]
    assert figures.risk_coverage["dl20 / abstention / max"] == [(0.5, 0.2), (1.0, 0.3)]
    assert figures.cutoffs["dl20"] == [{"target": 0.1, "recall": 0.9}]


def test_paired_p_value_on_paired_queries_only() -> None:
    a = {"1": 0.9, "2": 0.8, "3": 0.85, "4": 0.95, "x": 0.0}
    b = {"1": 0.1, "2": 0.2, "3": 0.15, "4": 0.12, "y": 1.0}
    p, n = paired_p_value(a, b)
    assert n == 4 and p is not None and p < 0.01
    assert paired_p_value(a, a)[0] == 1.0
    assert paired_p_value({"1": 1.0}, {"1": 0.0}) == (None, 1)


def test_evaluation_json_shapes() -> None:
    record = {"aggregate": {"nDCG@10": 0.5}, "per_query": {"1": {"nDCG@10": 0.4}, "2": {"nDCG@10": 0.6}}}
    nested = evaluation_from_json({"dl19": {"bm25": record}})
    listed = evaluation_from_json([{**record, "dataset": "dl19", "ranker": "bm25"}])
    assert nested["dl19"]["bm25"]["per_query"] == listed["dl19"]["bm25"]["per_query"]
    derived = evaluation_from_json({"dataset": "d", "ranker": "r", "per_query": record["per_query"]})
    assert derived["d"]["r"]["aggregate"]["nDCG@10"] == pytest.approx(0.5)
    with pytest.raises(InputError, match=r"evaluation\['dl19'\]"):
        evaluation_from_json({"dl19": 3})


def test_run_spec_parsing() -> None:
    assert RunSpec.parse("dl19:bm25=a/b.run").dataset == "dl19"
    assert RunSpec.parse("bm25=x.run").dataset == "default"
    with pytest.raises(InputError, match="DATASET:RANKER=PATH"):
        RunSpec.parse("dl19:bm25")


def test_throughput_rows_shapes() -> None:
    assert throughput_rows([("t", {"onnx": {"pairs_per_s": 3.0}})]) == [{"name": "onnx", "pairs_per_s": 3.0}]
    assert throughput_rows([("t", {"rows": [{"a": 1}]})]) == [{"a": 1}]
    with pytest.raises(InputError, match="throughput JSON"):
        throughput_rows([("t", 5)])


def test_report_is_self_contained_and_sections_are_optional() -> None:
    record = {"aggregate": {"nDCG@10": 0.5}, "per_query": {str(i): {"nDCG@10": i / 10} for i in range(10)}}
    better = {"aggregate": {"nDCG@10": 0.6},
              "per_query": {str(i): {"nDCG@10": i / 10 + 0.1 + 0.02 * (i % 3)} for i in range(10)}}
    html = build_report(evaluation={"d": {"bm25": record, "dense": better}},
                        throughput=[("t", [{"name": "dense", "pairs_per_s": 150.0}])])
    assert re.findall(r"https?://[^\"' ]+", html) == ["http://www.w3.org/2000/svg"] * html.count("<svg")
    assert "<link" not in html and "src=" not in html
    assert 'data-section="effectiveness"' in html and 'data-section="throughput"' in html
    assert 'data-section="reliability"' not in html and 'data-section="robustness"' not in html
    assert "▲" in html  # +0.1..0.14 on every query is significant
    with pytest.raises(InputError, match="nothing to report"):
        build_report()
    with pytest.raises(InputError, match="found no risk_coverage"):
        build_report(trust=[("t", {"something": 1})])


def test_trust_parts_of_eval_json_are_read() -> None:
    from surerank.trust.metrics import reliability_bins as trust_bins

    bins = trust_bins([0.05, 0.1, 0.9, 0.95], [0, 0, 1, 1], n_bins=10)  # empty bins have count 0
    trust = {"calibration": {"ece": 0.07, "brier": 0.01, "reliability": bins},
             "cutoff": {"mean_kept": 3.5, "precision": 0.6},
             "abstention": {"risk_coverage": {"coverage": [0.5, 1.0], "quality": [0.7, 0.6]}}}
    figures = collect_trust([("eval", {"dl19": {"embedding": trust}})])
    [(label, (drawn, extras))] = figures.reliability.items()
    assert label == "dl19 / embedding / calibration" and extras["ece"] == 0.07
    assert [b[:2] for b in drawn] == [(0.0, 0.1), (0.1, 0.2), (0.9, 1.0)]  # empty bins are not drawn
    assert figures.curve_measures["dl19 / embedding / abstention"] == "quality"
    assert figures.cutoffs["what the cutoffs kept"] == [
        {"run": "dl19 / embedding", "mean_kept": 3.5, "precision": 0.6}]


def test_report_from_eval_json(tmp_path, capsys) -> None:
    from surerank.cli import main
    from surerank.eval.datasets import load_trec_dl, trec_dl_paths
    from surerank.eval.formats import write_run
    from surerank.registry import create

    queries, _ = load_trec_dl(19)
    runs = []
    for name in ("first-stage", "bm25"):
        path = tmp_path / f"{name}.run"
        write_run(path, create(name).rank_many(queries[:6]), tag=name)
        runs.append(str(path))
    qrels = str(trec_dl_paths(19)[1])
    out = tmp_path / "eval.json"
    assert main(["eval", "--run", runs[1], "--baseline", runs[0], "--qrels", qrels, "--json", str(out)]) == 0
    html = tmp_path / "r.html"
    assert main(["report", "--eval-json", f"dl19={out}", "--output", str(html)]) == 0
    text = html.read_text()
    assert 'data-plot="effectiveness"' in text and 'data-plot="deltas-dl19-bm25"' in text
    assert "first-stage <span class=\"base\">(baseline)</span>" in text
    assert "wrote" in capsys.readouterr().out
