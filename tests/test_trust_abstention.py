"""Abstention: confidence functions, nAUC anchors (oracle 1, chance 0), thresholds, padding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from surerank.errors import InputError
from surerank.trust.abstention import (
    NAUC_RESOLUTION,
    Abstainer,
    LinearConfidence,
    coverage_curve,
    nauc,
    reference_free,
    score_matrix,
    threshold_for_quality,
    threshold_for_rate,
)
from surerank.types import Query, RankedList

values_st = st.lists(st.floats(0, 1, allow_nan=False), min_size=2, max_size=60)


@settings(max_examples=100, deadline=None)
@given(values_st)
@example([0.0, 1e-06])  # failed CI once: nan from the risk form (1 - v) where nauc(v, v) was 1
@example([1.0, 0.999999])
@example([0.0, 5e-10])
def test_nauc_anchors(values):
    v = np.array(values)
    if np.ptp(v) <= NAUC_RESOLUTION * max(1.0, np.abs(v).max()):
        assert np.isnan(nauc(v, v))  # constant within resolution: no ordering to reward
        return
    assert nauc(v, v) == pytest.approx(1.0)
    assert nauc(np.zeros_like(v), v) == pytest.approx(0.0, abs=1e-9)  # ties = random order
    assert nauc(-v, v) <= 1e-9  # the anti-oracle is no better than chance
    assert nauc(v, 1 - v, higher_is_better=False) == pytest.approx(1.0)  # risk form


@settings(max_examples=100, deadline=None)
@given(values_st, st.randoms(use_true_random=False))
def test_coverage_curve_ends_at_the_mean_and_nauc_is_bounded(values, rnd):
    v = np.array(values)
    conf = np.array([rnd.random() for _ in v])
    cov, quality = coverage_curve(conf, v)
    assert cov[-1] == 1.0
    assert quality[-1] == pytest.approx(v.mean())
    if not np.allclose(v, v[0]):
        assert nauc(conf, v) <= 1 + 1e-9


def test_nauc_of_random_confidence_is_zero_on_average():
    rng = np.random.default_rng(0)
    v = rng.random(50)
    results = [nauc(rng.random(50), v) for _ in range(2000)]
    assert abs(np.mean(results)) < 4 * np.std(results) / np.sqrt(len(results))


def test_short_lists_are_padded_not_rejected():
    m = score_matrix([[3.0, 1.0], [], [5.0, 4.0, 2.0, 1.0]], k=3)
    assert m.tolist() == [[3.0, 1.0, 1.0], [0.0, 0.0, 0.0], [5.0, 4.0, 2.0]]
    assert reference_free([[3.0]], "gap").tolist() == [0.0]
    assert reference_free([[2.0, 5.0, 1.0]], "max").tolist() == [5.0]
    with pytest.raises(InputError, match="reference-free"):
        reference_free([[1.0]], "entropy")


def test_u_lin_learns_a_linear_quality_signal_that_max_misses():
    rng = np.random.default_rng(1)
    n = 400
    lists = [np.sort(rng.normal(size=20))[::-1] + rng.normal() for _ in range(n)]
    quality = np.array([np.clip(0.5 + 0.4 * (s[0] - s[1]) - 0.1 * s[0], 0, 1) for s in lists])
    lin = LinearConfidence(k=5).fit(lists[:200], quality[:200])
    u = nauc(lin.predict(lists[200:]), quality[200:])
    assert u > 0.8
    assert u > nauc(reference_free(lists[200:], "max"), quality[200:])


def test_thresholds_reach_their_targets():
    rng = np.random.default_rng(2)
    conf = rng.random(100)
    metric = np.clip(conf + rng.normal(scale=0.2, size=100), 0, 1)
    t = threshold_for_rate(conf, 0.3)
    assert np.mean(conf < t) == pytest.approx(0.3)
    t = threshold_for_quality(conf, metric, 0.7)
    answered = conf >= t
    assert metric[answered].mean() >= 0.7
    # answering one more query (the next most confident) would break the target
    nxt = conf[~answered].max()
    assert metric[conf >= nxt].mean() < 0.7


def test_abstainer_fills_lists_and_round_trips():
    rng = np.random.default_rng(3)
    lists = [RankedList.from_scores(Query.from_texts(f"q{i}", ["a", "b", "c"], id=f"q{i}"),
                                    rng.normal(size=3).tolist()) for i in range(30)]
    metric = rng.random(30)
    ab = Abstainer("u_log", k=3).fit([r.scores for r in lists], metric, target_rate=0.2)
    ab.apply(lists)
    assert sum(r.abstain for r in lists) == 6
    again = Abstainer.from_dict(ab.to_dict())
    assert np.allclose(again.confidences([r.scores for r in lists]), [r.confidence for r in lists])
    with pytest.raises(InputError, match="exactly one"):
        Abstainer("max").fit([r.scores for r in lists], metric)
