"""The HTML report: typed inputs, significance, self-containment (no browser here).

Every JSON the report reads names its kind and version and is read field by field (issue 12, defect 9):
calibrate's own output and artifact are drawn by ``report --trust``, throughput bars carry the rows'
names, and anything else is refused with the file and the field (defect 10: the robustness error names
the file; the invalid-JSON message has no "at at")."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surerank.errors import InputError
from surerank.eval.datasets import data_root
from surerank.report import RunSpec, build_report, paired_p_value, svg

DATA = data_root() / "trec-dl"
unit = st.floats(0.0, 1.0, allow_nan=False)
points = st.lists(st.tuples(unit, unit), min_size=1, max_size=30, unique_by=lambda p: p[0])


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


def test_paired_p_value_on_paired_queries_only() -> None:
    a = {"1": 0.9, "2": 0.8, "3": 0.85, "4": 0.95, "x": 0.0}
    b = {"1": 0.1, "2": 0.2, "3": 0.15, "4": 0.12, "y": 1.0}
    p, n = paired_p_value(a, b)
    assert n == 4 and p is not None and p < 0.01
    assert paired_p_value(a, a)[0] == 1.0
    assert paired_p_value({"1": 1.0}, {"1": 0.0}) == (None, 1)


def test_run_spec_parsing() -> None:
    assert RunSpec.parse("dl19:bm25=a/b.run").dataset == "dl19"
    assert RunSpec.parse("bm25=x.run").dataset == "default"
    with pytest.raises(InputError, match="DATASET:RANKER=PATH"):
        RunSpec.parse("dl19:bm25")


def test_report_is_self_contained_and_sections_are_optional() -> None:
    from surerank.report import ThroughputTable, TrustFigures

    record = {"aggregate": {"nDCG@10": 0.5}, "per_query": {str(i): {"nDCG@10": i / 10} for i in range(10)}}
    better = {"aggregate": {"nDCG@10": 0.6},
              "per_query": {str(i): {"nDCG@10": i / 10 + 0.1 + 0.02 * (i % 3)} for i in range(10)}}
    html = build_report(evaluation={"d": {"bm25": record, "dense": better}},
                        throughput=[ThroughputTable(rows=[{"name": "dense", "pairs_per_s": 150.0}])])
    assert re.findall(r"https?://[^\"' ]+", html) == ["http://www.w3.org/2000/svg"] * html.count("<svg")
    assert "<link" not in html and "src=" not in html
    assert 'data-section="effectiveness"' in html and 'data-section="throughput"' in html
    assert 'data-section="reliability"' not in html and 'data-section="robustness"' not in html
    assert "▲" in html  # +0.1..0.14 on every query is significant
    with pytest.raises(InputError, match="nothing to report"):
        build_report()
    assert 'data-section="reliability"' not in build_report(trust=TrustFigures(), throughput=[
        ThroughputTable(rows=[{"name": "x", "pairs_per_s": 1.0}])])


# --------------------------------------------------------------------------------------------------
# typed documents
# --------------------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(pts=points)
def test_trust_figures_round_trip(pts: list[tuple[float, float]]) -> None:
    from surerank.report import TrustFigures

    figures = TrustFigures()
    figures.add_curve("u_lin", "nDCG@10", [x for x, _ in pts], [y for _, y in pts])
    figures.add_bins("platt", [{"low": 0.0, "high": 0.5, "observed": 0.2, "confidence": 0.25, "count": 4},
                               {"low": 0.5, "high": 1.0, "observed": 0.9, "confidence": 0.8, "count": 0}],
                     {"ece": 0.05})
    figures.add_rows("crc", [{"alpha": 0.1, "kept": 30.5, "method": "crc"}], x="alpha")
    again = TrustFigures.from_dict(json.loads(json.dumps(figures.to_dict())))
    assert again.risk_coverage == {"u_lin": sorted(pts)} and again.curve_measures == {"u_lin": "nDCG@10"}
    assert again.reliability == {"platt": ([(0.0, 0.5, 0.2, 0.25)], {"ece": 0.05})}  # the empty bin is not drawn
    assert again.cutoffs == figures.cutoffs and again.cutoff_x == {"crc": "alpha"}


@pytest.mark.parametrize(("edit", "field"), [
    (lambda d: d["reliability"]["platt"]["bins"][0].pop("observed"), "reliability.platt.bins[0].observed"),
    (lambda d: d["risk_coverage"]["u"].update(values=[0.5]), "risk_coverage.u.values"),
    (lambda d: d["risk_coverage"]["u"].pop("measure"), "risk_coverage.u.measure"),
    (lambda d: d["cutoffs"]["c"]["rows"][0].pop("alpha"), "cutoffs.c.rows[0].alpha"),
    (lambda d: d.update(version=2), "version"),
])
def test_trust_figures_name_the_bad_field(edit, field) -> None:
    from surerank.report import TrustFigures

    doc = {"kind": "surerank.trust-figures", "version": 1,
           "reliability": {"platt": {"bins": [{"low": 0, "high": 1, "observed": 0.3, "confidence": 0.2}]}},
           "risk_coverage": {"u": {"measure": "nDCG@10", "coverage": [0.5, 1.0], "values": [0.7, 0.6]}},
           "cutoffs": {"c": {"x": "alpha", "rows": [{"alpha": 0.1, "kept": 3}]}}}
    TrustFigures.from_dict(json.loads(json.dumps(doc)))
    edit(doc)
    with pytest.raises(InputError, match=re.escape(f"'{field}'")):
        TrustFigures.from_dict(doc, where="t.json")


def test_trust_parts_of_eval_json_are_read() -> None:
    from surerank.report import figures_from_eval
    from surerank.trust.calibration_metrics import reliability_bins

    bins = reliability_bins([0.05, 0.1, 0.9, 0.95], [0, 0, 1, 1], n_bins=10)  # empty bins are left out
    trust = {"calibration": {"ece": 0.07, "brier": 0.01, "reliability": bins},
             "cutoff": {"mean_kept": 3.5, "precision": 0.6, "recall_of_judged": float("nan")},
             "abstention": {"risk_coverage": {"measure": "nDCG@10", "coverage": [0.5, 1.0], "values": [0.7, 0.6]}}}
    doc = {"kind": "surerank.eval", "version": 1, "qrels": "qrels.dl19-passage.txt", "runs": {
        "runs/embedding.jsonl": {"aggregate": {"nDCG@10": 0.6}, "per_query": {"1": {"nDCG@10": 0.6}},
                                 "queries": 1, "trust": trust}}}
    figures = figures_from_eval(json.loads(json.dumps(doc)), "eval.json")
    [(label, (drawn, extras))] = figures.reliability.items()
    assert label == "dl19-passage / embedding / calibration" and extras["ece"] == 0.07
    assert [b[:2] for b in drawn] == [(0.0, 0.1), (0.1, 0.2), (0.9, 1.0)]
    assert figures.curve_measures["dl19-passage / embedding / abstention"] == "nDCG@10"
    assert figures.cutoffs["what the cutoffs kept"] == [
        {"run": "dl19-passage / embedding", "mean_kept": 3.5, "precision": 0.6, "recall_of_judged": None}]


def test_benchmark_writers_write_what_the_report_reads() -> None:
    """benchmarks/trust_dl.py's --json document (built from its sections' figures) is read back as is."""
    import importlib.util

    from surerank.report import TrustFigures
    from surerank.trust.calibration_metrics import reliability_bins

    spec = importlib.util.spec_from_file_location("trust_dl", Path(__file__).parents[1] / "benchmarks" / "trust_dl.py")
    trust_dl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trust_dl)
    parts = {"calibration": {"reliability": {"DL20->DL19 platt": {
                 "bins": reliability_bins([0.1, 0.8], [0, 1]), "ece": 0.1, "brier": 0.05}}},
             "abstention": {"risk_coverage": {"max": {"coverage": [0.5, 1.0], "nDCG@10": [0.7, 0.6]}},
                            "nauc": {"max": 0.36}},
             "conformal": {"rows": [{"method": "CRC top-k", "alpha": 0.1, "mean_miss": 0.08,
                                     "share_over_alpha_test": None}]},
             "adaptive": {"rows": [{"dataset": "DL19", "cutoff": "gap", "mean_k": 12.0}]}}
    document = trust_dl.trust_figures(parts, "bm25")
    figures = TrustFigures.from_dict(json.loads(json.dumps(document, allow_nan=False)))
    assert list(figures.reliability) == ["DL20->DL19 platt"] and len(figures.risk_coverage) == 1
    assert figures.cutoff_x == {"conformal cutoffs over random splits": "alpha",
                                "adaptive cutoffs beside fixed k": None}
    html = build_report(trust=figures)
    assert 'data-plot="cutoffs-0"' in html and 'data-plot="risk-coverage"' in html


def _write(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize(("option", "document", "field"), [
    ("--trust", {"dl20": {"reliability": {"bins": [{"accuracy": 0.5, "confidence": 0.5}]}}}, "kind"),
    ("--trust", {"kind": "surerank.throughput", "version": 1, "rows": []}, "kind"),
    ("--throughput", [{"name": "dense", "pairs_per_s": 3.0}], "kind"),
    ("--throughput", {"kind": "surerank.throughput", "version": 1,
                      "rows": [{"contender": "dense", "pairs_per_s": 3.0}]}, "rows[0].name"),
    ("--throughput", {"kind": "surerank.throughput", "version": 1, "rate": "qps",
                      "rows": [{"name": "dense", "pairs_per_s": 3.0}]}, "rows[0].qps"),
    ("--robustness", {"ranker": "bm25"}, "schema"),
    ("--robustness", {"schema": "surerank.robustness/1", "ranker": "bm25", "clean": {"nDCG@10": 0.5},
                      "order": {"kendall_tau_mean": 0.9}}, "order.top1_flip_rate"),
    ("--eval-json", {"dl19": {"bm25": {"aggregate": {"nDCG@10": 0.5}}}}, "kind"),
    ("--eval-json", {"kind": "surerank.eval", "version": 1, "runs": {"a.run": {"aggregate": {"nDCG@10": 0.5}}}},
     "runs.a.run.per_query"),
])
def test_report_refuses_other_json_naming_file_and_field(tmp_path, capsys, option, document, field) -> None:
    from surerank.cli import main

    path = _write(tmp_path, "input.json", document)
    html = tmp_path / "r.html"
    assert main(["report", option, str(path), "--output", str(html)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and f"'{field}'" in err, err
    assert not html.exists()


def test_throughput_bars_carry_the_row_names(tmp_path) -> None:
    from surerank.cli import main

    rows = [{"name": "surerank int8", "pairs_per_s": 300.0, "peak_mb": 410.0},
            {"name": "sentence-transformers", "pairs_per_s": 75.0, "peak_mb": None}]
    path = _write(tmp_path, "throughput.json", {"kind": "surerank.throughput", "version": 1, "rows": rows})
    html = tmp_path / "r.html"
    assert main(["report", "--throughput", str(path), "--output", str(html)]) == 0
    figure = html.read_text().split('data-plot="throughput"')[1].split("</figure>")[0]
    assert "surerank int8" in figure and "sentence-transformers" in figure


def test_invalid_json_is_refused_with_file_and_position(tmp_path, capsys) -> None:
    from surerank.cli import main

    path = _write(tmp_path, "broken.json", '{"kind": "surerank.eval", "qrels": "q')
    assert main(["report", "--eval-json", str(path), "--output", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: not valid JSON (Unterminated string starting at line 1, column 36)" in err, err
    assert "at at" not in err


@pytest.mark.skipif(not DATA.exists(), reason="TREC DL data not present")
def test_calibrate_output_and_artifact_are_drawn_by_report(tmp_path, capsys) -> None:
    """`surerank calibrate`'s printed summary and its artifact are both accepted by `report --trust`."""
    from surerank.cli import main
    from surerank.formats import read_rankgpt_json

    rows = [{"qid": q.id, "query": q.text, "candidates": [{"id": c.id, "text": c.text} for c in q.candidates[:30]]}
            for q in read_rankgpt_json(DATA / "dl20-bm25-top100.json")[:12]]
    queries = _write(tmp_path, "dl20.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    artifact = tmp_path / "bm25.trust.json"
    assert main(["calibrate", "--input", str(queries), "--ranker", "bm25", "--qrels",
                 str(DATA / "qrels.dl20-passage.txt"), "--abstain", "max", "--cutoff-alpha", "0.3",
                 "--output", str(artifact)]) == 0
    summary = _write(tmp_path, "calibrate-summary.json", capsys.readouterr().out)
    for source in (summary, artifact):
        html = tmp_path / f"{source.stem}.html"
        assert main(["report", "--trust", str(source), "--output", str(html)]) == 0, capsys.readouterr().err
        text = html.read_text()
        for section in ("risk-coverage", "reliability", "cutoffs"):
            assert f'data-section="{section}"' in text, (source.name, section)
        assert "platt (in-sample)" in text and "max (in-sample)" in text


def test_report_from_eval_json(tmp_path, capsys) -> None:
    from surerank.cli import main
    from surerank.eval.datasets import load_trec_dl, trec_dl_paths
    from surerank.formats import write_run
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
