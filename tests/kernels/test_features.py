"""Symmetric monomial feature maps: U1 U2^T = p(Q K^T), rank C(d+g, g), array-API genericity."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import array_api_compat
import array_api_strict
import numpy as np
import pytest
import sympy as sp
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lora_proofcheck._lib import xp as _xp
from lora_proofcheck.certification.polynomial import ExpPolynomial, exp_polynomial
from lora_proofcheck.errors import InvalidInputError, InvalidTypeError
from lora_proofcheck.kernels import features as features_module
from lora_proofcheck.kernels.features import (
    feature_maps,
    feature_rank,
    feature_scales,
    key_features,
    monomial_exponents,
    paper_rank_bound,
    query_features,
)

NP = array_api_compat.array_namespace(np.empty(0))


def exact_kernel(Q, K, coefficients):
    """p(<q_i, k_j>) in exact rational arithmetic from the float entries, and the rounding scale
    sum_t |a_t| (sum_l |q_l k_l|)^t (the sum of |terms| that the features add up)."""
    a = [Fraction(int(c.p), int(c.q)) for c in coefficients]
    value = np.empty((Q.shape[0], K.shape[0]))
    scale = np.empty_like(value)
    for i, j in itertools.product(range(Q.shape[0]), range(K.shape[0])):
        s = sum((Fraction(float(q)) * Fraction(float(k)) for q, k in zip(Q[i], K[j])), Fraction(0))
        s_abs = float(np.sum(np.abs(Q[i] * K[j])))
        p = Fraction(0)
        for c in reversed(a):
            p = p * s + c
        value[i, j] = float(p)
        scale[i, j] = sum(abs(float(c)) * s_abs**t for t, c in enumerate(a))
    return value, scale


def signed_polynomial(degree: int, seed: int) -> ExpPolynomial:
    """A polynomial with coefficients of random sign (features must not care about the sign)."""
    rng = np.random.default_rng(seed)
    coeffs = tuple(
        sp.Rational(int(rng.integers(-50, 51)), math.factorial(t) * int(rng.integers(1, 5)))
        for t in range(degree + 1)
    )
    return ExpPolynomial("chebyshev", degree, 1.0, coeffs, 1.0)


# ----------------------------------------------------------------------------------------------
# monomials and ranks


@pytest.mark.parametrize("d, degree", [(1, 0), (1, 5), (2, 3), (3, 4), (5, 2), (6, 3)])
def test_monomial_exponents_are_all_multi_indices_in_graded_order(d, degree):
    ms = monomial_exponents(d, degree)
    expected = {m for m in itertools.product(range(degree + 1), repeat=d) if sum(m) <= degree}
    assert len(ms) == len(set(ms)) == len(expected) == feature_rank(d, degree)
    assert set(ms) == expected
    assert [sum(m) for m in ms] == sorted(sum(m) for m in ms)  # graded
    assert monomial_exponents(d, degree) == ms  # deterministic


def as_index_tuple(m):
    """Multi-index (2, 0, 1) -> sorted variable tuple (0, 0, 2)."""
    return tuple(i for i, count in enumerate(m) for _ in range(count))


@pytest.mark.parametrize("d, degree", [(1, 4), (2, 3), (3, 4), (5, 3), (8, 3)])
def test_order_is_colex(d, degree):
    """Within a degree, the sorted index tuples come in lexicographic order of their REVERSES
    (largest variable first): itertools' order, re-sorted, is the independent oracle."""
    ms = monomial_exponents(d, degree)
    for t in range(degree + 1):
        level = [as_index_tuple(m) for m in ms if sum(m) == t]
        combos = itertools.combinations_with_replacement(range(d), t)
        assert level == sorted(combos, key=lambda c: c[::-1])


@pytest.mark.parametrize("d, degree", [(1, 3), (3, 4), (4, 3), (8, 2)])
def test_prefix_property(d, degree):
    """Degree-t group i = (the first C(i+t-1, t-1) degree-(t-1) monomials: exactly those over
    variables 0..i) times x_i, in the same order; the groups follow each other for i = 0..d-1."""
    ms = monomial_exponents(d, degree)
    levels = [[m for m in ms if sum(m) == t] for t in range(degree + 1)]
    for t in range(1, degree + 1):
        rebuilt = []
        for i in range(d):
            prefix = levels[t - 1][: math.comb(i + t - 1, t - 1)]
            assert prefix == [m for m in levels[t - 1] if not any(m[i + 1:])]  # support in 0..i
            rebuilt += [m[:i] + (m[i] + 1,) + m[i + 1:] for m in prefix]
        assert rebuilt == levels[t]


