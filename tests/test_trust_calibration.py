"""Calibration maps and metrics: monotone maps, known-answer metrics, artifact round trip, real DL data."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surerank.errors import InputError
from surerank.eval.datasets import data_root
from surerank.trust import TrustArtifact, calibration_report, fit_trust
from surerank.trust.calibration import CALIBRATORS, fit_calibrator
from surerank.trust.calibration_metrics import brier_score, expected_calibration_error, log_loss
from surerank.trust.labels import calibration_pairs, label_lists, ndcg_from_qrels
from surerank.types import Candidate, Query, RankedList

DATA = data_root() / "trec-dl"  # $SURERANK_DATA, else ../shared/data

scores_st = st.lists(st.floats(-50, 50, allow_nan=False), min_size=4, max_size=60)


@st.composite
def labelled_scores(draw):
    s = draw(scores_st)
    y = draw(st.lists(st.integers(0, 1), min_size=len(s), max_size=len(s)))
    if min(y) == max(y):  # a map needs both classes
        y[0] = 1 - y[0]
    return np.array(s), np.array(y, dtype=float)


@settings(max_examples=60, deadline=None)
@given(labelled_scores(), st.lists(st.floats(-100, 100, allow_nan=False), min_size=2, max_size=30))
def test_every_map_is_monotone_and_in_unit_interval(data, probe):
    s, y = data
    probe = np.sort(np.array(probe))
    for method in CALIBRATORS:
        p = fit_calibrator(method, s, y).predict(probe)
        assert np.all((p >= 0) & (p <= 1))
        assert np.all(np.diff(p) >= -1e-12), method


@settings(max_examples=60, deadline=None)
@given(labelled_scores())
def test_isotonic_preserves_base_rate_and_beats_constant(data):
    s, y = data
    p = fit_calibrator("isotonic", s, y).predict(s)
    assert p.mean() == pytest.approx(y.mean(), abs=1e-9)  # PAV keeps the weighted mean
    assert brier_score(p, y) <= brier_score(np.full_like(y, y.mean()), y) + 1e-12


def test_platt_recovers_the_generating_sigmoid():
    rng = np.random.default_rng(1)
    s = rng.normal(size=20000)
    y = (rng.random(s.size) < 1 / (1 + np.exp(-(2.0 * s - 1.0)))).astype(float)
    cal = fit_calibrator("platt", s, y, smooth=False)
    assert cal.a == pytest.approx(2.0, abs=0.1)
    assert cal.b == pytest.approx(-1.0, abs=0.1)
    assert expected_calibration_error(cal.predict(s), y) < 0.02


def test_temperature_recovers_scale_of_logits():
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=3, size=20000)
    y = (rng.random(logits.size) < 1 / (1 + np.exp(-logits))).astype(float)
    cal = fit_calibrator("temperature", 4.0 * logits, y)  # over-confident by a factor 4
    assert cal.temperature == pytest.approx(4.0, rel=0.1)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 1)), min_size=1, max_size=80),
       st.integers(1, 20))
def test_ece_matches_a_plain_loop(pairs, n_bins):
    p = np.array([a for a, _ in pairs])
    y = np.array([b for _, b in pairs], dtype=float)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(p.size) if lo <= p[i] < hi or (b == n_bins - 1 and p[i] == 1.0)]
        if members:
            total += len(members) / p.size * abs(y[members].mean() - p[members].mean())
    assert expected_calibration_error(p, y, n_bins) == pytest.approx(total, abs=1e-9)
    assert 0 <= expected_calibration_error(p, y, n_bins) <= 1


def test_metrics_known_values_and_sklearn_agreement():
    y = np.array([0, 1, 1, 0], dtype=float)
    assert brier_score(y, y) == 0
    assert brier_score(np.full(4, 0.5), y) == pytest.approx(0.25)
    assert log_loss(np.full(4, 0.5), y) == pytest.approx(np.log(2))
    assert expected_calibration_error(y, y) == 0
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    p, lab = rng.random(500), (rng.random(500) < 0.3).astype(float)
    assert brier_score(p, lab) == pytest.approx(sk.brier_score_loss(lab, p))
    assert log_loss(p, lab) == pytest.approx(sk.log_loss(lab, p))


def test_bad_input_names_the_problem():
    with pytest.raises(InputError, match="both relevant and non-relevant"):
        fit_calibrator("platt", [0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(InputError, match="calibration method"):
        fit_calibrator("sigmoid", [0.1, 0.2], [0, 1])
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        brier_score([1.5], [1])


def _toy_lists() -> tuple[list[RankedList], dict[str, dict[str, int]]]:
    rng = np.random.default_rng(4)
    lists, qrels = [], {}
    for q in range(12):
        cands = [Candidate(id=f"d{i}", text=f"doc {i}") for i in range(15)]
        grades = rng.integers(0, 4, size=15)
        scores = grades + rng.normal(scale=1.5, size=15)
        query = Query(text=f"q{q}", candidates=cands, id=f"q{q}")
        lists.append(RankedList.from_scores(query, scores.tolist()))
        qrels[f"q{q}"] = {f"d{i}": int(g) for i, g in enumerate(grades) if i % 5}  # some unjudged
    return lists, qrels


def test_artifact_round_trip_and_ranker_check(tmp_path):
    lists, qrels = _toy_lists()
    art = fit_trust(lists, qrels, {"ranker": "toy", "model": "m1"}, calibration="isotonic",
                    abstention="u_lin", abstain_rate=0.25, cutoff_alpha=0.2)
    path = art.save(tmp_path / "trust.json")
    assert json.loads(path.read_text())["ranker"] == {"ranker": "toy", "model": "m1"}
    loaded = TrustArtifact.load(path)
    loaded.check_ranker({"ranker": "toy", "model": "m1"})
    with pytest.raises(InputError, match="model: fitted 'm1', now 'm2'"):
        loaded.check_ranker({"ranker": "toy", "model": "m2"})
    before = [(r.ids, r.scores) for r in lists]
    art.apply(lists)
    first = [i.probability for r in lists for i in r]
    loaded.apply(lists)
    assert [i.probability for r in lists for i in r] == pytest.approx(first)
    assert [(r.ids, r.scores) for r in lists] == before  # never reorders
    assert all(r.abstain is not None and r.confidence is not None for r in lists)
    assert all(i.keep is not None for r in lists for i in r)
    with pytest.raises(InputError, match="field 'kind'"):
        TrustArtifact.from_dict({"format": "other"})


def test_unjudged_policy_changes_the_pairs():
    lists, qrels = _toy_lists()
    lab = label_lists(lists, qrels)
    s_all, _ = calibration_pairs(lab, unjudged="nonrelevant")
    s_judged, _ = calibration_pairs(lab, unjudged="skip")
    assert s_all.size == 12 * 15 and s_judged.size == 12 * 12


def _load_dl(year: int, limit: int | None = None):
    raw = json.loads((DATA / f"dl{year}-bm25-top100.json").read_text())[:limit]
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for line in (DATA / f"qrels.dl{year}-passage.txt").read_text().splitlines():
        qid, _, doc, grade = line.split()
        qrels[qid][doc] = int(grade)
    lists = []
    for e in raw:
        query = Query(text=e["query"], id=str(e["hits"][0]["qid"]),
                      candidates=[Candidate(id=h["docid"], text="") for h in e["hits"]])
        lists.append(RankedList.from_scores(query, [h["score"] for h in e["hits"]], ranker="bm25"))
    return lists, dict(qrels)


@pytest.mark.skipif(not DATA.exists(), reason="TREC DL data not present")
def test_dl_calibration_keeps_ndcg_and_improves_ece():
    """Fit on DL20 first-stage scores, apply to DL19: same ranking and nDCG@10, far better calibration."""
    fit_lists, fit_qrels = _load_dl(20)
    test_lists, test_qrels = _load_dl(19)
    ndcg_before = [ndcg_from_qrels(r.ids, test_qrels[r.query.id]) for r in test_lists]
    s_test, y_test = calibration_pairs(label_lists(test_lists, test_qrels))
    raw_ece = calibration_report(np.clip(s_test, 0, 1), y_test)["ece"]
    for method in ("platt", "isotonic"):
        art = fit_trust(fit_lists, fit_qrels, {"ranker": "bm25"}, calibration=method)
        art.apply(test_lists)
        assert [ndcg_from_qrels(r.ids, test_qrels[r.query.id]) for r in test_lists] == ndcg_before
        p = np.concatenate([[i.probability for i in r] for r in test_lists if r.query.id in test_qrels])
        assert calibration_report(p, y_test)["ece"] < raw_ece / 3
    assert np.mean(ndcg_before) == pytest.approx(0.5058, abs=1e-4)
