"""The row-adaptive certificate (prototype): enclosures, Lemma 1's oscillation form, the per-class
chain against adversarial perturbations, the real plan kernel against the exact path, overflow.

Oracles: dense NumPy/PyTorch evaluations of the exact gradient formulas (test_certificate's
`dense_gradients`), the exact path in float64 with its own certified floor, np.longdouble for the
enclosure checks.  Nothing here uses the certificate to compute its own reference.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, note, settings, target
from hypothesis import strategies as st

from lora_proofcheck import testing
from lora_proofcheck._lib import xp as _xp
from lora_proofcheck._lib.blocks import add_grouped, summation_depth
from lora_proofcheck.certification import adaptive as ad
from lora_proofcheck.certification import certificate as cm
from lora_proofcheck.certification import geometry as geo_mod
from lora_proofcheck.certification import underflow
from lora_proofcheck.derivations import adaptive_proofs as proofs
from lora_proofcheck.gradients.exact_path import exact_gradients, lora_factor_gradients
from lora_proofcheck.gradients.lowrank_path import chunk_rows, plan_weight_gradients
from lora_proofcheck.kernels.features import feature_rank
from lora_proofcheck.problem import LoRAProblem
from lora_proofcheck.testing import FAMILIES, dense_gradients, make_problem, upcast
from lora_proofcheck.testing.strategies import record_ratio as record


def max_ratio(got: dict, want: dict, bound: dict) -> float:
    return max(float(np.max(np.abs(got[k] - want[k]))) / bound[k] for k in want)


def imbalanced(p: LoRAProblem, e: int) -> LoRAProblem:
    """The same logits with W_Q (and B_Q) scaled by 2^e and W_K (and B_K) by 2^-e: q^m and k^m of the
    unbalanced features differ by 2^(2 e t)."""
    h = testing.host_inputs(p)
    W, B = dict(h["W"]), dict(h["B"])
    for m, f in (("Q", 2.0**e), ("K", 2.0**-e)):
        W[m] = W[m] * f
        if m in B:
            B[m] = B[m] * f
    dt = np.float32 if p.dtype_name == "float32" else np.float64
    sq = (lambda a: a) if p.batched else (lambda a: a[0])
    c = lambda a: np.asarray(a, dtype=dt)  # noqa: E731
    return LoRAProblem(c(sq(h["X"])), c(sq(h["Y"])), {m: c(w) for m, w in W.items()},
                       {m: c(a) for m, a in h["A"].items()}, {m: c(b) for m, b in B.items()},
                       alpha=p.alpha, beta=p.beta, X_kv=None if p.Xkv3 is p.X3 else c(sq(h["X_kv"])),
                       normalizer_offset=p.normalizer_offset)


@st.composite
def problems(draw, max_L=48, dtypes=("float64", "float32"), max_R=4.0):
    family = draw(st.sampled_from(FAMILIES))
    d = draw(st.integers(1, 5))
    L = draw(st.integers(2, max_L))
    cross = draw(st.booleans())
    L_kv = draw(st.integers(2, max_L)) if cross else None
    adapt = draw(st.sampled_from(["Q", "QV", "QK", "QKV", "V", "K"]))
    N = draw(st.integers(1, 3))
    R = draw(st.floats(0.05, max_R))
    seed = draw(st.integers(0, 2**32 - 1))
    dtype = draw(st.sampled_from(dtypes))
    e = draw(st.sampled_from([0, 0, 3, -5, 12]))
    n = draw(st.sampled_from([0.0, 0.0, 0.0, 0.5, 1.0, 30.0]))  # softmax, or Softmax_1 (S1)
    note(f"{family} L={L} L_kv={L_kv} d={d} adapt={adapt} N={N} R={R:.3g} seed={seed} {dtype} imbalance=2^{e} n={n}")
    p = make_problem(family, L, d, 2, R=R, adapt=adapt, N=N, cross=cross, L_kv=L_kv, seed=seed, dtype=dtype,
                     normalizer_offset=n)
    return imbalanced(p, e) if e else p


# ----------------------------------------------------------------------------------------------
# the identities (SymPy) and their negative controls


@pytest.mark.parametrize("name", sorted(proofs.PROOFS))
def test_identities_hold(name):
    assert proofs.PROOFS[name]() is True


def test_centring_proof_rejects_the_wrong_weight_sign():
    with pytest.raises(AssertionError):
        proofs.centring(weight_sign=-1)


# ----------------------------------------------------------------------------------------------
# the enclosures of geometry.py, against the kernel's own float vectors in long double


def _kernel_vectors(p: LoRAProblem, geo):
    """The centred, balanced vectors exactly as plan_weight_gradients forms them (in the dtype)."""
    W = p.weights()
    dt = np.float32 if p.dtype_name == "float32" else np.float64
    s = geo.s.astype(dt)[:, None, None]
    Q = p.beta * (p.X3 @ W["Q"])
    Qc = (Q - geo.n.astype(dt)) / s
    Kc = (p.Xkv3 @ W["K"] - geo.m.astype(dt)) * s
    return np.asarray(Qc), np.asarray(Kc)


@settings(deadline=None)
@given(problems())
def test_geometry_enclosures_hold(p):
    proj = cm.projections(p)
    sink = bool(p.normalizer_offset)
    geo = geo_mod.geometry(p, proj, centre_queries=not sink, centre_keys=not sink)
    Qc, Kc = _kernel_vectors(p, geo)
    ld = np.longdouble
    xh = np.einsum("nid,njd->nij", Qc.astype(ld), Kc.astype(ld))                 # the kernel's x^ (exact-ish)
    h = testing.host_inputs(p)
    Wx = {m: h["W"][m].astype(ld) + ld(p.scale) * h["B"][m].astype(ld) @ h["A"][m].astype(ld)
          if m in h["A"] else h["W"][m].astype(ld) for m in "QK"}
    q = ld(p.beta) * h["X"].astype(ld) @ Wx["Q"]
    k = h["X_kv"].astype(ld) @ Wx["K"]
    kp = k - geo.m.astype(ld)
    x = np.einsum("nid,njd->nij", q - geo.n.astype(ld), kp)                     # exact centred logits
    slack = lambda v: v * (1 + 1e-12) + 1e-300  # noqa: E731  the test's own long-double rounding
    rhoP, sigma = np.asarray(geo.rhoP), np.asarray(geo.sigma)
    assert np.all(np.abs(xh).max(-1) <= slack(rhoP))
    assert np.all(np.abs(xh - x).max(-1) <= slack(sigma))
    assert np.all(np.asarray(geo.class_radius)[np.asarray(geo.cls)] >= rhoP)
    S = np.einsum("nid,njd->nij", q, kp)
    assert np.all(np.abs(S).max(-1) <= slack(np.asarray(geo.rhoF)))
    assert np.all(S.mean(-1) >= np.asarray(geo.Mlam) - 1e-12 * np.abs(S).max() - 1e-300)
    absdot = np.einsum("nid,njd->nij", np.abs(Qc).astype(ld), np.abs(Kc).astype(ld))
    assert np.all(absdot.max(-1) <= slack(np.asarray(geo.rabs)))
    w = np.ones(kp.shape[:2], dtype=ld) if geo.weights is None else geo.weights.astype(ld)
    if geo.weights is not None:
        assert np.all(w > 0) and np.all(w <= 1)
        lw = np.einsum("njd,nd->nj", kp, geo.n[:, 0, :].astype(ld))
        dev = np.log(w) - lw
        assert float(np.max(dev.max(-1) - dev.min(-1))) <= 2 * geo.tau * (1 + 1e-9) + 1e-15
    mean_x = np.einsum("nij,nj->ni", xh, w) / w.sum(-1)[:, None]
    assert np.all(mean_x >= np.asarray(geo.Mfl) - 1e-12 * np.abs(xh).max() - 1e-300)
    # the ellipsoid is no worse than Cauchy-Schwarz on the certificate's vectors
    target(float(np.max(np.abs(xh).max(-1) / np.maximum(rhoP, 1e-300))), label="|x^| / rhoP")


# ----------------------------------------------------------------------------------------------
# Lemma 1 in the oscillation form (R2)


@st.composite
def ratio_perturbations(draw):
    L_kv = draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    e = np.exp(draw(st.floats(0, 20)) * rng.uniform(-1, 1, L_kv))
    A = draw(st.floats(1e-3, 1.0))
    B = A * (1 + draw(st.floats(1e-9, 3.0)))
    pattern = draw(st.sampled_from(["two-point", "random", "split"]))
    if pattern == "two-point":
        g = np.where(rng.uniform(size=L_kv) < draw(st.floats(0, 1)), A, B)
    elif pattern == "split":
        g = np.where(np.arange(L_kv) < L_kv // 2, A, B)
    else:
        g = rng.uniform(A, B, L_kv)
    return e, g, A, B


@given(ratio_perturbations())
def test_lemma1_oscillation_form(case):
    e, g, A, B = case
    F, Ft = e / e.sum(), e * g / (e * g).sum()
    assert np.abs(Ft - F).sum() <= (B - A) / (2 * A) * (1 + 1e-9) + 1e-15
    assert np.all(Ft <= F * B / A * (1 + 1e-12) + 1e-300)


def test_lemma1_oscillation_form_is_attained():
    """Two keys of equal weight, gamma = (A, B): ||dF||_1 = (B - A)/(A + B) -> (B - A)/(2A) as B -> A."""
    A, B = 1.0, 1.0 + 1e-6
    e = np.ones(2)
    g = np.array([A, B])
    dF = np.abs(e * g / (e * g).sum() - 0.5).sum()
    assert dF == pytest.approx((B - A) / (A + B), rel=1e-9)
    assert dF >= 0.999 * (B - A) / (2 * A)


# ----------------------------------------------------------------------------------------------
# the per-class chain (R3): ANY gamma_ij in [A'_c, B'_c], first-order worst case by autograd


@settings(deadline=None)
@given(problems(max_L=32, dtypes=("float64",)), st.integers(0, 6), st.data())
@example(imbalanced(make_problem("aligned", 24, 3, 2, R=1.0, seed=1), 0), 3, None)
def test_any_ratio_perturbation_within_the_class_bound(p, degree, data):
    torch = pytest.importorskip("torch")
    cert = ad.certify_adaptive(p)
    bound = cert.approximation_bound(degree)
    cps = cert.class_polys(degree)
    if data is None:
        key = sorted(bound)[0]
    else:
        key = data.draw(st.sampled_from(sorted(bound)))
    if not all(math.isfinite(float(np.max(v))) for v in bound.values()):
        note("a class has no positive ratio range (p may vanish): infinite bound, no claim")
        return
    cls = np.asarray(cert.geo.cls)
    lo = np.array([c.A for c in cps])[cls][..., None] * np.ones((1, 1, p.L_kv))
    hi = np.array([c.B for c in cps])[cls][..., None] * np.ones((1, 1, p.L_kv))
    K = bound[key]
    entry = np.unravel_index(int(np.argmax(K)), K.shape)
    th = torch.zeros((p.N, p.L, p.L_kv), dtype=torch.float64, requires_grad=True)
    dense_gradients(p, theta=th, lib=torch)[key][entry].backward()
    gam = np.where(th.grad.numpy() >= 0, hi, lo)
    got = dense_gradients(p, theta=gam - 1)
    exact = dense_gradients(p)
    floor = cert.exact_bound(p)
    ratio = max_ratio(got, exact, {k: float(np.max(v)) + 2 * floor[k] for k, v in bound.items()})
    note(f"key={key} g={degree} ratio={ratio:.3g}")
    target(ratio, label="adaptive: adversarial gamma measured/bound")
    record(ratio, "adaptive-theta")
    assert ratio <= 1.0


# ----------------------------------------------------------------------------------------------
# the real kernel of the plan, against the exact path in float64


def reference(p):
    p64 = upcast(p)
    ref = {k: np.asarray(_xp.to_numpy(v), np.float64) for k, v in exact_gradients(p64).items()}
    return ref, ad.certify_adaptive(p64).exact_bound(p64)


def run_plan(p, cert, degree):
    plan = cert.feature_plan(degree)
    assert plan.overflow_free, plan.reason
    _, dW = plan_weight_gradients(p, plan, "".join(p.adapted))
    g = lora_factor_gradients(p, dW)
    return {k: np.asarray(_xp.to_numpy(v), np.float64) for k, v in g.items()}


@settings(deadline=None)
@given(problems(max_L=96), st.integers(0, 9))
@example(make_problem("residual", 80, 4, 2, R=1.0, adapt="QKV", N=2, cross=True, L_kv=33, seed=5), 5)
@example(imbalanced(make_problem("concentrated", 64, 2, 1, R=3.0, adapt="QV", seed=1, dtype="float32"), 12), 7)
def test_plan_kernel_within_certified_bound(p, degree):
    cert = ad.certify_adaptive(p)
    rows = chunk_rows(p, feature_rank(p.d, degree))
    bound, floor = cert.bound_and_floor(degree, chunk_rows=rows)
    if not math.isfinite(max(bound.values())):
        note("no finite bound (rounding uncontrolled): no claim")
        return
    got = run_plan(p, cert, degree)
    ref, allowance = reference(p)
    assert all(np.all(np.isfinite(v)) for v in got.values())
    ratio = max(float(np.max(np.abs(got[k] - ref[k]))) / (bound[k] + allowance[k]) for k in ref)
    note(f"g={degree} ratio={ratio:.3g} floor share {max(floor[k] / bound[k] for k in ref):.2f}")
    target(ratio, label=f"adaptive kernel {p.dtype_name}: measured/bound")
    record(ratio, f"adaptive-kernel-{p.dtype_name}", degree=degree)
    assert ratio <= 1.0


def test_chunked_floor_matches_small_chunks():
    """Forcing many small chunks (deep chunk-sum trees) keeps the kernel within its own floor."""
    p = make_problem("gaussian", 300, 3, 2, R=2.0, adapt="QKV", seed=4, dtype="float32")
    cert = ad.certify_adaptive(p)
    plan = cert.feature_plan(6)
    ref, allowance = reference(p)
    for rows in (7, 64, 300):
        bound, _ = cert.bound_and_floor(6, chunk_rows=rows)
        _, dW = plan_weight_gradients(p, plan, "QKV", chunk_rows=rows)
        got = lora_factor_gradients(p, dW)
        for k in ref:
            assert float(np.max(np.abs(np.asarray(got[k], np.float64) - ref[k]))) <= bound[k] + allowance[k]


# ----------------------------------------------------------------------------------------------
# the summation tree the floor counts


class Depth:
    """A value that records how many additions it went through (max over its leaves)."""

    def __init__(self, n=0):
        self.n = n

    def __add__(self, other):
        return Depth(max(self.n, other.n) + 1)


@pytest.mark.parametrize("n_chunks", [1, 2, 3, 4, 7, 16, 17, 100, 257, 1000])
def test_summation_depth_is_the_depth_of_add_grouped(n_chunks):
    total = add_grouped(({"x": Depth()} for _ in range(n_chunks)), n_chunks)
    assert total["x"].n == summation_depth(n_chunks)
    assert summation_depth(n_chunks) <= 2 * math.isqrt(n_chunks) + 1


# ----------------------------------------------------------------------------------------------
# issue 11 item 3: exponent-imbalanced queries and keys


def _issue11_float32():
    rng = np.random.default_rng(0)
    X = rng.uniform(0.5, 1.0, (8, 1)).astype(np.float32)
    W = {"Q": np.array([[400.0]], np.float32), "K": np.array([[0.015]], np.float32),
         "V": np.array([[1.0]], np.float32)}
    A, B = {"V": np.array([[0.1]], np.float32)}, {"V": np.array([[0.1]], np.float32)}
    return LoRAProblem(X, rng.standard_normal((8, 1)).astype(np.float32), W, A, B, alpha=1.0, beta=1.0)


def _issue11_float64():
    rng = np.random.default_rng(0)
    X = rng.uniform(0.5, 1.0, (4096, 1))
    W = {"Q": np.array([[1e40]]), "K": np.array([[6e-40]]), "V": np.array([[1.0]])}
    A, B = {"V": np.array([[0.1]])}, {"V": np.array([[0.1]])}
    return LoRAProblem(X, rng.standard_normal((4096, 1)), W, A, B, alpha=1.0, beta=1.0)


@pytest.mark.parametrize("make, degree", [(_issue11_float32, 15), (_issue11_float64, 8)])
def test_imbalanced_features_stay_finite_and_within_the_bound(make, degree):
    p = make()
    cert = ad.certify_adaptive(p)
    plan = cert.feature_plan(degree)
    assert plan.overflow_free
    got = run_plan(p, cert, degree)
    assert all(np.all(np.isfinite(v)) for v in got.values())
    bound, _ = cert.bound_and_floor(degree, chunk_rows=chunk_rows(p, feature_rank(p.d, degree)))
    ref, allowance = reference(p)
    for k in ref:
        assert float(np.max(np.abs(got[k] - ref[k]))) <= bound[k] + allowance[k]


# ----------------------------------------------------------------------------------------------
# (R6) underflow: the absolute part of the floor


def _scaled(p: LoRAProblem, f: float) -> LoRAProblem:
    """The same problem with X, X' (and Y) scaled by f: the features' products and the chain's
    data products reach the subnormal range for tiny f."""
    h = testing.host_inputs(p)
    dt = np.float32 if p.dtype_name == "float32" else np.float64
    sq = (lambda a: a) if p.batched else (lambda a: a[0])
    c = lambda a: np.asarray(a, dtype=dt)  # noqa: E731
    return LoRAProblem(c(sq(h["X"]) * f), c(sq(h["Y"]) * f), {m: c(w) for m, w in h["W"].items()},
                       {m: c(a) for m, a in h["A"].items()}, {m: c(b) for m, b in h["B"].items()},
                       alpha=p.alpha, beta=p.beta, X_kv=None if not p.cross else c(sq(h["X_kv"]) * f))


def test_the_underflow_term_is_there_and_negligible_on_ordinary_data():
    p = make_problem("gaussian", 64, 3, 2, R=1.0, adapt="QKV", seed=2)
    cert = ad.certify_adaptive(p)
    under = cert._underflow(5, cert.class_polys(5))
    floor = cert.rounding_floor(5)
    assert all(0 < v < 1e-250 for v in under.values())
    assert all(float(np.max(floor[k])) > 1e200 * v for k, v in under.items() for k in [f"A_{k}"])
    assert underflow.eta("float32") == np.finfo(np.float32).smallest_subnormal


@pytest.mark.parametrize("dtype, f", [("float32", 1e-19), ("float32", 1e-22), ("float64", 1e-80), ("float64", 1e-160)])
def test_subnormal_products_stay_within_the_bound(dtype, f):
    """Inputs so small that the logits, the features' monomials and the chain's products underflow:
    the kernel's result is still within its certified bound (the floor's absolute part)."""
    p = _scaled(make_problem("gaussian", 48, 3, 2, R=1.0, adapt="QKV", seed=7, dtype=dtype), f)
    cert = ad.certify_adaptive(p)
    degree = 4
    bound, _ = cert.bound_and_floor(degree, chunk_rows=chunk_rows(p, feature_rank(p.d, degree)))
    assert all(math.isfinite(v) for v in bound.values())
    got = run_plan(p, cert, degree)
    ref, allowance = reference(p)
    for k in ref:
        assert float(np.max(np.abs(got[k] - ref[k]))) <= bound[k] + allowance[k]


# ----------------------------------------------------------------------------------------------
# (R4) the plan kernel's rounding floor on its own: float32 against the float64 upcast, same plan


def repeated_rows(L: int, d: int, seed: int, bits: int = 6) -> LoRAProblem:
    """float32, every query/key row the same vector and every target row the same: each sum over
    rows adds L equal terms, whose rounding errors (one direction per binade of the partial sums)
    add up instead of cancelling, so the kernel's float32 error comes near its floor.  All data on
    the grid 2^-bits (weights 2^-6), alpha = r = beta = 1: W + s B A, X W and the centred, balanced
    inputs are exact in float32 (checked by the test), so the logit rounding sigma is not exercised
    and the float32 - float64 difference is the floor's business alone."""
    rng = np.random.default_rng(seed)
    grid = lambda a, b=bits: (np.round(a * 2.0**b) / 2.0**b).astype(np.float32)  # noqa: E731
    X = np.tile(grid(rng.uniform(0.5, 1.0, d)), (L, 1))
    W = {m: grid(rng.uniform(-1.0, 1.0, (d, d)) / d, 6) for m in "QKV"}
    A = {m: grid(rng.uniform(-1.0, 1.0, (1, d)), 6) for m in "QKV"}
    B = {m: grid(rng.uniform(-1.0, 1.0, (d, 1)), 6) for m in "QKV"}
    Y = np.tile(grid(rng.uniform(-1.0, 1.0, d)), (L, 1))
    return LoRAProblem(X, Y, W, A, B, alpha=1.0, beta=1.0)