@settings(deadline=None)
@given(d=st.integers(1, 64), degree=st.integers(0, 12))
def test_rank_formula_and_paper_bound(d, degree):
    k = feature_rank(d, degree)
    assert k == math.comb(d + degree, degree)
    assert k == sum(math.comb(d + t - 1, t) for t in range(degree + 1))  # monomials per degree
    assert k <= paper_rank_bound(d, degree) == math.comb(2 * (degree + d), 2 * degree)


def test_rank_table_from_reference_notes():
    assert [feature_rank(8, 2), feature_rank(8, 3), feature_rank(64, 2)] == [45, 165, 2145]
    assert [paper_rank_bound(8, 2), paper_rank_bound(8, 3)] == [4845, 74613]


# ----------------------------------------------------------------------------------------------
# the kernel identity


@settings(deadline=None)
@given(
    d=st.integers(1, 6),
    degree=st.integers(0, 6),
    method=st.sampled_from(["taylor", "chebyshev", "signed"]),
    radius=st.floats(0.1, 8.0),
    lengths=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    seed=st.integers(0, 2**32 - 1),
)
@example(d=3, degree=5, method="chebyshev", radius=8.0, lengths=(4, 5), seed=0)  # negative a_1..a_3
def test_features_reproduce_polynomial_kernel(d, degree, method, radius, lengths, seed):
    if method == "signed":
        p = signed_polynomial(degree, seed)
    else:
        p = exp_polynomial(radius, degree=degree, method=method)
    rng = np.random.default_rng(seed)
    # entries scaled so the logits roughly fill [-R, R], where p is meant to be used
    Q = rng.standard_normal((lengths[0], d)) * math.sqrt(radius / d)
    K = rng.standard_normal((lengths[1], d)) * math.sqrt(radius / d)
    U1, U2 = feature_maps(Q, K, p)
    k = feature_rank(d, degree)
    assert U1.shape == (lengths[0], k) and U2.shape == (lengths[1], k)
    value, scale = exact_kernel(Q, K, p.coefficients)
    # each feature product carries <= (2g + 6) roundings, the matmul adds <= k more per term
    tol = (4 * degree + 8 + k) * np.finfo(np.float64).eps * scale
    assert np.all(np.abs(U1 @ U2.T - value) <= tol)


def test_chebyshev_example_really_has_negative_coefficients():
    p = exp_polynomial(8.0, degree=5, method="chebyshev")
    assert any(c < 0 for c in p.coefficients) and any(c > 0 for c in p.coefficients)


@pytest.mark.parametrize("d, degree", [(3, 3), (4, 5), (1, 2), (5, 1)])
def test_columns_follow_monomial_exponents(d, degree):
    p = signed_polynomial(degree, seed=7)
    rng = np.random.default_rng(1)
    Q, K = rng.standard_normal((4, d)), rng.standard_normal((2, d))
    U1, U2 = feature_maps(Q, K, p)
    assert np.array_equal(U1, query_features(Q, p)) and np.array_equal(U2, key_features(K, p))
    left, right = feature_scales(d, p)
    for col, m in enumerate(monomial_exponents(d, degree)):
        t = sum(m)
        a = float(p.coefficients[t])
        weight = abs(a) * math.factorial(t) / math.prod(math.factorial(c) for c in m)
        assert left[col] == pytest.approx(math.sqrt(weight), rel=1e-15)
        assert right[col] == pytest.approx(math.copysign(math.sqrt(weight), a), rel=1e-15)
        assert np.allclose(U1[:, col], left[col] * np.prod(Q**np.array(m), axis=1), rtol=1e-14, atol=0)
        assert np.allclose(U2[:, col], right[col] * np.prod(K**np.array(m), axis=1), rtol=1e-14, atol=0)


def test_leading_batch_dims():
    p = exp_polynomial(2.0, degree=3, method="chebyshev")
    rng = np.random.default_rng(2)
    Q, K = rng.standard_normal((2, 3, 5, 4)) * 0.5, rng.standard_normal((2, 3, 6, 4)) * 0.5
    U1, U2 = feature_maps(Q, K, p)
    assert U1.shape == (2, 3, 5, 35) and U2.shape == (2, 3, 6, 35)
    for b in itertools.product(range(2), range(3)):
        V1, V2 = feature_maps(Q[b], K[b], p)
        assert np.array_equal(U1[b], V1) and np.array_equal(U2[b], V2)


