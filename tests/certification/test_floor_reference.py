"""The certified floors against a higher-precision reference, and instances on which the bounds are
(nearly) attained.

Each test here is there to fail: it kills a scripted mutant of `lora_proofcheck.testing.mutation`
(a floor or a coefficient shrunk) that the one-sided property tests elsewhere let through, because
those only ever see errors far below the bound. The reference is the exact formulas in long double
(80-bit; 40-digit mpmath where long double is float64), with its own rounding allowance
(`oracles.allowance_for`) added to the measured error: torch float64 is not more precise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, note, settings, target

from lora_proofcheck.certification import adaptive as ad
from lora_proofcheck.certification import certificate as cm
from lora_proofcheck.certification import rounding
from lora_proofcheck.certification.polynomial import exp_polynomial, min_degree
from lora_proofcheck.gradients.exact_path import exact_gradients, lora_factor_gradients
from lora_proofcheck.gradients.lowrank_path import lowrank_weight_gradients
from lora_proofcheck.testing import (
    allowance_for,
    dense_gradients,
    dense_reference,
    make_problem,
    max_abs_diff,
    oracles,
    upcast,
)
from lora_proofcheck.testing.instances import attained_problem, imbalanced
from lora_proofcheck.testing.strategies import problems, record_ratio

REF = "longdouble" if oracles.LONGDOUBLE_EXTENDED else "mpmath"

#: the cap as the certificate docstring defines it ("Second moments ... valid for delta <= DELTA_CAP =
#: 2^-6", PHI := (1+delta)/(1-delta) <= PHI_CAP), restated here, not read from `rounding`: the tight K
#: and the delta at which the certificate switches to it are checked against these documented values
DOC_DELTA_CAP = 2.0**-6
DOC_PHI_CAP = (1 + DOC_DELTA_CAP) / (1 - DOC_DELTA_CAP)


def exact_path_ratio(p) -> float:
    """max over keys of (|exact path - reference| + the reference's allowance) / certified floor,
    for each floor that covers p (global: softmax only; adaptive: softmax and Softmax_1)."""
    ref = dense_reference(p, REF)
    measured = max_abs_diff(exact_gradients(p), ref, REF)
    p64 = upcast(p)
    allow = allowance_for(REF, ad.certify_adaptive(p64).exact_bound(p64))
    floors = [ad.certify_adaptive(p).exact_bound(p)]
    if not p.normalizer_offset:
        floors.append(cm.certify(p).exact_bound())
    return max((measured[k] + allow[k]) / f[k] for f in floors for k in measured)


# the worst instances of a search (L <= 3, d = 1, aligned / edge / residual, 25 seeds each): the exact
# path's error reaches ~0.1 of its floor there (softmax; ~0.03-0.05 for Softmax_1), ~0.015 at L = 24
WORST_EXACT = [
    make_problem("aligned", 2, 1, 1, R=0.1, adapt="V", seed=0),
    make_problem("edge", 2, 1, 1, R=0.1, adapt="V", seed=10, dtype="float32"),
    make_problem("aligned", 2, 1, 1, R=0.1, adapt="V", seed=0, normalizer_offset=1.0),
    make_problem("edge", 2, 1, 1, R=0.1, adapt="V", seed=10, dtype="float32", normalizer_offset=1.0),
]
WORST_IDS = ["float64", "float32", "softmax1-float64", "softmax1-float32"]


@settings(deadline=None)
@given(problems(max_L=24, max_d=4, ranks=(1, 2), dtypes=("float64", "float32"), imbalance=6, offsets=(0.0, 1.0)))
@example(WORST_EXACT[0])
@example(WORST_EXACT[1])
@example(imbalanced(make_problem("edge", 24, 4, 2, R=6.0, adapt="QKV", seed=3, dtype="float32"), 2.0**-6))
def test_exact_path_within_its_floor_of_a_higher_precision_reference(p):
    """float64 and float32 exact path, softmax and Softmax_1, q/k imbalance and logits at +-R: the
    error against the high-precision reference never exceeds the certified floor."""
    ratio = exact_path_ratio(p)
    note(f"measured/floor = {ratio:.3g}")
    target(ratio, label=f"exact path {p.dtype_name}: measured/floor")
    record_ratio(ratio, "exact-floor", problem=p)
    assert ratio <= 1.0


def _worst_of_search(dtype, offset):
    """The largest measured/floor over the search the instances above came from (L in 2, 3, d = 1,
    aligned / edge / residual, 25 seeds each): rerun here, since which seed rounds worst depends on
    the platform's float32 exp and sums (NumPy 2.4 moved one instance from 0.05 to 0.003)."""
    ratios = [exact_path_ratio(make_problem(fam, L, 1, 1, R=0.1, adapt="V", seed=seed, dtype=dtype,
                                            normalizer_offset=offset))
              for fam in ("aligned", "edge", "residual") for L in (2, 3) for seed in range(25)]
    return max(ratios)


@pytest.mark.parametrize("dtype,offset", [("float64", 0.0), ("float32", 0.0), ("float64", 1.0), ("float32", 1.0)],
                         ids=WORST_IDS)
def test_exact_floor_is_within_a_factor_fifty_of_attained(dtype, offset):
    """Kills a floor shrunk by 0.01 (global and Softmax_1 floor alike) without relying on the draws
    above, and a vacuous one (< 1/50 attained): the search's worst instance (0.04-0.1 here)."""
    assert 0.02 < _worst_of_search(dtype, offset) <= 1.0


def test_exact_floor_is_the_documented_formula(monkeypatch):
    """The exact floor is what its proof covers (certificate docstring (a)-(c)): rows (a, b) =
    (0, gamma_{2 max(L, L_kv) + d + 8}) through `staged_floor`, the consistent part kappa(delta'_e)
    K with delta'_e = e^(sigma + gamma_{d+1} R + 2 u R)(1 + 8u) - 1, the chain gamma_{d+2}, the
    margin. No measurement shows a floor shrunk by a factor 2 (errors stay below ~0.1 of it), so
    its value is checked against the formula, recomputed here from the same staged sums."""
    seen = []
    fast = rounding.staged_floor
    monkeypatch.setattr(cm, "staged_floor", lambda *a, **k: seen.append((a, fast(*a, **k))) or seen[-1][1])
    for dtype in ("float64", "float32"):
        p = make_problem("gaussian", 9, 3, 2, R=2.0, adapt="QKV", cross=True, L_kv=13, seed=7, dtype=dtype)
        cert = cm.certify(p)
        seen.clear()
        floor = cert.exact_floor()
        (args, (err, mag)), = seen
        u = float(np.finfo(dtype).eps) / 2                # not rounding.unit_roundoff: that is under test
        assert rounding.unit_roundoff(dtype) == u
        gamma = lambda n: n * u / (1 - n * u)  # noqa: E731   Higham's gamma_n, not rounding.gamma
        (_, b_row), = set(args[1])
        assert math.isclose(b_row, gamma(2 * 13 + 3 + 8), rel_tol=1e-14) and len(args[1]) == len(cert._rows["chunks"])
        dprime = math.exp(cert.sigma + gamma(4) * cert.logit_bound + 2 * u * cert.logit_bound) * (1 + 8 * u) - 1
        assert math.isclose(args[-1], dprime, rel_tol=1e-14)
        chain = gamma(5)
        for m in p.adapted:
            total = cm.kappa_of(dprime) * cert.weight_coefficients_for(dprime)[m] + err[m]
            bt, at = cert._chain[m]
            want_a = (bt @ total + chain * (bt @ (mag[m] + err[m]))) * cm.MARGIN
            want_b = (total @ at + chain * ((mag[m] + err[m]) @ at)) * cm.MARGIN
            np.testing.assert_allclose(floor[f"A_{m}"], want_a, rtol=1e-13)
            np.testing.assert_allclose(floor[f"B_{m}"], want_b, rtol=1e-13)


def test_adaptive_depths_are_the_documented_formula():
    """(R4) of certification/adaptive.py: D(n) = (min(rows, n) - 1) + summation_depth(ceil(n / rows))
    (n - 1 in one chunk) and n_term = max(D(L), D(L_kv)) + (k - 1) + (d - 1) + 2 (g + 7) + 7 (+ 1 with
    the sink). No float measurement reaches the k - 1 part (the contraction's errors cancel like a
    random walk: mutant adaptive-depth-dropped-k), so the depth is checked against the formula."""
    def tree(m):  # ceil(log2 m): the depth of the pairwise sum of m partial sums (_lib.blocks.add_grouped)
        return 0 if m <= 1 else math.ceil(math.log2(m))

    for L, L_kv, offset in ((37, 37, 0.0), (9, 70, 0.0), (40, 40, 1.0)):
        p = make_problem("gaussian", L, 3, 2, R=2.0, adapt="QKV", cross=L != L_kv, L_kv=L_kv, seed=2,
                         normalizer_offset=offset)
        cert = ad.certify_adaptive(p)
        for g, rows in ((3, None), (4, 8), (6, 16)):
            D = (lambda n: n - 1) if rows is None else (lambda n: min(rows, n) - 1 + tree(-(-n // rows)))
            k = math.comb(3 + g, g)
            want = max(D(L), D(L_kv)) + (k - 1) + (3 - 1) + 2 * (g + 7) + 7 + (offset > 0)
            got = cert.depths(g, rows)
            assert (got["q"], got["kv"], got["k"], got["term"]) == (D(L), D(L_kv), k - 1, want)


def test_softmax1_exact_bound_is_the_documented_formula(monkeypatch):
    """(S1) / `AdaptiveCertificate.exact_bound` with n > 0: kappa' sum_c K_general (kappa' = ((1 + dp)^2
    - 1) / 2 with dp = e^(sigma + gamma_{d+1} R + (u + 2^-52) |log n| + 4 u max(R, |log n|)) (1 + 8u) - 1)
    plus the staged floor of an explicit F (rows (0, gamma_{2 max(L, L_kv) + d + 9})) through the LoRA
    chain. Its staged part is swamped by kappa' K on every instance found (mutant
    adaptive-exact-staged-part-x0.01), so it is checked against the formula."""
    seen = []
    fast = rounding.staged_floor
    monkeypatch.setattr(ad, "staged_floor", lambda *a, **k: seen.append((a, fast(*a, **k))) or seen[-1][1])
    for dtype in ("float64", "float32"):
        p = make_problem("gaussian", 9, 3, 2, R=2.0, adapt="QKV", cross=True, L_kv=13, seed=7, dtype=dtype,
                         normalizer_offset=3.0)
        cert = ad.certify_adaptive(p)
        seen.clear()
        bound = cert.exact_bound(p)
        (args, (err, mag)), = seen
        u = float(np.finfo(dtype).eps) / 2
        gamma = lambda n: n * u / (1 - n * u)  # noqa: E731
        (_, b_row), = set(args[1])
        assert math.isclose(b_row, gamma(2 * 13 + 3 + 9), rel_tol=1e-14)
        R, sigma = cm.logit_enclosure(p)
        log_n = abs(math.log(3.0))
        dp = math.exp(sigma + gamma(4) * R + (u + 2.0**-52) * log_n + 4 * u * max(R, log_n)) * (1 + 8 * u) - 1
        kap = ((1 + dp) ** 2 - 1) / 2 * cm.MARGIN
        under = ad.underflow.exact_underflow(cert._maxima(), dtype)
        staged = cert._chained(err, mag, u, under)
        for k, v in staged.items():
            want = float(np.max(v + kap * np.sum(cert.K_general[k], axis=0)))
            assert math.isclose(bound[k], want, rel_tol=1e-13), k
            # the staged part is what this test guards: it must be a visible share of the bound here
            assert float(np.max(v)) > 1e-6 * want


# the low-rank path in float32 against the same polynomial in float64: rounding alone, which the two
# floors cover; these reach ~0.05 and ~0.04 of them (the hypothesis version in test_certificate.py
# stays below 0.01 on its CI draws)
WORST_LOWRANK = [
    (make_problem("aligned", 2, 1, 1, R=0.1, adapt="V", seed=0, dtype="float32"), 0),
    (make_problem("residual", 4, 1, 1, R=0.1, adapt="QKV", seed=0, dtype="float32"), 3),
]


@pytest.mark.parametrize("p32, extra", WORST_LOWRANK, ids=["degree-0", "degree-3"])
def test_lowrank_floor_is_nearly_attained_and_holds(p32, extra):
    p64 = upcast(p32)
    c32, c64 = cm.certify(p32), cm.certify(p64)
    R = max(c32.logit_bound, c64.logit_bound)
    poly = exp_polynomial(R, degree=min_degree(R, 0.5) + extra)
    f32, f64 = c32.rounding_floor(poly), c64.rounding_floor(poly)
    got = {}
    for p in (p32, p64):
        _, dW = lowrank_weight_gradients(p, poly, "".join(p.adapted))
        got[p.dtype_name] = {k: np.asarray(v, np.float64) for k, v in lora_factor_gradients(p, dW).items()}
    ratio = max(float(np.max(np.abs(got["float32"][k] - got["float64"][k]))) / float(np.max(f32[k] + f64[k]))
                for k in f32)
    assert 0.02 < ratio <= 1.0


@pytest.mark.parametrize("delta, logit, least", [(1e-3, 0.0, 0.99), (0.05, 0.0, 0.94), (0.5, -0.2747, 0.53)],
                         ids=["second-moment-K", "general-K", "kappa"])
def test_v_coefficient_is_attained(delta, logit, least):
    """`attained_problem`: measured/bound = 1 - O(delta) for dB_V with the second-moment K (delta
    <= DELTA_CAP) and the general K: kills any shrinking of either V coefficient by 0.85. At delta
    = 1/2 Lemma 1's kappa = delta/(1-delta) = 1 is what binds: weights (p, 1-p), p = 0.366 (logits
    -+0.2747), give ||DF_i||_1 = max_p 4 delta p(1-p)/(1 - delta + 2 delta p) = 0.536 > delta."""
    p = attained_problem(logit=logit)
    cert = cm.certify(p)
    assert cert.logit_bound == pytest.approx(abs(logit), rel=1e-8, abs=0)   # plus its rounding enclosure
    theta = np.array([[[delta, -delta]]])
    exact, got = dense_gradients(p), dense_gradients(p, theta=theta)
    floor = cert.exact_bound()
    bound = cert.approximation_bound(delta)["B_V"] + 2 * floor["B_V"]
    ratio = float(np.max(np.abs(got["B_V"] - exact["B_V"]))) / bound
    record_ratio(ratio, "attained-V", delta=delta)
    assert least < ratio <= 1.0


def _direct_general_K(p) -> dict:
    """The general K of the certificate docstring (steps c .. dW), dense from the float64 data, no
    input-rounding terms: psi_i = sum_b [2 c^_ib omega_b + omega_b (omega_b + c^_ib)], c^_ib =
    max(|lo_b - Y_ib|, |hi_b - Y_ib|) over the range of C3_b; K_Q = beta sum_i |X_ia| psi_i omega(C2_b),
    K_K = beta omega(X'_a) sum_i |C1_ib| psi_i, K_V = sum_i omega(X'_a) c^_ib + max|X'_a| omega(C3_b),
    averaged over the batch."""
    h = oracles.host_inputs(p)
    W = {m: h["W"][m] + p.scale * h["B"][m] @ h["A"][m] if m in h["A"] else h["W"][m] for m in "QKV"}
    X, Xkv, Y = h["X"], h["X_kv"], h["Y"]
    C1, C2, C3 = X @ W["Q"], Xkv @ W["K"], Xkv @ W["V"]
    omega = lambda C: (C.max(1) - C.min(1)) / 2  # noqa: E731   (N, d) half-range per column
    lo, hi = C3.min(1)[:, None, :], C3.max(1)[:, None, :]
    chat = np.maximum(np.abs(lo - Y), np.abs(hi - Y))                         # (N, L, d)
    w3 = omega(C3)[:, None, :]
    psi = np.sum(2 * chat * w3 + w3 * (w3 + chat), axis=-1)                  # (N, L)
    beta = abs(p.beta)
    K = {"Q": beta * np.einsum("nia,ni,nb->nab", np.abs(X), psi, omega(C2)),
         "K": beta * np.einsum("na,nib,ni->nab", omega(Xkv), np.abs(C1), psi),
         "V": np.einsum("na,nib->nab", omega(Xkv), chat)
         + p.L * np.einsum("na,nb->nab", np.abs(Xkv).max(1), omega(C3))}
    return {m: K[m].mean(0) for m in p.adapted}


@settings(deadline=None)
@given(problems(max_L=24, max_d=4, imbalance=4))
def test_general_coefficients_are_the_documented_formulas(p):
    """certify's blocked, regrouped K (psi's slope and constant read off symbolically, V_TERM summed
    over rows first) equals the docstring's formulas evaluated densely; only the input rounding
    enclosures (relative ~1e-15) separate them. Kills a shrunk Q, K or V coefficient, psi or t_ib."""
    got = cm.certify(p).weight_coefficients
    for m, want in _direct_general_K(p).items():
        np.testing.assert_allclose(got[m], want, rtol=1e-9, atol=1e-300)


def _direct_tight_K(p, cert, phi_cap: float = DOC_PHI_CAP) -> dict:
    """The second-moment K (certificate docstring, "Second moments"), dense per row, from the float64
    data: lam_i = e^(R_i - M_i) (R_i = beta ||C1_i|| max_{n,j} ||C2_j||, M_i the mean logit less sigma,
    >= -R_i), lam~ = PHI_CAP lam (PHI_CAP the documented (1 + 2^-6)/(1 - 2^-6) unless given), a_j = ||C3_j - m3||, rho_i = min(sqrt(lam_i mean a^2), max a),
    ||c_i|| <= min(rho_i + ||m3 - Y_i||, ||c^_i||), each row term the smaller of its two bounds."""
    h = oracles.host_inputs(p)
    W = {m: h["W"][m] + p.scale * h["B"][m] @ h["A"][m] if m in h["A"] else h["W"][m] for m in "QKV"}
    X, Xkv, Y = h["X"], h["X_kv"], h["Y"]
    C1, C2, C3 = X @ W["Q"], Xkv @ W["K"], Xkv @ W["V"]
    beta = abs(p.beta)
    n1, n2 = np.linalg.norm(C1, axis=-1), np.linalg.norm(C2, axis=-1)          # (N, L), (N, L_kv)
    Ri = beta * n1 * n2.max()                   # the largest key norm over the whole batch
    Mi = np.maximum(p.beta * np.einsum("nib,nb->ni", C1, C2.mean(1)) - cert.sigma, -Ri)
    sl = np.sqrt(np.exp(Ri - Mi))[..., None]                                  # (N, L, 1)
    slt = math.sqrt(phi_cap) * sl
    m3 = C3.mean(1, keepdims=True)
    a2 = np.sum((C3 - m3) ** 2, axis=-1)                                       # (N, L_kv)
    rho = np.minimum(sl * np.sqrt(a2.mean(-1))[:, None, None], np.sqrt(a2.max(-1))[:, None, None])
    lo, hi = C3.min(1)[:, None, :], C3.max(1)[:, None, :]
    chat = np.maximum(np.abs(lo - Y), np.abs(hi - Y))
    w = lambda C: (C.max(1) - C.min(1))[:, None, :] / 2  # noqa: E731
    w3, w2, wx = w(C3), w(C2), w(Xkv)
    psi = np.sum(2 * chat * w3 + w3 * (w3 + chat), axis=-1, keepdims=True)
    cn = np.minimum(rho + np.linalg.norm(m3 - Y, axis=-1, keepdims=True), np.linalg.norm(chat, axis=-1, keepdims=True))
    s3sq = ((C3 - m3) ** 2).mean(1)[:, None, :]
    sum_s3 = s3sq.sum(-1, keepdims=True)
    x1 = cn * sl
    x0 = x1 * rho + sl * slt**2 * sum_s3 + cn * sl * np.sqrt(sum_s3) * slt

    def rms(v):   # A0 = rms(v - mean v), A1 = rms(a (v - mean v)), per column
        dev = v - v.mean(1, keepdims=True)
        return np.sqrt((dev**2).mean(1))[:, None, :], np.sqrt((a2[..., None] * dev**2).mean(1))[:, None, :]

    (A0K, A1K), (A0x, A1x) = rms(C2), rms(Xkv)
    row_q = np.minimum(psi * w2, x1 * A1K + x0 * A0K)                          # (N, L, d_b)
    row_k = np.minimum(psi * wx, x1 * A1x + x0 * A0x)                          # (N, L, d_a)
    sd3 = sl * np.sqrt(s3sq)
    cabs = np.minimum(chat, sd3 + np.abs(m3 - Y))
    pp = np.minimum(wx, sl * np.sqrt(((Xkv - Xkv.mean(1, keepdims=True)) ** 2).mean(1))[:, None, :])
    qq = np.minimum(np.abs(Xkv).max(1)[:, None, :], slt * np.sqrt((Xkv**2).mean(1))[:, None, :])
    K = {"Q": beta * np.einsum("nia,nib->nab", np.abs(X), row_q),
         "K": beta * np.einsum("nia,nib->nab", row_k, np.abs(C1)),
         "V": np.einsum("nia,nib->nab", pp, cabs) + np.einsum("nia,nib->nab", qq, np.minimum(w3, sd3))}
    return {m: K[m].mean(0) for m in p.adapted}


@settings(deadline=None)
@given(problems(max_L=24, max_d=4, imbalance=4))
def test_second_moment_coefficients_are_the_documented_formulas(p):
    """The tight K (used for delta <= DELTA_CAP) against its docstring formulas, densely: kills a
    shrunk tight coefficient, a lam = e^(R - M) taken too small, a dropped PHI factor. The input
    rounding enclosures (and Mi's own rounding term) move it by a relative ~1e-12 at most."""
    cert = cm.certify(p)
    for m, want in _direct_tight_K(p, cert).items():
        np.testing.assert_allclose(cert.tight_weight_coefficients[m], want, rtol=1e-7, atol=1e-300)


def test_second_moment_coefficients_hold_up_to_the_documented_cap():
    """The tight K and where it is used, against the documented cap (DOC_DELTA_CAP = 2^-6, PHI_CAP =
    (1 + 2^-6)/(1 - 2^-6)) on a fixed Gaussian problem on which the PHI factor moves the tight K by
    ~1%: `certify`'s tight K is the docstring formula at that PHI_CAP, `coefficients_for` returns it
    up to delta = 2^-6 and the general K just above. Kills a cap moved either way (a wider one also
    inflates lam~ = PHI_CAP lam, by ~20% here: the derivation itself holds for any cap, since
    PHI_CAP follows it, so the mutant is a departure from the documented certificate, not an
    unsound one, and no measured error can exceed its bound)."""
    p = make_problem("gaussian", 12, 4, 2, R=0.5, seed=3)
    cert = cm.certify(p)
    want, no_phi = _direct_tight_K(p, cert), _direct_tight_K(p, cert, phi_cap=1.0)
    for m in p.adapted:
        np.testing.assert_allclose(cert.tight_weight_coefficients[m], want[m], rtol=1e-7, atol=1e-300)
    assert max(float(np.max(np.abs(want[m] - no_phi[m]) / want[m])) for m in want) > 1e-3   # PHI visible
    above = math.nextafter(DOC_DELTA_CAP, 1.0)
    assert cert.coefficients_for(DOC_DELTA_CAP) is cert.tight_coefficients
    assert cert.weight_coefficients_for(DOC_DELTA_CAP) is cert.tight_weight_coefficients
    assert cert.coefficients_for(above) is cert.coefficients
    assert cert.weight_coefficients_for(above) is cert.weight_coefficients


@pytest.mark.parametrize("degree", [0, 2])
def test_adaptive_class_bound_is_attained(degree):
    """The row-adaptive certificate (approx_gradients' own) on `attained_problem` (logits +-0.05, one
    class): kernel ratios at the ends (B, A) of the class polynomial's certified ratio range give
    measured/bound > 0.99, which kills a class kappa or K_c shrunk by 0.85 or more."""
    p = attained_problem(logit=0.05)
    cert = ad.certify_adaptive(p)
    (cp,) = cert.class_polys(degree)
    bound = float(np.max(cert.approximation_bound(degree)["B_V"])) + 2 * cert.exact_bound(p)["B_V"]
    exact = dense_gradients(p)
    ratio = max(float(np.max(np.abs(dense_gradients(p, theta=np.array([[gam]]) - 1)["B_V"] - exact["B_V"]))) / bound
                for gam in ([cp.B, cp.A], [cp.A, cp.B]))
    record_ratio(ratio, "attained-adaptive", degree=degree)
    assert 0.99 < ratio <= 1.0
