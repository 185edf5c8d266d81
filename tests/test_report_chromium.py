"""A report built from TREC DL 2019 and 2020 runs, opened in headless Chromium.

The runs are real: the ``bm25`` ranker and a ``fusion`` of bm25 with the first-stage order, over a slice
of each collection.  The trust section comes from ``surerank.trust`` (Platt probabilities fitted on DL19,
read on DL20); robustness from ``surerank.robustness``; throughput from timing the two rankers.
Chromium loads the file offline, runs its check script, and the test reads the resulting DOM: every
section present, every plot laid out with its marks.  A screenshot PNG is written
(to ``$SURERANK_REPORT_SCREENSHOT`` when set, else into the test's temporary folder).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless Chromium is not installed (/usr/bin/chromium): apt-get install -y chromium",
)

N_QUERIES = 10
DEPTH = 30
SECTIONS = ["effectiveness", "per-query", "risk-coverage", "reliability", "cutoffs", "robustness", "throughput"]
PLOTS = ["effectiveness", "deltas-dl19-fusion", "deltas-dl20-fusion", "risk-coverage", "reliability-0",
         "cutoffs-0", "robust-order-dl19", "robust-position-dl19", "robust-typos-dl19", "robust-trap-dl19",
         "robust-depth-dl19", "throughput"]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio"]


def slice_of(year: int):
    from surerank.eval.datasets import load_trec_dl
    from surerank.types import Query

    queries, qrels = load_trec_dl(year)
    return [Query(text=q.text, candidates=q.candidates[:DEPTH], id=q.id, metadata=q.metadata)
            for q in queries[:N_QUERIES]], qrels


def reliability_from(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict:
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probabilities, edges) - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(mask.sum()),
                         "observed": float(labels[mask].mean()), "confidence": float(probabilities[mask].mean())})
    return {"bins": rows}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from surerank.eval.metrics import evaluate
    from surerank.formats import write_run
    from surerank.registry import create
    from surerank.robustness import RobustnessConfig, run_robustness
    from surerank.trust import coverage_curve, fit_calibrator

    folder = tmp_path_factory.mktemp("report")
    rankers = {"bm25": create("bm25"), "fusion": create("fusion", rankers=["bm25", "first-stage"])}
    runs, timings, lists_by = [], [], {}
    for year in (19, 20):
        queries, qrels = slice_of(year)
        for name, ranker in rankers.items():
            start = time.perf_counter()
            lists = ranker.rank_many(queries)
            seconds = time.perf_counter() - start
            path = folder / f"dl{year}-{name}.run"
            write_run(path, lists, tag=name)
            runs += ["--run", f"dl{year}:{name}={path}"]
            lists_by[(year, name)] = (lists, qrels)
            pairs = sum(len(q.candidates) for q in queries)
            timings.append({"name": f"{name} dl{year}", "pairs": pairs,
                            "pairs_per_s": round(pairs / max(seconds, 1e-9), 1)})

    def pairs(lists, qrels):
        scores, labels = [], []
        for ranked in lists:
            for item in ranked:
                scores.append(item.score)
                labels.append(float(qrels[ranked.query.id].get(item.id, 0) >= 2))
        return np.array(scores), np.array(labels)

    train_lists, train_qrels = lists_by[(19, "bm25")]
    calibrator = fit_calibrator("platt", *pairs(train_lists, train_qrels))
    test_lists, test_qrels = lists_by[(20, "bm25")]
    scores, labels = pairs(test_lists, test_qrels)
    probabilities = np.asarray(calibrator.predict(scores), dtype=float)
    run = {r.query.id: {i.id: i.score for i in r} for r in test_lists}
    ndcg = evaluate(run, {q: test_qrels[q] for q in run}, ["nDCG@10"])
    quality = np.array([ndcg.per_query[r.query.id]["nDCG@10"] for r in test_lists])
    top = np.array([float(calibrator.predict([r[0].score])[0]) for r in test_lists])
    coverage, mean_quality = coverage_curve(top, quality)
    cutoffs = []
    for threshold in (0.1, 0.2, 0.3, 0.5, 0.7):
        kept = probabilities >= threshold
        cutoffs.append({"threshold": threshold, "kept_fraction": float(kept.mean()),
                        "precision": float(labels[kept].mean()) if kept.any() else 0.0,
                        "recall": float(labels[kept].sum() / max(labels.sum(), 1.0))})
    trust = {"kind": "surerank.trust-figures", "version": 1,
             "reliability": {"dl20: bm25 platt (fit dl19)": reliability_from(probabilities, labels)},
             "risk_coverage": {"dl20: top-1 probability": {"measure": "nDCG@10", "coverage": coverage.tolist(),
                                                           "values": mean_quality.tolist()}},
             "cutoffs": {"dl20": {"x": "threshold", "rows": cutoffs}}}
    (folder / "trust.json").write_text(json.dumps(trust))

    queries, qrels = slice_of(19)
    config = RobustnessConfig(shuffles=2, typo_seeds=(0,), depths=(10, 20, 30), position_list_size=5)
    robustness = []
    for name, ranker in rankers.items():
        path = folder / f"robustness-{name}.json"
        result = run_robustness(ranker, queries, qrels, config, dataset="dl19")
        result.ranker = name
        path.write_text(json.dumps(result.to_dict()))
        robustness += ["--robustness", str(path)]
    (folder / "throughput.json").write_text(json.dumps({"kind": "surerank.throughput", "version": 1,
                                                       "rows": timings}))
    return {"folder": folder, "runs": runs, "robustness": robustness}


class DomReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str] = {}
        self.sections: list[str] = []
        self.figures: dict[str, dict[str, str]] = {}
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body = a
        elif tag == "section":
            self.sections.append(a.get("data-section", ""))
        elif tag == "figure" and "data-plot" in a:
            self.figures[a["data-plot"]] = a
        for key in ("src", "href"):
            if a.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(a[key])


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180, check=False)


def test_report_renders_every_section_and_plot(inputs: dict, tmp_path: Path) -> None:
    from surerank.cli import main

    folder = inputs["folder"]
    html = folder / "report.html"
    code = main(["report", "--output", str(html), "--title", "surerank on TREC DL 2019 and 2020",
                 "--qrels", "dl19", "--qrels", "dl20", *inputs["runs"], "--baseline", "bm25",
                 "--trust", str(folder / "trust.json"), *inputs["robustness"],
                 "--throughput", str(folder / "throughput.json")])
    assert code == 0 and html.exists()

    dump = chromium("--dump-dom", html.as_uri(), profile=tmp_path / "profile")
    assert dump.returncode == 0, dump.stderr[-2000:]
    dom = DomReader()
    dom.feed(dump.stdout)
    assert dom.sections == SECTIONS
    assert dom.external == []
    assert sorted(dom.figures) == sorted(PLOTS)
    for name, figure in dom.figures.items():
        assert figure.get("data-rendered") == "ok", (name, figure)
        assert int(figure["data-marks"]) >= 2, name
    assert dom.body["data-plots-ok"] == dom.body["data-plots-total"] == str(len(PLOTS))
    # per-query delta plots carry one bar per evaluated query
    assert int(dom.figures["deltas-dl19-fusion"]["data-marks"]) == N_QUERIES

    shot = Path(os.environ.get("SURERANK_REPORT_SCREENSHOT") or tmp_path / "report.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    done = chromium(f"--screenshot={shot}", "--window-size=1200,3000", html.as_uri(),
                    profile=tmp_path / "profile-shot")
    assert done.returncode == 0, done.stderr[-2000:]
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (1200, 3000)
