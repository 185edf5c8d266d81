"""Risk-controlled cutoffs: the CRC and LTT guarantees hold on synthetic data; warnings are raised."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surerank.errors import InputError
from surerank.trust.conformal import (
    ConformalCutoff,
    crc_index,
    hb_pvalue,
    ltt_index,
    threshold_losses,
    topk_losses,
)
from surerank.trust.labels import LabelledList
from surerank.types import Query, RankedList


def synthetic(n: int, rng: np.random.Generator, retrieved: float = 1.0) -> list[LabelledList]:
    """Queries of 50 candidates; relevance more likely near the top; some relevant never retrieved."""
    out = []
    for q in range(n):
        p = 0.5 * np.exp(-np.arange(50) / rng.uniform(3, 20))
        labels = (rng.random(50) < p).astype(float)
        scores = np.sort(rng.normal(size=50))[::-1]
        n_missing = rng.binomial(10, 1 - retrieved)
        out.append(LabelledList(qid=f"q{q}", scores=scores, labels=labels, grades=labels * 2,
                                n_relevant_judged=int(labels.sum()) + n_missing))
    return out


def test_crc_bounds_the_expected_miss_rate():
    rng = np.random.default_rng(0)
    population = [lab for lab in synthetic(600, rng) if lab.n_relevant_retrieved]
    losses = topk_losses(population, np.arange(51))
    n_cal, alpha, splits = 30, 0.15, 2000
    risks = []
    for _ in range(splits):
        perm = rng.permutation(len(population))
        j = crc_index(losses[perm[:n_cal]], alpha)
        risks.append(losses[perm[n_cal], j])  # one fresh test query per split
    risks = np.array(risks)
    assert risks.mean() <= alpha + 3 * risks.std() / np.sqrt(splits)
    assert risks.mean() > alpha / 3  # not trivially conservative


def test_ltt_bounds_the_probability_of_excess_risk():
    rng = np.random.default_rng(1)
    population = [lab for lab in synthetic(1000, rng) if lab.n_relevant_retrieved]
    losses = topk_losses(population, np.arange(51))
    true_risk = losses.mean(axis=0)
    alpha, delta, splits = 0.2, 0.1, 500
    for correction in ("fixed_sequence", "bonferroni"):
        over = []
        for _ in range(splits):
            j = ltt_index(losses[rng.choice(len(population), 60, replace=False)], alpha, delta, correction)
            over.append(true_risk[50 if j is None else j] > alpha)
        assert np.mean(over) <= delta + 3 * np.sqrt(delta * (1 - delta) / splits)


@settings(max_examples=50, deadline=None)
@given(st.integers(5, 300), st.floats(0.01, 0.5), st.floats(0, 1), st.floats(0, 1))
def test_hb_pvalue_is_a_probability_and_monotone(n, alpha, r1, r2):
    lo, hi = sorted((r1, r2))
    p_lo, p_hi = hb_pvalue(lo, n, alpha)[0], hb_pvalue(hi, n, alpha)[0]
    assert 0 <= p_lo <= p_hi + 1e-12 <= 1 + 1e-12


def test_hb_pvalue_is_valid_under_the_null():
    rng = np.random.default_rng(2)
    alpha, n, delta = 0.2, 50, 0.1
    risk_hat = rng.binomial(n, alpha, size=20000) / n  # losses with true risk exactly alpha
    assert np.mean(hb_pvalue(risk_hat, n, alpha) <= delta) <= delta


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(0, 2**31 - 1))
def test_losses_are_monotone_in_the_parameter(n, seed):
    labs = synthetic(n, np.random.default_rng(seed), retrieved=0.7)
    lk = topk_losses(labs, np.arange(51), "judged")
    assert np.all(np.diff(lk, axis=1) <= 1e-12)
    for lab in labs:
        lab.probabilities = 1 / (1 + np.exp(-lab.scores))
    lt = threshold_losses(labs, np.r_[np.linspace(1, 0, 30), -np.inf], "candidates")
    assert np.all(np.diff(lt, axis=1) <= 1e-12)
    assert np.all((lk >= 0) & (lk <= 1))


def test_unreachable_alpha_warns_and_keeps_everything(caplog):
    labs = synthetic(80, np.random.default_rng(3), retrieved=0.3)
    with caplog.at_level(logging.WARNING, logger="surerank.trust.conformal"):
        cut = ConformalCutoff(alpha=0.1, scope="judged", use="score").fit(labs)
    assert not cut.report["attainable"]
    assert cut.k == 50
    assert "first stage" in cut.report["warnings"][0]
    assert "cannot be met" in caplog.text
    # in the candidates scope the same alpha is met, with a note that it is not end to end
    cut = ConformalCutoff(alpha=0.1, scope="candidates", use="score").fit(labs)
    assert cut.report["attainable"] and cut.k < 50
    assert "candidates only" in cut.report["warnings"][0]


def test_queries_without_relevant_passages_policy():
    labs = synthetic(60, np.random.default_rng(4))
    for lab in labs[:20]:
        lab.labels[:] = 0.0
        lab.n_relevant_judged = 0
    skip = ConformalCutoff(alpha=0.2, no_relevant="skip", use="score").fit(labs)
    zero = ConformalCutoff(alpha=0.2, no_relevant="zero", use="score").fit(labs)
    assert skip.report["skipped_without_relevant"] == 20 and zero.report["skipped_without_relevant"] == 0
    assert zero.k <= skip.k  # zeros dilute the risk: never a larger cutoff


def test_apply_sets_keep_flags_without_reordering():
    rng = np.random.default_rng(5)
    labs = synthetic(40, rng)
    cut = ConformalCutoff(alpha=0.3, kind="threshold", use="probability", method="ltt")
    for lab in labs:
        lab.probabilities = 1 / (1 + np.exp(-lab.scores))
    cut.fit(labs)
    ranked = RankedList.from_scores(Query.from_texts("q", [str(i) for i in range(10)]),
                                    rng.normal(size=10).tolist())
    ids = ranked.ids
    for item in ranked:
        item.probability = float(1 / (1 + np.exp(-item.score)))
    cut.apply([ranked])
    keep = [item.keep for item in ranked]
    assert ranked.ids == ids
    assert keep == sorted(keep, reverse=True)  # a prefix is kept
    assert sum(keep) == ranked.info["cutoff"]["kept"]
    again = ConformalCutoff.from_dict(cut.to_dict())
    assert again.threshold == cut.threshold
    with pytest.raises(InputError, match="alpha"):
        ConformalCutoff(alpha=1.5)