# ----------------------------------------------------------------------------------------------
# array API genericity and dtypes


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_array_api_strict_matches_numpy(dtype):
    p = exp_polynomial(4.0, degree=4, method="chebyshev")
    rng = np.random.default_rng(3)
    Q = (rng.standard_normal((2, 7, 5)) * 0.6).astype(dtype)
    K = (rng.standard_normal((2, 6, 5)) * 0.6).astype(dtype)
    U1, U2 = feature_maps(Q, K, p)
    xp = array_api_strict
    S1, S2 = feature_maps(xp.asarray(Q), xp.asarray(K), p)
    assert S1.dtype == getattr(xp, dtype) and S2.dtype == getattr(xp, dtype)
    assert np.array_equal(np.asarray(S1), U1) and np.array_equal(np.asarray(S2), U2)


def test_float32_stays_float32_and_keeps_the_identity():
    p = exp_polynomial(2.0, degree=4, method="chebyshev")
    rng = np.random.default_rng(4)
    Q, K = rng.standard_normal((6, 3)) * 0.8, rng.standard_normal((5, 3)) * 0.8
    U1, U2 = feature_maps(Q.astype(np.float32), K.astype(np.float32), p)
    assert U1.dtype == np.float32 and U2.dtype == np.float32
    value, scale = exact_kernel(Q.astype(np.float32), K.astype(np.float32), p.coefficients)
    tol = (4 * 4 + 8 + U1.shape[1]) * np.finfo(np.float32).eps * scale
    assert np.all(np.abs((U1 @ U2.T).astype(np.float64) - value) <= tol)


# ----------------------------------------------------------------------------------------------
# the two implementations of the recurrence, and the unvalidated per-chunk entry point


