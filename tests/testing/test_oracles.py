"""The high-precision dense reference: long double within its allowance of a 40-digit evaluation,
the float64 paths within their certified floor of it."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from lora_proofcheck.certification import certificate as cm
from lora_proofcheck.gradients.exact_path import exact_gradients
from lora_proofcheck.testing import (
    FAMILIES,
    allowance_for,
    dense_gradients,
    dense_reference,
    make_problem,
    max_abs_diff,
    oracles,
)


@pytest.mark.skipif(not oracles.LONGDOUBLE_EXTENDED, reason="long double is float64 on this platform")
@pytest.mark.parametrize("family", FAMILIES)
def test_long_double_reference_within_its_allowance_of_mpmath(family):
    """The long double reference's allowance holds against a 40-digit evaluation, and the float64
    exact path and the float64 dense oracle are within the certified float64 floor of it."""
    p = make_problem(family, 12, 3, 2, R=3.0, adapt="QKV", N=2, cross=True, L_kv=9, seed=4)
    ld = dense_reference(p, "longdouble")
    mp = dense_reference(p, "mpmath")
    allow64 = cm.certify(p).exact_bound()
    allow_ld = allowance_for("longdouble", allow64)
    with mpmath.workdps(oracles.MP_DPS):
        for k in mp:
            diff = max(abs(mpmath.mpf(str(x)) - y) for x, y in zip(ld[k].ravel(), mp[k].ravel()))
            assert diff <= allow_ld[k], k
    for got in (exact_gradients(p), dense_gradients(p)):
        e64 = max_abs_diff(got, mp, "mpmath")
        assert all(e64[k] <= allow64[k] for k in mp)
    # the long double reference is far more precise than the float64 one it backs up
    assert max(allow_ld[k] / allow64[k] for k in mp) < 1e-2


def test_float32_values_are_exact_in_the_reference():
    p = make_problem("edge", 10, 2, 1, R=1.0, seed=1, dtype="float32")
    ld = dense_reference(p, "longdouble")
    e = max_abs_diff(exact_gradients(p), ld, "longdouble")
    assert set(e) == set(ld) and all(np.isfinite(v) for v in e.values())


def test_unknown_reference_kind_is_a_clear_error():
    p = make_problem("gaussian", 4, 2, 1, R=1.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        dense_reference(p, "quad")
    with pytest.raises(ValueError, match="kind must be one of"):
        allowance_for("float128", {})
