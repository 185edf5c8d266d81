"""The core's score arithmetic: ``sigmoid`` without overflow, ``unit_rows`` as a cosine reads it."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from surerank.scores import sigmoid, unit_rows

FINITE = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@given(FINITE)
def test_sigmoid_is_a_probability_and_symmetric(x: float) -> None:
    p = sigmoid(x)
    assert 0.0 <= p <= 1.0 and math.isclose(p + sigmoid(-x), 1.0, abs_tol=1e-12)


@given(arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 5)), elements=FINITE))
def test_unit_rows_have_length_one_or_stay_zero_and_keep_direction(x: np.ndarray) -> None:
    out = unit_rows(x)
    norms = np.linalg.norm(x, axis=1)
    for row, unit, norm in zip(x, out, norms, strict=True):
        if norm > 1e-6:
            assert math.isclose(float(np.linalg.norm(unit)), 1.0, rel_tol=1e-9)
            assert np.allclose(unit * norm, row, rtol=1e-9, atol=1e-9 * norm)
        elif not row.any():
            assert not unit.any()
