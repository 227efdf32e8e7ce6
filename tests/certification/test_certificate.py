"""The certified error bound: each step's inequality, the whole chain, its tightness, the floors.

The oracle here is a dense NumPy (or PyTorch) evaluation of the exact gradient formulas with an
arbitrary perturbed kernel E~ = E∘(1+theta) or E~ = p(S) (`testing.dense_gradients`): nothing from
the certificate or the low-rank kernel. Set LORA_PROOFCHECK_RATIO_LOG=path to append every
measured/bound ratio.
"""

from __future__ import annotations

import math

import array_api_strict
import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, example, given, note, settings, target
from hypothesis import strategies as st

from lora_proofcheck import testing
from lora_proofcheck._lib import blocks
from lora_proofcheck.certification import certificate as cm
from lora_proofcheck.certification import rounding
from lora_proofcheck.certification.degree import select_degree
from lora_proofcheck.certification.polynomial import exp_polynomial, min_degree
from lora_proofcheck.errors import InvalidInputError, InvalidTypeError
from lora_proofcheck.gradients.exact_path import lora_factor_gradients
from lora_proofcheck.gradients.lowrank_path import lowrank_weight_gradients
from lora_proofcheck.problem import LoRAProblem
from lora_proofcheck.testing import FAMILIES, dense_gradients, make_problem, upcast, with_dtype
from lora_proofcheck.testing.strategies import problems, record_ratio


def max_ratio(got: dict, want: dict, bound: dict) -> float:
    return max(float(np.max(np.abs(got[k] - want[k]))) / bound[k] for k in want)


# ----------------------------------------------------------------------------------------------
# the symbolic layer


def test_kappa_and_its_inverse_are_consistent():
    assert sp.simplify(cm.KAPPA.subs(cm.delta, cm.DELTA_OF_KAPPA) - cm.kappa) == 0
    for dlt in (0.0, 1e-12, 1e-3, 0.5, 0.9):
        assert math.isclose(cm.delta_of(cm.kappa_of(dlt)), dlt, rel_tol=1e-12, abs_tol=1e-300)
    assert cm.kappa_of(1.0) == math.inf


def test_derivation_steps_cover_the_chain_and_print():
    steps = cm.derivation_steps()
    assert [s.name for s in steps][:9] == ["F", "c", "G", "p1-p2", "P v", "dW_Q", "dW_K", "dW_V", "A, B"]
    for s in steps:
        assert s.reason and "\\le" in s.latex()


def _symbols(name, n, m, positive=False):
    return sp.Matrix(n, m, lambda i, j: sp.Symbol(f"{name}_{i}{j}", positive=positive))


def test_lemma1_identity_is_exact():
    """F~_ij - F_ij = F_ij (theta_ij - theta_i) / (1 + theta_i), theta_i = sum_j F_ij theta_ij."""
    E, th = _symbols("e", 2, 3, positive=True), _symbols("t", 2, 3)
    Et = E.multiply_elementwise(th.applyfunc(lambda x: 1 + x))
    for i in range(2):
        Z, Zt = sum(E.row(i)), sum(Et.row(i))
        F = [E[i, j] / Z for j in range(3)]
        tbar = sum(F[j] * th[i, j] for j in range(3))
        for j in range(3):
            assert sp.simplify(Et[i, j] / Zt - F[j] - F[j] * (th[i, j] - tbar) / (1 + tbar)) == 0


def test_p_is_F_times_c_dot_values_minus_output():
    """P = F∘G - diag((F∘G)1) F equals F_ij c_i.(C3_j - O_i) for any row-stochastic F."""
    L, L_kv, d = 2, 3, 2
    F = _symbols("f", L, L_kv)
    F = sp.Matrix(L, L_kv, lambda i, j: F[i, j] if j < L_kv - 1 else 1 - sum(F[i, :L_kv - 1]))
    C3, Y = _symbols("v", L_kv, d), _symbols("y", L, d)
    O = F * C3
    c = O - Y
    G = c * C3.T
    P1 = F.multiply_elementwise(G)
    P = P1 - sp.diag(*(P1 * sp.ones(L_kv, 1))) * F
    T = sp.Matrix(L, L_kv, lambda i, j: (c.row(i) * (C3.row(j) - O.row(i)).T)[0])
    assert (P - F.multiply_elementwise(T)).expand() == sp.zeros(L, L_kv)
    assert (P * sp.ones(L_kv, 1)).expand() == sp.zeros(L, 1)


# ----------------------------------------------------------------------------------------------
# Lemma 1 and the Alman-Song lemma on adversarial perturbations


