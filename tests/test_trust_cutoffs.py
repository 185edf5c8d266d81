"""Adaptive cutoffs: bounds always respected, planted structure found, probabilities required."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surerank.errors import InputError
from surerank.trust.cutoffs import (
    METHODS,
    AdaptiveCutoff,
    cumulative_mass,
    largest_gap,
    probability_threshold,
)
from surerank.types import Query, RankedList


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=0, max_size=40),
       st.integers(0, 10), st.integers(0, 50))
def test_every_method_stays_within_bounds(values, k_min, extra):
    v = np.sort(np.array(values))[::-1]
    k_max = k_min + extra
    for method in METHODS:
        k = AdaptiveCutoff(method, k_min=k_min, k_max=k_max).choose_k(v, v)
        assert min(k_min, v.size) <= k <= min(k_max, v.size), method


def test_planted_structure():
    v = np.array([0.9, 0.88, 0.86, 0.3, 0.2, 0.19, 0.18])
    assert largest_gap(v) == 3
    assert largest_gap(v, k_min=4) == 4  # the planted gap is below k_min; next largest
    p = np.array([0.5, 0.3, 0.1, 0.1])
    assert cumulative_mass(p, 0.8) == 2
    assert cumulative_mass(p, 0.81) == 3
    assert probability_threshold(p, 0.3) == 2
    assert probability_threshold(p, 0.99, k_min=1) == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.001, 1), min_size=1, max_size=30), st.floats(0.05, 1), st.floats(0.05, 1))
def test_mass_is_monotone(p, m1, m2):
    lo, hi = sorted((m1, m2))
    assert cumulative_mass(p, lo) <= cumulative_mass(p, hi)


def test_apply_needs_probabilities_for_mass_and_marks_a_prefix():
    ranked = RankedList.from_scores(Query.from_texts("q", list("abcdef")), [5, 4.9, 4.8, 1, 0.9, 0.8])
    AdaptiveCutoff("gap").apply([ranked])
    assert [i.keep for i in ranked] == [True, True, True, False, False, False]
    with pytest.raises(InputError, match="probabilities"):
        AdaptiveCutoff("mass").apply([ranked])
    with pytest.raises(InputError, match="cutoff method"):
        AdaptiveCutoff("knee")
