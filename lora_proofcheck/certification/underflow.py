"""The absolute part of the rounding model: gradual underflow along both paths' kernels.

The floors (`rounding.staged_floor`, `adaptive.py` R4) use the relative model
fl(x op y) = (x op y)(1 + e), |e| <= u. With gradual underflow a product or a division obeys
instead fl(x op y) = (x op y)(1 + e) + z with |z| <= eta / 2 (eta the smallest subnormal;
Higham, Accuracy and Stability, 2nd ed., eq. (2.8)); additions and subtractions of floats stay
exact-or-relative (z = 0). This module bounds what the z's add to each dW entry, stage by stage of
the generated kernels (`kernels/_generated_lowrank.py`, `kernels/_generated_exact.py`), by
first-order propagation with every factor bounded by its largest magnitude:

    e(x y) <= e(x) |y|max + |x|max e(y) + e(x) e(y) + eta/2     (a product)
    e(sum of n terms) <= sum of the terms' e                     (no new z)
    e(x / a) <= (e(x) + |x / a|max e(a)) / a' + eta/2,  a >= a' > 0 (the perturbed divisor too)

The result is a scalar per gradient (the same for every entry), multiplied by SAFETY = 4 for the
relative roundings that act on the z's as they propagate ((1 + u)^n <= 2 while gamma_n <= 1/2,
which the floors already require) and for the second-order cross terms. It is crude by design:
in float64 it is of order 1e-300 times the chain's magnitudes, in float32 about 1e-45 times them,
far below the relative floors whenever those are finite; what matters is that it is there, so
that no certificate assumes underflow away. Everything is evaluated in mpmath (no overflow of
the bound itself) and rounded up.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np

__all__ = ["SAFETY", "eta", "lowrank_underflow", "exact_underflow", "factor_underflow"]

SAFETY = 4


def eta(dtype_name: str) -> float:
    """The smallest positive subnormal of the dtype."""
    return float(np.finfo(np.float32 if dtype_name == "float32" else np.float64).smallest_subnormal)


def _mp(x) -> mpmath.mpf:
    return mpmath.mpf(float(x))


def _float_up(x) -> float:
    """x as a float rounded up (inf past the float64 range)."""
    x = mpmath.mpf(x)
    if not mpmath.isfinite(x) or x > mpmath.mpf(np.finfo(np.float64).max):
        return math.inf
    return math.nextafter(float(x), math.inf) if x > 0 else 0.0


def _inputs(m: dict, h):
    """The kernel's own X W products: d products per entry, and the r + 1 of W = W* + s B A per
    weight, each entry of W multiplied by |X| (as `geometry.py` encloses Q and K)."""
    return 2 * h * m["d"] * (1 + (m["r"] + 1) * max(m["xq"], m["xk"], 1))


def lowrank_underflow(m: dict, dtype_name: str) -> dict | None:
    """{mu: bound on the underflow part of |dW_mu| error} of the low-rank row passes, or None when the
    perturbed normaliser could reach a' = alpha_min / 4 (then the certificate must refuse).

    `m` holds upper bounds (floats): d, r, k, g, L, L_kv, beta (|beta|), xq, xk (max |X|, |X'|),
    m1, m2, m3 (max |C1|, |C2|, |C3|), ymax, chat (max |c~|), U1max, U2max (max |features|),
    qg, kg (max(1, Qinf)^g, max(1, Kinf)^g), cmax (max(1, max |a_ct t!|)), and alpha_min (a lower
    bound of every row's normaliser in exact arithmetic)."""
    h = _mp(eta(dtype_name)) / 2
    d, k, g, L, L_kv = (_mp(m[n]) for n in ("d", "k", "g", "L", "L_kv"))
    beta, xq, xk, m1, m2, m3, ymax = (_mp(m[n]) for n in ("beta", "xq", "xk", "m1", "m2", "m3", "ymax"))
    U1, U2 = _mp(m["U1max"]), _mp(m["U2max"])
    e_in = _inputs(m, h)
    # the features: g - 1 monomial products (each later one multiplies the earlier z by <= Qinf),
    # sigma_m, the row coefficient (U1) or the weight (U2)
    e1 = 2 * h * (g + 2) * _mp(m["cmax"]) * _mp(m["qg"])
    e2 = 2 * h * (g + 2) * _mp(m["kg"])
    prod = lambda ex, mx, ey, my: ex * my + mx * ey + ex * ey + h  # noqa: E731
    # key moments: Z2 = [1 | C3 | C2 | C3 o C2], Vq = U2^T Z2 over the L_kv keys
    Z2 = max(1, m3, m2, m3 * m2)
    eZ2 = prod(e_in, m3, e_in, m2) + e_in
    Vq, eVq = L_kv * U2 * Z2, L_kv * prod(e2, U2, eZ2, Z2)
    # query pass: T = U1 Vq over k, alpha = T[:, :1] + n, Tn = T / alpha
    T, eT = k * U1 * Vq, k * prod(e1, U1, eVq, Vq)
    a_min = _mp(m["alpha_min"])
    if not (a_min > 0 and eT <= a_min / 4):
        return None
    a = a_min / 4                       # alpha~ >= alpha (1 - t) - eT >= alpha_min / 4 (t < 1/2)
    Tn = T / a
    eTn = (eT + Tn * eT) / a + h
    cm = Tn + ymax
    ec = eTn                            # c = O - Y
    rm, er = d * cm * Tn, d * prod(ec, cm, eTn, Tn)                  # r = sum_b c_b O_b
    p1m, ep1 = d * cm * Tn, d * prod(ec, cm, eTn, Tn)               # face_contract(c, Tn)
    epC2 = ep1 + prod(er, rm, eTn, Tn)                               # p1C2 - r FC2
    out = {"Q": beta * L * prod(0, xq, epC2, 0) + h}                 # beta X^T pC2 over L rows
    del p1m
    # Z1 = [c o C1 | r C1 | c] / alpha, Vk = U1^T Z1 over L, Tk = U2 Vk over k
    Zn = max(cm * m1, rm * m1, cm)
    eZn = max(prod(ec, cm, e_in, m1), prod(er, rm, e_in, m1), ec)
    Z1 = Zn / a
    eZ1 = (eZn + Z1 * eT) / a + h
    Vk, eVk = L * U1 * Z1, L * prod(e1, U1, eZ1, Z1)
    Tk, eTk = k * U2 * Vk, k * prod(e2, U2, eVk, Vk)
    epTC1 = d * prod(e_in, m3, eTk, Tk) + eTk                        # face_contract(C3, Tk) - Tk[...]
    out["K"] = beta * L_kv * prod(0, xk, epTC1, 0) + h               # beta X'^T pTC1 over L_kv rows
    out["V"] = L_kv * prod(0, xk, eTk, 0)                            # X'^T FTc
    return {mu: _float_up(SAFETY * (v + h)) for mu, v in out.items()}  # + the batch mean's division


def exact_underflow(m: dict, dtype_name: str) -> dict:
    """{mu: bound on the underflow part of |dW_mu| error} of the exact path's generated kernel
    (S = beta C1 C2^T, u = exp(S - m), alpha = sum u + e^(log n - m) >= 1, F = u / alpha, O = F C3,
    G = c C3^T, p = F o G - (sum F o G) F, then pC2, p^T C1, F^T c and the X products).
    `m` as in `lowrank_underflow` (k, g, U*, alpha_min unused)."""
    h = _mp(eta(dtype_name)) / 2
    d, L, L_kv = (_mp(m[n]) for n in ("d", "L", "L_kv"))
    beta, xq, xk, m1, m2, m3, ymax = (_mp(m[n]) for n in ("beta", "xq", "xk", "m1", "m2", "m3", "ymax"))
    e_in = _inputs(m, h)
    prod = lambda ex, mx, ey, my: ex * my + mx * ey + ex * ey + h  # noqa: E731
    eS = beta * d * prod(e_in, m1, e_in, m2) + h                     # an exponent error: relative on u
    eu = h + 2 * eS                                                  # exp(S - m) <= 1: z, and e^eS - 1
    ea = (L_kv + 1) * eu                                             # alpha >= 1, so alpha' >= 1/2
    eF = 2 * (eu + ea) + h                                           # F <= 1
    eO = L_kv * prod(eF, 1, e_in, m3)
    cm, ec = m3 + ymax, eO
    Gm, eG = d * cm * m3, d * prod(ec, cm, e_in, m3)
    ep1 = prod(eF, 1, eG, Gm)
    er = L_kv * ep1                                                  # r = sum_j p1_ij, |r| <= Gm
    ep = ep1 + prod(er, Gm, eF, 1)
    pm = 2 * Gm
    out = {"Q": beta * L * prod(0, xq, L_kv * prod(ep, pm, e_in, m2), 0) + h,
           "K": beta * L_kv * prod(0, xk, L * prod(ep, pm, e_in, m1), 0) + h,
           "V": L_kv * prod(0, xk, L * prod(eF, 1, ec, cm), 0)}
    return {mu: _float_up(SAFETY * (v + h)) for mu, v in out.items()}


def factor_underflow(e_dW: float, *, d: int, scale: float, other_max: float, dtype_name: str) -> float:
    """The LoRA chain dL/dA = s B^T dW (or dL/dB = s dW A^T): d products per entry and the scale,
    on top of dW's underflow part e_dW; `other_max` = max |B| (resp. |A|)."""
    h = _mp(eta(dtype_name)) / 2
    v = abs(_mp(scale)) * d * (_mp(other_max) * _mp(e_dW) + h) + h
    return _float_up(SAFETY * v)