@st.composite
def perturbed_kernels(draw):
    L = draw(st.integers(1, 24))
    L_kv = draw(st.integers(1, 40))
    dlt = draw(st.floats(1e-9, 0.9))
    seed = draw(st.integers(0, 2**32 - 1))
    logits = draw(st.floats(0.0, 20.0))
    rng = np.random.default_rng(seed)
    A = np.exp(logits * rng.uniform(-1, 1, (L, L_kv)))
    V = rng.standard_normal((L_kv, draw(st.integers(1, 5)))) * draw(st.floats(1e-3, 1e3))
    pattern = draw(st.sampled_from(["sign-of-V", "half-half", "random"]))
    if pattern == "sign-of-V":     # the worst case for column 0: theta follows V's deviation
        th = np.sign(V[:, 0] - np.median(V[:, 0]))[None, :] * np.ones((L, 1))
    elif pattern == "half-half":
        th = np.where(np.arange(L_kv) < L_kv // 2, 1.0, -1.0)[None, :] * np.ones((L, 1))
    else:
        th = rng.uniform(-1, 1, (L, L_kv))
    return A, A * (1 + dlt * th), V, dlt


@given(perturbed_kernels())
@example((np.ones((1, 2)), np.array([[1.5, 0.5]]), np.array([[1.0], [-1.0]]), 0.5))
def test_lemma1_rows_of_dF_sum_to_zero_with_l1_norm_at_most_kappa(case):
    A, At, _, dlt = case
    F, Ft = A / A.sum(1, keepdims=True), At / At.sum(1, keepdims=True)
    dF = Ft - F
    assert np.all(np.abs(dF.sum(1)) <= 1e-12)
    l1 = np.abs(dF).sum(1).max()
    target(l1 / cm.kappa_of(dlt), label="||dF||_1 / kappa")
    assert l1 <= cm.kappa_of(dlt) * (1 + 1e-9) + 1e-15


@given(perturbed_kernels())
@example((np.ones((1, 2)), np.array([[1.5, 0.5]]), np.array([[1.0], [-1.0]]), 0.5))
def test_alman_song_lemma_and_its_sharpening(case):
    """Relative delta on A => ||D~^-1 A~ V - D^-1 A V||_max <= 2 delta ||V||_max (Alman-Song 2023),
    and the sharper kappa * half-range(V) used by the certificate."""
    A, At, V, dlt = case
    out = A @ V / A.sum(1, keepdims=True)
    out_t = At @ V / At.sum(1, keepdims=True)
    err = np.abs(out_t - out)
    vmax = np.abs(V).max()
    slack = 1e-12 * vmax
    if dlt <= 0.5:
        assert err.max() <= 2 * dlt * vmax + slack
    omega = (V.max(0) - V.min(0)) / 2
    target(float((err / (cm.kappa_of(dlt) * omega + slack)).max()), label="kappa-omega ratio")
    assert np.all(err <= cm.kappa_of(dlt) * omega * (1 + 1e-9) + slack)


def test_alman_song_bound_is_attained_up_to_its_constant():
    """Two keys with V = +-1 and theta = +-delta: the error is delta/(1 + ...) ~ delta ||V||."""
    dlt = 1e-3
    A, V = np.ones((1, 2)), np.array([[1.0], [-1.0]])
    At = A * np.array([[1 + dlt, 1 - dlt]])
    err = np.abs(At @ V / At.sum() - A @ V / A.sum()).max()
    assert err == pytest.approx(dlt, rel=1e-9)
    assert err >= 0.999 * cm.kappa_of(dlt) * 1.0 * (1 - dlt)


# ----------------------------------------------------------------------------------------------
# the whole chain: any relative perturbation, and real polynomials


@settings(deadline=None)
@given(problems(max_L=40), st.floats(1e-10, 0.3), st.data())
def test_any_relative_perturbation_within_kappa_K(problem, dlt, data):
    """For ANY E~ = E∘(1+theta), |theta| <= delta, every gradient entry is within kappa(delta) K.
    theta: the first-order worst case for one entry (sign of d entry / d theta, by autograd)."""
    torch = pytest.importorskip("torch")
    cert = cm.certify(problem)
    key = data.draw(st.sampled_from(sorted(cert.coefficients)))
    K = cert.coefficients_for(dlt)[key]   # the tight K when dlt <= DELTA_CAP
    entry = np.unravel_index(int(np.argmax(K)), K.shape)
    th = torch.zeros((problem.N, problem.L, problem.L_kv), dtype=torch.float64, requires_grad=True)
    dense_gradients(problem, theta=th, lib=torch)[key][entry].backward()
    theta = dlt * np.sign(th.grad.numpy())
    exact = dense_gradients(problem)
    got = dense_gradients(problem, theta=theta)
    floor = {k: float(np.max(v)) for k, v in cert.exact_floor().items()}
    bound = {k: v + 2 * floor[k] for k, v in cert.approximation_bound(dlt).items()}
    ratio = max_ratio(got, exact, bound)
    note(f"key={key} ratio={ratio:.3g}")
    target(ratio, label="adversarial theta: measured/bound")
    record_ratio(ratio, "theta")
    assert ratio <= 1.0


@settings(deadline=None)
@given(problems(max_L=96), st.integers(0, 10), st.sampled_from(["taylor", "chebyshev", "auto"]))
@example(make_problem("aligned", 48, 3, 2, R=0.5, seed=2), 4, "auto")
@example(make_problem("aligned", 48, 3, 2, R=2.0, seed=2), 2, "auto")
@example(make_problem("concentrated", 64, 2, 1, R=4.0, adapt="QV", seed=1), 3, "chebyshev")
@example(make_problem("residual", 64, 4, 2, R=1.0, adapt="QKV", N=2, cross=True, L_kv=33, seed=5), 1,
         "taylor")
def test_polynomial_kernel_within_certified_bound(problem, extra, method):
    """E~ = p(S) with the certified polynomial (extra degrees above the first with delta < 1/2):
    every gradient within kappa(delta) K plus the rounding floors of both dense float64 evaluations."""
    cert = cm.certify(problem)
    g0 = min_degree(cert.logit_bound, 0.5, method=method)
    poly = exp_polynomial(cert.logit_bound, degree=g0 + extra, method=method)
    exact = dense_gradients(problem)
    got = dense_gradients(problem, kernel=poly)
    floor = cert.rounding_floor(poly)
    exact_floor = cert.exact_floor()
    bound = {k: cm.kappa_of(poly.rel_error) * float(np.max(K)) + float(np.max(floor[k] + exact_floor[k]))
             for k, K in cert.coefficients_for(poly.rel_error).items()}
    ratio = max_ratio(got, exact, bound)
    note(f"degree={poly.degree} {poly.method} delta={poly.rel_error:.3g} ratio={ratio:.3g}")
    target(ratio, label="polynomial: measured/bound")
    record_ratio(ratio, "polynomial", problem=problem, degree=poly.degree, method=poly.method, delta=poly.rel_error,
           approx=max(cm.kappa_of(poly.rel_error) * float(np.max(K))
                      for K in cert.coefficients_for(poly.rel_error).values()))
    assert ratio <= 1.0


@pytest.mark.parametrize("R, degree", [(0.5, 3), (0.5, 6), (2.0, 6)])
def test_bound_is_not_vacuous_on_the_aligned_family(R, degree):
    """Adversarial instances come within a factor 100 of the bound (the target is 10^3)."""
    best = 0.0
    for seed in range(3):
        problem = make_problem("aligned", 48, 3, 2, R=R, seed=seed)
        cert = cm.certify(problem)
        poly = exp_polynomial(cert.logit_bound, degree=degree)
        ratio = max_ratio(dense_gradients(problem, kernel=poly), dense_gradients(problem),
                          cert.approximation_bound(poly.rel_error))
        best = max(best, ratio)
    assert 1e-2 < best <= 1.0


def test_adversarial_theta_comes_within_a_factor_ten():
    torch = pytest.importorskip("torch")
    problem = make_problem("aligned", 24, 2, 1, R=1.0, adapt="QV", seed=0)
    cert = cm.certify(problem)
    dlt = 1e-4
    key = "A_V"
    th = torch.zeros((1, 24, 24), dtype=torch.float64, requires_grad=True)
    dense_gradients(problem, theta=th, lib=torch)[key][0, 0].backward()
    got = dense_gradients(problem, theta=dlt * np.sign(th.grad.numpy()))
    ratio = float(np.abs(got[key] - dense_gradients(problem)[key]).max()) / cert.approximation_bound(dlt)[key]
    assert 0.1 < ratio <= 1.0


def test_error_and_bound_fall_as_the_degree_grows():
    problem = make_problem("gaussian", 128, 3, 2, R=1.5, adapt="QKV", seed=7)
    cert = cm.certify(problem)
    exact = dense_gradients(problem)
    errors, bounds = [], []
    for g in range(2, 12):
        poly = exp_polynomial(cert.logit_bound, degree=g)
        got = dense_gradients(problem, kernel=poly)
        errors.append(max(float(np.max(np.abs(got[k] - exact[k]))) for k in exact))
        bounds.append(max(cert.bound(poly).values()))
    assert all(b2 < b1 for b1, b2 in zip(bounds, bounds[1:]))
    assert all(e2 < e1 for e1, e2 in zip(errors, errors[2:]))   # every two degrees, at least
    assert errors[-1] < 1e-6 * errors[0]
    assert all(e <= b for e, b in zip(errors, bounds))


# ----------------------------------------------------------------------------------------------
# floors, degree selection, genericity, arguments


def test_floors_are_finite_positive_and_scale_with_precision():
    p64 = make_problem("gaussian", 64, 4, 2, R=1.0, seed=1)
    p32 = make_problem("gaussian", 64, 4, 2, R=1.0, seed=1, dtype="float32")
    c64, c32 = cm.certify(p64), cm.certify(p32)
    poly = exp_polynomial(max(c64.logit_bound, c32.logit_bound), degree=6)
    for c in (c64, c32):
        for v in list(c.rounding_floor(poly).values()) + list(c.exact_floor().values()):
            assert np.all(np.isfinite(v)) and np.all(v > 0)
    f64, f32 = c64.bound(poly), c32.bound(poly)
    assert all(f32[k] > f64[k] for k in f64)
    ratio = max(np.max(c32.rounding_floor(poly)[k]) / np.max(c64.rounding_floor(poly)[k]) for k in f64)
    assert 2**20 < ratio < 2**35   # u32/u64 = 2^29, up to the consistent part's kappa


def test_floor_grows_without_bound_past_float_range():
    cert = cm.certify(make_problem("gaussian", 64, 2, 1, R=30.0, seed=1, dtype="float32"))
    poly = exp_polynomial(cert.logit_bound, degree=40)
    assert all(math.isinf(v) for v in cert.bound(poly).values())


@pytest.mark.parametrize("eps", [1e-2, 1e-6, 1e-9])
def test_required_delta_meets_eps(eps):
    problem = make_problem("gaussian", 64, 3, 2, R=1.0, seed=3)
    cert = cm.certify(problem)
    scale = max(float(np.max(K)) for K in cert.coefficients_for(0.0).values())  # the tight K: delta < cap
    eps = eps * scale
    dlt = cert.required_delta(eps)
    assert max(cert.approximation_bound(dlt).values()) <= eps * (1 + 1e-12)
    assert max(cert.approximation_bound(dlt * 1.01).values()) > eps
    floor = cert.rounding_floor(exp_polynomial(cert.logit_bound, degree=8))
    assert 0 < cert.required_delta(eps, floor) < dlt
    assert math.isinf(max(cert.bound(exp_polynomial(0.99 * cert.logit_bound, degree=8)).values()))


def test_certificate_is_array_api_generic():
    a = cm.certify(make_problem("gaussian", 40, 3, 2, R=1.0, adapt="QKV", N=2, seed=4))
    b = cm.certify(make_problem("gaussian", 40, 3, 2, R=1.0, adapt="QKV", N=2, seed=4, xp=array_api_strict))
    poly = exp_polynomial(max(a.logit_bound, b.logit_bound), degree=5)
    assert a.logit_bound == pytest.approx(b.logit_bound, rel=1e-14)
    for key in a.coefficients:
        np.testing.assert_allclose(a.coefficients[key], b.coefficients[key], rtol=1e-13)
        assert a.bound(poly)[key] == pytest.approx(b.bound(poly)[key], rel=1e-12)


def test_logit_bound_covers_every_logit():
    for family in FAMILIES:
        problem = make_problem(family, 50, 4, 2, R=3.0, cross=True, L_kv=31, N=2, seed=8)
        R, sigma = cm.logit_enclosure(problem)
        h = testing.host_inputs(problem)
        s = problem.scale
        W = {m: h["W"][m] + s * h["B"][m] @ h["A"][m] if m in h["A"] else h["W"][m] for m in "QK"}
        S = problem.beta * (h["X"] @ W["Q"]) @ np.swapaxes(h["X_kv"] @ W["K"], -1, -2)
        assert np.abs(S).max() <= R <= 3.0 * (1 + 1e-9)
        assert 0 <= sigma < 1e-12


def test_magnitude_certificate_dominates_data_within_its_magnitudes():
    """plan's data-free certificate bounds a problem whose entries satisfy the assumed magnitudes."""
    problem = make_problem("gaussian", 32, 3, 2, R=1.0, adapt="QKV", seed=9)
    cert = cm.certify(problem)
    proj = cm.projections(problem)
    h = testing.host_inputs(problem)
    mags = dict(
        input_bound=float(np.abs(h["X"]).max()), value_bound=float(np.abs(proj["C"]["V"]).max()),
        target_bound=float(np.abs(h["Y"]).max()), query_bound=float(np.abs(proj["C"]["Q"]).max()),
        key_bound=float(np.abs(proj["C"]["K"]).max()),
        adapter_bound=max(float(np.abs(v).max()) for v in list(h["A"].values()) + list(h["B"].values())),
    )
    data_free = cm.magnitude_certificate(L=32, L_kv=32, d=3, r=2, N=1, adapt="QKV", beta=problem.beta,
                                         scale=problem.scale, logit_bound=cert.logit_bound, **mags)
    poly = exp_polynomial(cert.logit_bound, degree=6)
    for key in cert.coefficients:
        assert np.all(cert.coefficients[key] <= data_free.coefficients[key] * (1 + 1e-9))
        assert cert.bound(poly)[key] <= data_free.bound(poly)[key]


def test_bad_arguments_name_themselves():
    with pytest.raises(InvalidTypeError, match="problem"):
        cm.certify("not a problem")
    cert = cm.certify(make_problem("gaussian", 8, 2, 1, R=1.0))
    with pytest.raises(InvalidTypeError, match="poly"):
        cert.bound(3)
    for bad in (0, -1.0, math.nan, math.inf):
        with pytest.raises(InvalidInputError, match="eps"):
            select_degree(cert, bad)
    with pytest.raises(InvalidTypeError, match="eps"):
        select_degree(cert, "small")
    with pytest.raises(InvalidTypeError, match="dtype"):
        cm.unit_roundoff("float16")


def test_tight_coefficients_are_below_the_general_ones_and_switch_at_the_cap():
    """The second-moment K is an entrywise min of two bounds: never above the half-range K, used
    exactly for delta <= DELTA_CAP; on Gaussian data it is far smaller (the point of it)."""
    cert = cm.certify(make_problem("gaussian", 256, 4, 2, R=1.0, adapt="QKV", seed=11))
    tight, general = cert.coefficients_for(cm.DELTA_CAP), cert.coefficients_for(2 * cm.DELTA_CAP)
    assert general is cert.coefficients
    for key, K in general.items():
        assert np.all(tight[key] <= K)
    assert max(float(np.max(tight[k])) / float(np.max(general[k])) for k in general) < 0.5
    # required_kappa is the largest feasible kappa across the switch
    k_cap = cm.kappa_of(cm.DELTA_CAP)
    eps = 0.5 * k_cap * max(float(np.max(K)) for K in tight.values())
    k = cert.required_kappa(eps)
    assert k <= k_cap and max(cert.approximation_bound(cm.delta_of(k)).values()) <= eps * (1 + 1e-12)


# cost: two certificates and two low-rank runs (L <= 80) per example
@settings(deadline=None, max_examples=15)
@given(problems(max_L=80), st.integers(0, 4))
@example(make_problem("residual", 80, 4, 2, R=1.0, adapt="QKV", N=2, seed=3), 4)
def test_float32_rounding_of_the_low_rank_path_within_its_floor(problem, extra):
    """Same polynomial, same exact-arithmetic result: the float32 low-rank path differs from the
    float64 one by rounding alone, which the two a-posteriori floors must cover."""
    p32 = with_dtype(problem, "float32")
    p64 = upcast(p32)
    c32, c64 = cm.certify(p32), cm.certify(p64)
    R = max(c32.logit_bound, c64.logit_bound)  # float32's enclosure covers its coarser logits
    poly = exp_polynomial(R, degree=min_degree(R, 0.5) + extra)
    f32, f64 = c32.rounding_floor(poly), c64.rounding_floor(poly)
    got = {}
    for p in (p32, p64):
        _, dW = lowrank_weight_gradients(p, poly, "".join(p.adapted))
        got[p.dtype_name] = {k: np.asarray(v, dtype=np.float64) for k, v in lora_factor_gradients(p, dW).items()}
    bound = {k: float(np.max(f32[k] + f64[k])) for k in f32}
    assume(math.isfinite(max(bound.values())))  # float32 rounding uncontrolled (A(R) e^R too large): no claim
    ratio = max_ratio(got["float32"], got["float64"], bound)
    note(f"degree={poly.degree} ratio={ratio:.3g} floor32={max(bound.values()):.3g}")
    assert ratio <= 1.0


# ----------------------------------------------------------------------------------------------
# the fast evaluation: every reformulation against a direct evaluation of the docstring formulas


def test_closed_forms_of_the_symbolic_layer():
    """t_ib = T_CLOSED, PSI_TERM's slope and constant in c^_ib, and V_TERM's additivity (which
    lets certify sum over rows before evaluating it) are identities."""
    chat2, mu2 = sp.symbols("chat2 mu2", nonnegative=True)
    assert sp.expand(cm.PSI_SLOPE * cm.chat_ib + cm.PSI_CONST - cm.PSI_TERM.subs(cm.t_ib, cm.T_CLOSED)) == 0
    split = cm.V_TERM.subs({cm.chat_ib: cm.chat_ib + chat2, cm.mu_xa: cm.mu_xa + mu2})
    assert sp.expand(split - cm.V_TERM - cm.V_TERM.subs({cm.chat_ib: chat2, cm.mu_xa: mu2})) == 0


@given(st.integers(0, 2**32 - 1))
def test_joint_max_is_the_maximum_over_the_interval(seed):
    """max_{o in [lo, hi]} |o - y| max(hi - o, o - lo) on a fine grid never exceeds the closed form
    and reaches it (the maximiser is an end point, which the grid contains)."""
    rng = np.random.default_rng(seed)
    lo = rng.normal(size=50) * 3
    hi = lo + np.abs(rng.normal(size=50)) * rng.choice([1e-6, 1.0, 10.0], size=50)
    y = rng.normal(size=50) * rng.choice([0.1, 5.0])
    o = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, 2001)[None, :]
    brute = np.max(np.abs(o - y[:, None]) * np.maximum(hi[:, None] - o, o - lo[:, None]), axis=1)
    closed = cm.joint_max(np, lo, hi, y)
    np.testing.assert_allclose(brute, closed, rtol=1e-12, atol=0)