@settings(deadline=None)
@given(
    d=st.integers(1, 6),
    degree=st.integers(0, 5),
    batch=st.sampled_from([(), (2,), (2, 3)]),
    length=st.integers(0, 9),
    dtype=st.sampled_from(["float32", "float64"]),
    key=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_fast_and_generic_paths_agree_exactly(d, degree, batch, length, dtype, key, seed):
    """The out= path (NumPy) and the concat path (standard functions only) perform the same
    products in the same order, so they agree bit for bit, on NumPy and on array_api_strict."""
    p = signed_polynomial(degree, seed)
    X = (np.random.default_rng(seed).standard_normal(batch + (length, d))).astype(dtype)
    k = feature_rank(d, degree)
    plan = features_module._plan(d, degree)
    scale = features_module._scale_column(NP, X, p, key)
    fast = features_module._fill(NP, X, plan, scale)
    generic = features_module._stack(NP, X, plan, scale)
    assert fast.shape == generic.shape == batch + (k, length) and fast.dtype == generic.dtype == X.dtype
    assert np.array_equal(fast, generic)
    U = features_module.side_features(NP, X, p, key)
    S = features_module.side_features(array_api_strict, array_api_strict.asarray(X), p, key)
    assert U.shape == batch + (length, k)
    assert np.array_equal(U, np.matrix_transpose(fast)) and np.array_equal(np.asarray(S), U)


def test_side_features_match_the_validated_entry_points():
    p = exp_polynomial(8.0, degree=5, method="chebyshev")  # negative a_1..a_3 (see above)
    rng = np.random.default_rng(5)
    Q, K = rng.standard_normal((2, 7, 4)), rng.standard_normal((2, 3, 4))
    assert np.array_equal(features_module.side_features(NP, Q, p, False), query_features(Q, p))
    assert np.array_equal(features_module.side_features(NP, K, p, True), key_features(K, p))
    left, right = feature_scales(4, p)
    assert left != right  # the Chebyshev coefficients have both signs, so the sides differ


def test_reused_buffer_gives_the_same_features_in_place():
    p = exp_polynomial(2.0, degree=3, method="taylor")
    rng = np.random.default_rng(6)
    buffer = np.full((2, feature_rank(5, 3), 8), np.nan)
    for seed in range(2):  # second call overwrites the first's values entirely
        X = rng.standard_normal((2, 8, 5))
        U = features_module.side_features(NP, X, p, True, out=buffer)
        assert np.shares_memory(U, buffer)
        assert np.array_equal(U, features_module.side_features(NP, X, p, True))


def test_all_namespaces_agree_with_numpy(xp):
    """Same values on every namespace of the conftest fixture (CuPy under the gpu marker)."""
    p = exp_polynomial(4.0, degree=3, method="chebyshev")
    X = np.random.default_rng(8).standard_normal((2, 6, 3))
    expected = features_module.side_features(NP, X, p, True)
    Xs = xp.asarray(X)
    got = features_module.side_features(array_api_compat.array_namespace(Xs), Xs, p, True)
    assert np.array_equal(_xp.to_numpy(got), expected)


def test_scale_columns_are_cached_per_dtype():
    p = exp_polynomial(1.0, degree=2)
    X64, X32 = np.ones((2, 3)), np.ones((2, 3), dtype=np.float32)
    a = features_module._scale_column(NP, X64, p, False)
    assert features_module._scale_column(NP, X64, p, False) is a  # cached, not rebuilt per chunk
    b = features_module._scale_column(NP, X32, p, False)
    assert b.dtype == np.float32 and a.dtype == np.float64 and a.shape == b.shape == (10, 1)


# ----------------------------------------------------------------------------------------------
# bad inputs


def _bad_inputs():
    ok = np.ones((3, 2))
    p = exp_polynomial(1.0, degree=2)
    return [
        (lambda: feature_maps(np.ones(3), ok, p), InvalidInputError, "Q"),
        (lambda: feature_maps(ok, np.ones((3, 4)), p), InvalidInputError, "last dim"),
        (lambda: feature_maps(np.ones((2, 3, 2)), np.ones((3, 3, 2)), p), InvalidInputError, "leading"),
        (lambda: feature_maps(ok, np.ones((1, 3, 2)), p), InvalidInputError, "leading"),
        (lambda: feature_maps(ok, np.array([[1.0, np.nan]]), p), InvalidInputError, "K"),
        (lambda: feature_maps(np.ones((3, 2), dtype=np.int64), ok, p), InvalidTypeError, "Q"),
        (lambda: feature_maps(ok, ok.astype(np.float32), p), InvalidTypeError, "dtype"),
        (lambda: feature_maps(ok, [[1.0, 2.0]], p), InvalidTypeError, "K"),
        (lambda: feature_maps(ok, array_api_strict.asarray(ok), p), InvalidTypeError, "mixed"),
        (lambda: feature_maps(ok, ok, [1.0, 1.0]), InvalidTypeError, "poly"),
        (lambda: monomial_exponents(0, 2), InvalidInputError, "d"),
        (lambda: query_features(np.ones(3), p), InvalidInputError, "Q"),
        (lambda: query_features(np.ones((3, 0)), p), InvalidInputError, "Q must have d >= 1"),
        (lambda: query_features(np.array([[np.inf, 1.0]]), p), InvalidInputError, "Q has non-finite"),
        (lambda: query_features(ok.astype(np.int32), p), InvalidTypeError, "Q must have dtype"),
        (lambda: query_features([[1.0, 2.0]], p), InvalidTypeError, "Q must be an array"),
        (lambda: query_features(ok, None), InvalidTypeError, "poly"),
        (lambda: key_features(np.ones((2, 3, 0)), p), InvalidInputError, "K must have d >= 1"),
        (lambda: key_features(np.ones(()), p), InvalidInputError, "K must have shape"),
        (lambda: key_features(np.array([[1.0, np.nan]]), p), InvalidInputError, "K has non-finite"),
        (lambda: key_features(ok.astype(np.float16), p), InvalidTypeError, "K must have dtype"),
        (lambda: key_features((1.0, 2.0), p), InvalidTypeError, "K must be an array"),
        (lambda: key_features(ok, "taylor"), InvalidTypeError, "poly"),
        (lambda: feature_rank(2, -1), InvalidInputError, "degree"),
        (lambda: paper_rank_bound(2.5, 1), InvalidTypeError, "d"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_inputs())))
def test_bad_inputs_name_the_argument(case):
    call, error, name = _bad_inputs()[case]
    with pytest.raises(error, match=name):
        call()


# ----------------------------------------------------------------------------------------------
# the vector-Jacobian product (the model gradient's route (a))


def _central(f, X, h):
    out = np.zeros_like(X)
    for idx in np.ndindex(X.shape):
        up, down = X.copy(), X.copy()
        up[idx] += h
        down[idx] -= h
        out[idx] = (f(up) - f(down)) / (2 * h)
    return out