def _plan_grads(p: LoRAProblem, plan, rows: int) -> dict:
    _, dW = plan_weight_gradients(p, plan, "".join(p.adapted), chunk_rows=rows)
    return {k: np.asarray(_xp.to_numpy(v), np.float64) for k, v in lora_factor_gradients(p, dW).items()}


@settings(deadline=None)
@given(st.sampled_from([16, 64, 256]), st.integers(1, 4), st.integers(0, 2**32 - 1), st.integers(1, 4))
@example(256, 4, 2, 2)   # measured / floor ~ 0.09 (the floor x 0.01 must fail)
@example(256, 4, 3, 2)   # ~ 0.065
@example(256, 4, 0, 2)   # ~ 0.058
def test_plan_kernel_float32_rounding_within_its_floor(L, d, seed, degree):
    """|kernel(float32) - kernel(float64 upcast)| <= the float32 floor (R4) plus the float64 run's
    own floor, entrywise, for the SAME FeaturePlan (class polynomials, float32 coefficients, m, n,
    s): with exact kernel inputs the approximation part cancels, the difference is pure rounding."""
    p = repeated_rows(L, d, seed)
    p64 = upcast(p)
    cert = ad.certify_adaptive(p, centre_queries=False)
    rows = chunk_rows(p, feature_rank(d, degree))
    plan = cert.feature_plan(degree, chunk_rows=rows)
    assert plan.overflow_free, plan.reason
    for a32, a64 in zip(_kernel_vectors(p, cert.geo), _kernel_vectors(p64, cert.geo), strict=True):
        assert np.array_equal(a32.astype(np.float64), a64)          # exact inputs: no sigma part
    floor = cert.rounding_floor(degree, chunk_rows=rows)
    floor64 = ad.certify_adaptive(p64, centre_queries=False).rounding_floor(degree, chunk_rows=rows)
    g32, g64 = _plan_grads(p, plan, rows), _plan_grads(p64, plan, rows)
    ratio = max(float(np.max(np.abs(g32[k] - g64[k]) / (floor[k] + floor64[k]))) for k in floor)
    note(f"L={L} d={d} seed={seed} g={degree}: measured / floor {ratio:.3g}")
    target(ratio, label="adaptive kernel float32 vs float64: measured/floor")
    record(ratio, "adaptive-kernel-floor-float32", degree=degree)
    assert ratio <= 1.0