@st.composite
def capped_cases(draw):
    N, d, e = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 6))
    n = draw(st.integers(1, 60))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mean2 = rng.uniform(0, 1, (N, e, d)) * (rng.uniform(size=(N, e, d)) > draw(st.sampled_from([0.0, 0.3])))
    max2 = mean2 * rng.uniform(1, 30, (N, e, d))
    tau = np.where(mean2 > 0, max2 / np.where(mean2 > 0, mean2, 1), 1.0)
    # lam spread over the breakpoints, some exactly on them, some far below and above
    lam = np.concatenate([rng.uniform(0.5, 1.2, n) * rng.choice(tau.ravel(), n),
                          rng.choice(tau.ravel(), 3), [0.0, 1e-300, 1e300]])[None, :].repeat(N, 0)
    lam = np.sort(lam * rng.uniform(0.99, 1.01, lam.shape), axis=1)[:, None, :]
    c = rng.uniform(0, 2, (2, N, d, lam.shape[-1]))
    return c, lam, mean2, max2


@given(capped_cases())
def test_capped_products_equal_the_direct_evaluation(case):
    c, lam, mean2, max2 = case
    capped = np.minimum(max2[:, :, :, None], lam[:, :, None, :] * mean2[:, :, :, None])    # (N, e, d, n)
    direct = np.einsum("nebi,snbi->snei", capped, c)
    got = rounding._capped_products(np, c, lam, rounding._breakpoints(np, mean2, max2), {})
    np.testing.assert_allclose(got, direct, rtol=1e-13, atol=1e-300)