@given(st.integers(0, 4), st.integers(1, 4), st.booleans(), st.integers(0, 2**32 - 1))
def test_monomial_vjp_matches_central_differences(degree, d, key, seed):
    """Tolerance from the step: truncation c h^2 estimated entrywise by Richardson (FD(2h) - FD(h) =
    3 c h^2 + rounding), plus the rounding of the two sums, ~ eps sum|G U| / h each."""
    rng = np.random.default_rng(seed)
    poly = exp_polynomial(1.5, degree=degree, method="chebyshev")
    X = rng.standard_normal((2, 5, d))
    f = key_features if key else query_features
    G = rng.standard_normal(f(X, poly).shape)
    got = features_module.monomial_vjp(X, G, poly, key=key)
    h = 1e-5
    loss = lambda Z: float(np.sum(G * f(Z, poly)))  # noqa: E731
    fd, coarse = _central(loss, X, h), _central(loss, X, 2 * h)
    rounding = 10 * np.finfo(np.float64).eps * (np.sum(np.abs(G * f(X, poly))) + 1.0) / h
    assert np.all(np.abs(got - fd) <= 2 * np.abs(coarse - fd) / 3 + 2 * rounding)


@pytest.mark.parametrize("d, degree, L", [(2, 3, 2), (3, 2, 1)])
def test_monomial_vjp_is_exact_on_symbols(d, degree, L):
    """The runtime reverse recurrence on SymPy object arrays, with FREE column scales sigma_m, equals
    d/dx of sum_{i,m} G_im sigma_m x_i^m exactly (so no choice of coefficients can break it)."""
    poly = exp_polynomial(1.0, degree=degree, method="taylor")
    monos = monomial_exponents(d, degree)
    k = len(monos)
    X = np.array([[sp.Symbol(f"x_{i}_{a}", real=True) for a in range(d)] for i in range(L)], dtype=object)
    G = np.array([[sp.Symbol(f"g_{i}_{m}", real=True) for m in range(k)] for i in range(L)], dtype=object)
    sigma = np.array([[sp.Symbol(f"sigma_{m}", real=True)] for m in range(k)], dtype=object)
    got = features_module.side_vjp(NP, X, G, poly, False, scale=sigma)
    f = sum(G[i, m] * sigma[m, 0] * sp.Mul(*(X[i, a] ** e for a, e in enumerate(mm)))
            for i in range(L) for m, mm in enumerate(monos))
    brute = [sp.diff(f, X[i, a]) for i in range(L) for a in range(d)]
    assert all(sp.expand(b - g) == 0 for b, g in zip(brute, np.asarray(got).reshape(-1)))


def test_monomial_vjp_on_array_api_strict():
    rng = np.random.default_rng(3)
    poly = exp_polynomial(1.0, degree=3, method="taylor")
    X, G = rng.standard_normal((6, 3)), rng.standard_normal((6, 20))
    got = features_module.monomial_vjp(array_api_strict.asarray(X), array_api_strict.asarray(G), poly)
    want = features_module.monomial_vjp(X, G, poly)
    # the same products; the sums over a block go through einsum (NumPy) or sum (strict)
    assert np.max(np.abs(np.asarray(got) - want)) <= 64 * np.finfo(np.float64).eps * np.max(np.abs(want))


def test_features_and_monomials_reuse_the_recurrence():
    rng = np.random.default_rng(4)
    poly = exp_polynomial(1.0, degree=3, method="chebyshev")
    X, G = rng.standard_normal((2, 7, 3)), rng.standard_normal((2, 7, 20))
    U, mono = features_module.features_and_monomials(NP, X, poly, True)
    assert np.array_equal(U, key_features(X, poly))
    assert np.array_equal(features_module.side_vjp(NP, X, G, poly, True, mono),
                          features_module.monomial_vjp(X, G, poly, key=True))


@pytest.mark.parametrize("case", ["shape", "dtype", "nan", "poly"])
def test_monomial_vjp_bad_inputs_name_the_argument(case):
    poly = exp_polynomial(1.0, degree=2, method="taylor")
    X, G = np.ones((4, 2)), np.ones((4, 6))
    if case == "shape":
        with pytest.raises(InvalidInputError, match="G must have shape"):
            features_module.monomial_vjp(X, np.ones((4, 5)), poly)
    elif case == "dtype":
        with pytest.raises(InvalidTypeError, match="X and G"):
            features_module.monomial_vjp(X, G.astype(np.float32), poly)
    elif case == "nan":
        G[0, 0] = np.nan
        with pytest.raises(InvalidInputError, match="G has non-finite"):
            features_module.monomial_vjp(X, G, poly)
    else:
        with pytest.raises(InvalidTypeError, match="poly"):
            features_module.monomial_vjp(X, G, "taylor")