def _dense_staged_floor(rows, ab, u, N, L, L_kv, d, dprime):
    """The floor's per-entry formulas (`staged_floor` docstring), evaluated directly with
    (N, L, d, d) arrays in row layout from the same per-row inputs: the oracle for the blocked,
    capped, regrouped evaluation."""
    g = lambda n: cm.gamma(n, u)  # noqa: E731
    blocks = rows["chunks"]
    row = lambda key: np.swapaxes(np.concatenate([np.asarray(ch[key]) for ch in blocks], axis=-1), 1, 2)  # noqa: E731
    per_row = lambda k: np.swapaxes(np.concatenate(  # noqa: E731
        [np.broadcast_to(np.asarray(x[k], dtype=float), ch["lam"].shape)
         for ch, x in zip(blocks, ab, strict=True)], axis=-1), 1, 2)
    a, b = per_row(0), per_row(1)                                            # (N, L, 1)
    col = lambda key: np.swapaxes(np.asarray(rows[key]), 1, 2)  # noqa: E731   (N, 1, d)
    mu3, e3, mu2, e2, mux, m3, m2, mx = (col(k) for k in ("mu3", "e3", "mu2", "e2", "mux", "m3", "m2", "mx"))
    lam_t = (1 + dprime) / (1 - dprime) * row("lam") * (1 + 2.0**-20)
    cmag = row("ctight") if dprime <= cm.DELTA_CAP else row("chat")
    mean2 = np.swapaxes(np.asarray(rows["mean2T"]), 1, 2)                   # (N, d'', 2d)
    S32, S3X = mean2[..., :d], mean2[..., d:]
    avg = lambda mean, mxv: np.minimum(mxv, lam_t * mean)  # noqa: E731
    err_avg = lambda mean, mxv: a * mean + b * avg(mean, mxv)  # noqa: E731

    def pair(cvec, mean, mxv):
        av = np.minimum(mxv[:, None], lam_t[..., None] * mean[:, None])      # (N, L, d'', d)
        return ((cvec[..., None] * av).sum(2),
                (cvec[..., None] * (a[..., None] * mean[:, None] + b[..., None] * av)).sum(2))

    Omag = avg(m3, mu3)
    eO = err_avg(m3, mu3) + e3
    ec = (eO + u * cmag) / (1 - u)
    cp = cmag + ec
    rmag = (cp * (Omag + eO)).sum(-1, keepdims=True)
    er = (cp * eO + ec * Omag).sum(-1, keepdims=True) + g(d + 1) * rmag
    rsum = lambda x, y: rows["row_weight"] * np.swapaxes(x, 1, 2) @ y  # noqa: E731
    max32 = np.swapaxes(mu3, 1, 2) * mu2
    mag_p1, rnd_p1 = pair(cp, S32, max32)
    ec_p1, _ = pair(ec, S32, max32)
    e3c, mu3c = np.swapaxes(e3, 1, 2)[:, None], np.swapaxes(mu3, 1, 2)[:, None]         # (N, 1, d'', 1)
    in_p1 = (cmag[..., None] * (e3c * mu2[:, :, None] + mu3c * e2[:, :, None])).sum(2)
    err_p1 = rnd_p1 + ec_p1 + in_p1
    F2, eF2 = avg(m2, mu2), err_avg(m2, mu2) + e2
    mag_p2 = rmag * (F2 + eF2)
    err_p2 = er * (F2 + eF2) + rmag * eF2 + u * mag_p2
    err_pc = err_p1 + err_p2 + u * (mag_p1 + err_p1 + mag_p2 + err_p2)
    mag_pc = mag_p1 + mag_p2
    beta, aX, aC1, e1 = rows["beta"], row("aX"), row("aC1"), row("e1")
    err = {"Q": beta * (rsum(aX, err_pc) + g(L + 2) * rsum(aX, mag_pc + err_pc))}
    mag = {"Q": beta * rsum(aX, mag_pc)}
    max3x = np.swapaxes(mu3, 1, 2) * mux
    q1, rq1 = pair(cp, S3X, max3x)
    qc, _ = pair(ec, S3X, max3x)
    Ax, eAx = avg(mx, mux), err_avg(mx, mux)
    q3 = (cmag * e3).sum(-1, keepdims=True) * Ax
    mag_k1 = rsum(q1, aC1)
    err_k1 = rsum(rq1 + qc + q3, aC1) + rsum(q1, e1)
    mag_k2 = rsum(rmag * Ax, aC1)
    err_k2 = rsum(rmag * eAx + er * Ax + u * rmag * Ax, aC1) + rsum(rmag * Ax, e1)
    err_pk = err_k1 + err_k2 + u * (mag_k1 + err_k1 + mag_k2 + err_k2)
    err["K"] = beta * (err_pk + g(L_kv + 2) * (mag_k1 + mag_k2 + err_pk))
    mag["K"] = beta * (mag_k1 + mag_k2)
    mag["V"] = rsum(Ax, cp)
    e_v = rsum(eAx, cp) + rsum(Ax, ec)
    err["V"] = e_v + g(L_kv + 1) * (mag["V"] + e_v)
    out_err = {m: e.sum(0) / N + g(N + 1) * (mag[m].sum(0) / N + e.sum(0) / N) for m, e in err.items()}
    return out_err, {m: v.sum(0) / N for m, v in mag.items()}


# cost: the dense (N, L, d, d) per-entry floor evaluation per example
@settings(deadline=None, max_examples=10)
@given(problems(max_L=48), st.integers(0, 8), st.booleans())
def test_staged_floor_equals_the_dense_per_entry_evaluation(problem, extra, exact):
    """Small row blocks (many blocks, runs of the capped products crossing them) and the dense
    (N, L, d, d) evaluation of the same formulas agree to float64 rounding."""
    seen = []
    fast = rounding.staged_floor
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cm, "CERTIFICATE_BLOCKS", blocks.BlockPolicy(budget_bytes=16 * 8, min_rows=5))
        mp.setattr(cm, "staged_floor", lambda *args: seen.append(args) or fast(*args))
        cert = cm.certify(problem)
        if exact:
            cert.exact_floor()
        else:
            R = cert.logit_bound
            cert.rounding_floor(exp_polynomial(R, degree=min_degree(R, 0.5) + extra))
    assume(seen)  # the floor was infinite before any stage (float rounding uncontrolled)
    assert len(cert._rows["chunks"]) == math.ceil(problem.L / max(5, 16 // (problem.N * problem.d)))
    got, want = fast(*seen[0]), _dense_staged_floor(*seen[0])
    for m in "QKV":
        for g_, w_ in zip((got[0][m], got[1][m]), (want[0][m], want[1][m]), strict=True):
            np.testing.assert_allclose(g_, w_, rtol=1e-12, atol=0)


def _permuted(p, perm_q, perm_kv):
    h = testing.host_inputs(p)
    sq = (lambda a: a) if p.batched else (lambda a: a[0])
    cross = p.Xkv3 is not p.X3
    X, Y = h["X"][:, perm_q], h["Y"][:, perm_q]
    Xkv = h["X_kv"][:, perm_kv] if cross else None
    return LoRAProblem(sq(X), sq(Y), h["W"], h["A"], h["B"], alpha=p.alpha, beta=p.beta,
                       X_kv=None if Xkv is None else sq(Xkv))


@pytest.mark.parametrize("block", [16, 64, None])
def test_certificate_is_invariant_under_row_order_and_blocking(monkeypatch, block):
    """The certificate sums over rows: reordering the queries (and the keys of a cross problem)
    and changing the row blocks change nothing beyond float64 rounding."""
    base = make_problem("gaussian", 90, 4, 2, R=3.0, adapt="QKV", N=2, cross=True, L_kv=70, seed=12)
    want = cm.certify(base)
    poly = exp_polynomial(want.logit_bound * (1 + 1e-12), degree=7)
    if block is not None:
        monkeypatch.setattr(cm, "CERTIFICATE_BLOCKS", blocks.BlockPolicy(budget_bytes=block * 8, min_rows=3))
    rng = np.random.default_rng(block or 0)
    got = cm.certify(_permuted(base, rng.permutation(90), rng.permutation(70)))
    for name in ("coefficients", "tight_coefficients"):
        for key, K in getattr(want, name).items():
            np.testing.assert_allclose(getattr(got, name)[key], K, rtol=1e-12)
    for f in (lambda c: c.rounding_floor(poly), lambda c: c.exact_floor()):
        a, b = f(got), f(want)
        for key in b:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-12)


def test_key_statistics_equal_direct_column_statistics():
    p = make_problem("residual", 70, 3, 2, R=2.0, adapt="QKV", N=2, cross=True, L_kv=53, seed=4)
    proj = cm.projections(p)
    ks = cm.key_statistics(np, proj)
    h = testing.host_inputs(p)
    W = {m: h["W"][m] + p.scale * h["B"][m] @ h["A"][m] for m in "KV"}
    M = {m: np.abs(h["W"][m]) + abs(p.scale) * np.abs(h["B"][m]) @ np.abs(h["A"][m]) for m in "KV"}
    g_in = cm.gamma(p.d + p.r + 4, 2.0**-53)
    Xkv = h["X_kv"]
    C2, C3 = Xkv @ W["K"], Xkv @ W["V"]
    E2, E3 = np.abs(Xkv) @ (g_in * M["K"]), np.abs(Xkv) @ (g_in * M["V"])
    dev3 = np.abs(C3 - C3.mean(1, keepdims=True)) + E3
    a2 = (dev3**2).sum(-1, keepdims=True)
    devK = np.abs(C2 - C2.mean(1, keepdims=True)) + E2
    col = lambda v: np.swapaxes(v, 1, 2)  # noqa: E731  (N, 1, d) -> (N, d, 1)
    want = {
        "lo3": col((C3 - E3).min(1, keepdims=True)), "hi3": col((C3 + E3).max(1, keepdims=True)),
        "w2": col(((C2 + E2).max(1, keepdims=True) - (C2 - E2).min(1, keepdims=True)) / 2),
        "mux": col(np.abs(Xkv).max(1, keepdims=True)), "s3sq": col((dev3**2).mean(1, keepdims=True)),
        "mean_a2": a2.mean(1, keepdims=True), "max_a2": a2.max(1, keepdims=True),
        "A1K": col(np.sqrt((a2 * devK**2).mean(1, keepdims=True))),
        "S32": np.swapaxes(np.abs(C3) + 2 * E3, 1, 2) @ (np.abs(C2) + 2 * E2) / 53,
        "mu2": col(np.abs(C2).max(1, keepdims=True) + 2 * E2.max(1, keepdims=True)),
    }
    for key, value in want.items():
        np.testing.assert_allclose(ks[key], value, rtol=1e-12, atol=1e-300, err_msg=key)


def test_kernel_depth_counts_every_rounding_of_a_term():
    """n = max(L, L_kv) + k + d + 2g + 8 (module docstring (b)): the additions (L - 1, k - 1, d - 1),
    2 (g + 2) in the two features and 5 products / divisions, with 2 to spare."""
    for L, L_kv, d, g in ((10, 7, 3, 0), (64, 100, 8, 4), (5, 5, 1, 40)):
        k = math.comb(d + g, g)
        per_term = (max(L, L_kv) - 1) + (k - 1) + (d - 1) + 2 * (g + 2) + 5
        assert rounding.kernel_depth(L, L_kv, d, g) == per_term + 2


def test_magnitude_certificate_past_float_range():
    """e^{2R} overflows for R > 354: the data-free certificate still builds (lam = inf makes every
    capped average its maximum), its exact-path floor is finite, and no polynomial certifies."""
    kw = {"L": 100, "L_kv": 100, "d": 4, "r": 2, "N": 1, "adapt": "QV", "beta": 0.5, "scale": 2.0,
          "input_bound": 1.0, "value_bound": 1.0, "target_bound": 1.0, "query_bound": 20.0, "key_bound": 20.0,
          "adapter_bound": 0.5}
    far = cm.magnitude_certificate(**kw, logit_bound=400.0)
    near = cm.magnitude_certificate(**kw, logit_bound=300.0)
    for key, v in far.exact_bound().items():
        assert 0 < v < math.inf and v >= near.exact_bound()[key]
    assert all(math.isinf(v) for v in far.bound(exp_polynomial(256.0, degree=60)).values())
