"""The data's geometry for the row-adaptive certificate .

Everything the certificate (`adaptive.py`) and the low-rank kernel (`lowrank.py`, `FeaturePlan`)
must agree on is decided HERE, once, from the float64 projections of `certificate.projections`:
the key centre m, the query centre n, the per-key weights w_j, the balance s, and per query row the
radius of its polynomial's interval. Per sample (batch index suppressed): q_i = beta C1_i (exact
queries), k_j = C2_j (exact keys), S_ij = q_i . k_j, F = softmax_rows(S).

(G1) KEY CENTRING, an identity (`adaptive_proofs.centring`, SymPy): for ANY vector m,
     S_ij = q_i.(k_j - m) + q_i.m and q_i.m does not depend on j; softmax is invariant under a
     shift of a row, so F = softmax_rows(q_i.(k_j - m)).  m is a float vector; nothing about its
     own rounding matters (the identity holds for every m).
(G2) QUERY CENTRING, an identity (same check): for ANY vectors n and any constant c,
     q_i.(k_j - m) = (q_i - n).(k_j - m) + n.(k_j - m), hence with x_ij := q'_i.k'_j,
     q'_i = q_i - n, k'_j = k_j - m and w_j := exp(n.k'_j - c) > 0:
         F_ij = w_j e^{x_ij} / sum_l w_l e^{x_il}.
     The kernel builds features of q'_i and k'_j and multiplies row j of U2 by w_j: same rank,
     E~_ij = w_j p_i(x_ij), and F~ = diag(E~ 1)^-1 E~ is the same formula as before, so the
     generated kernels (which take U1, U2 as inputs) need no derivation change.
(G3) BALANCE, an identity: for s > 0, (q'/s).(s k') = q'.k' and each degree-t monomial product
     (q'/s)^m (s k')^m = q'^m k'^m, so scaling the two sides' inputs by 1/s and s balances the
     features (issue 11 item 3: q^m and k^m no longer overflow when ||q|| >> ||k||) without changing
     E~.  s is a power of two, so the scalings are exact (barring subnormals: `eta` below).
(G4) ELLIPSOID, an inequality: for any square H, G with E := I - H G,
         a.b = (H^T a).(G b) + a^T E b,  so  |a.b| <= ||H^T a|| ||G b|| + ||a|| ||E||_F ||b||.
     With H = chol(Cov) (Cov = mean_j b_j b_j^T + reg I) and G ~ H^-1 (any float matrix: E absorbs
     the inexact inverse), ||G b_j||^2 is b_j's Mahalanobis norm and ||H^T a||^2 = a^T Cov a, so
         |a_i . b_j| <= rho(a_i) := ||H^T a_i|| Z + ||a_i|| eF B,    Z >= max_j ||G b_j||, B >= max_j ||b_j||,
     the ellipsoid {b : b^T (Z^2 Cov)^-1 b <= 1} around the centred keys; each row takes the smaller
     of rho and Cauchy-Schwarz ||a_i|| B.  O((L + L_kv) d^2).  Every float operation is enclosed,
     not estimated: products and sums with signs by gamma_n |.| |.| (Higham, Accuracy and
     Stability, 2nd ed., eq. (3.5): |fl(x.y) - x.y| <= gamma_n |x|.|y|, any order), nonnegative
     sums and norms by the relative margin 2^-30 (their rounding is <= gamma_{2d} << 2^-30).

What is enclosed (per row i; "kernel's" = the float vectors the low-rank kernel really forms in the
problem's dtype, known only up to the error bounds E = |X| M of `projections`):
    rhoP_i  >= |q^'_i . k^'_j| for all j: the kernel's centred inner products (polynomial interval)
    sigma_i >= |q^'_i . k^'_j - q'_i . k'_j|: kernel's minus exact centred logits (consistent part)
    tau     >= |log w^_j - (n.k'_j - c)|: the kernel's weights' relative error (exp to 4 ulp assumed,
               as the exact path's floor already assumes)
    rhoF_i  >= max_j |q_i . k'_j| (exact; uncentred queries), Mlam_i <= mean_j q_i . k'_j:
               F_ij <= exp(rhoF_i - Mlam_i) / L_kv =: lam_i / L_kv (the peakiness of the EXACT F)
    rabs_i  >= |q^'_i| . |k^'_j| (entrywise absolute values; the features' magnitude sums)
    Mfl_i   <= sum_j w^_j (q^'_i . k^'_j) / W^, W^ := sum_j w^_j (Jensen lower bound for the
               kernel's normaliser, the floor's denominator)
Subnormals: every product or scaling may add an absolute error <= eta (the smallest subnormal of
the dtype; Higham (2.8)); the enclosures add it per entry, so gradual underflow in the inputs of
the features is covered.  (Underflow inside the features and the chain is the floor's business:
`adaptive.py`, "Underflow".)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import array_api_compat
import numpy as np

from .._lib import xp as _xp
from .._lib.xp import to_host64
from .rounding import gamma, unit_roundoff

_MARGIN = 1.0 + 2.0**-30
U64 = 2.0**-53
#: the smallest subnormal: |fl(x y) - x y (1 + eps)| <= ETA with gradual underflow (Higham (2.8))
ETA = {"float64": 2.0**-1074, "float32": 2.0**-149}
#: the most the log-weights n.k'_j may spread: w^_j >= e^-SPREAD stays a normal number
SPREAD = {"float64": 600.0, "float32": 60.0}
#: radius classes: a row's interval radius is rounded up to the grid 2^(e / CLASS_STEPS)
CLASS_STEPS = 16
#: rows more than CLASS_OCTAVES octaves below the largest radius share the lowest class
CLASS_OCTAVES = 10


@dataclass
class Geometry:
    """The decisions (m, n, s, w^, classes) and the per-row enclosures of the module docstring.

    Host NumPy float64 arrays holding dtype-representable values for what the kernel uses
    (m, n: (N, 1, d); s: (N,); weights: (N, L_kv) or None when n = 0), xp arrays (N, L) for the
    per-row enclosures.  `cls` (N, L) int: the radius class of row i, radius `class_radius[cls]`
    >= rhoP_i."""

    dtype: str
    m: np.ndarray
    n: np.ndarray
    s: np.ndarray
    weights: np.ndarray | None
    rhoP: object
    sigma: object
    tau: float
    rhoF: object
    Mlam: object
    rabs: object
    Mfl: object
    wmin: float
    cls: object
    class_radius: np.ndarray
    centred_queries: bool
    info: dict

    @property
    def lam(self):
        """F_ij <= lam_i / L_kv for the exact softmax (module docstring)."""
        return self._xp.exp(self.rhoF - self.Mlam)


def _norm(xp, a, axis=-1):
    return xp.sqrt(xp.sum(a * a, axis=axis)) * _MARGIN


def _ellipsoid(bh: np.ndarray):
    """(H, G, eF) of (G4) for one sample's centred keys bh (L_kv, d), host float64."""
    Lkv, d = bh.shape
    cov = bh.T @ bh / max(Lkv, 1)
    reg = 1e-10 * float(np.trace(cov)) / d + 1e-300
    try:
        H = np.linalg.cholesky(cov + reg * np.eye(d))
        G = np.linalg.inv(H)
    except np.linalg.LinAlgError:
        return None
    if not (np.all(np.isfinite(H)) and np.all(np.isfinite(G))):
        return None
    I = np.eye(d)
    Ehat = I - H @ G
    # |E - Ehat| <= gamma_{d+1} (I + |H||G|)  (the product, then the subtraction)
    eF = (np.linalg.norm(Ehat) + gamma(d + 1, U64) * np.linalg.norm(I + np.abs(H) @ np.abs(G))) * _MARGIN
    return H, G, eF


def geometry(problem, proj: dict, *, centre_queries="auto", centre_keys=True) -> Geometry:
    """The geometry of `problem` (module docstring), from `certificate.projections(problem)`.

    centre_queries: True (n = the queries' mean, shrunk until the log-weights spread <= SPREAD),
    False (n = 0, w = 1), "auto" (centre when it shrinks the median interval radius by >= 10 %).
    centre_keys: False keeps m = 0 (Softmax_1: its exact +n in the normaliser is a key whose logit
    log n no shift may move, so neither side is centred there)."""
    xp = proj["xp"]
    dt = problem.dtype_name
    u, eta = unit_roundoff(dt), ETA[dt]
    beta = float(problem.beta)
    N, L, d = proj["X"].shape
    L_kv = proj["Xkv"].shape[1]
    cQ, cK = proj["C"]["Q"], proj["C"]["K"]                  # (N, L, d), (N, L_kv, d) float64
    aX, aXkv = xp.abs(proj["X"]), proj["aXkv"]
    # error bounds of the projections (`projections`), plus subnormal products in X W (d of them
    # per entry, and r + 1 in W = W* + s B A, each times |X|): E >= |kernel's or exact - certificate's|
    r = problem.r
    E1 = aX @ proj["M"]["Q"] + eta * d * (1 + (r + 1) * xp.max(aX))
    E2 = aXkv @ proj["M"]["K"] + eta * d * (1 + (r + 1) * xp.max(aXkv))
    to_dt = np.float32 if dt == "float32" else np.float64
    host = lambda a: to_host64(a)  # noqa: E731
    # (G1) key centre: the keys' mean, as a dtype vector (any m is exact)
    m = to_dt(host(xp.mean(cK, axis=1, keepdims=True))).astype(np.float64)      # (N, 1, d)
    if not centre_keys:
        m = np.zeros_like(m)
    m_x = _xp.from_numpy(m, xp, device=array_api_compat.device(cK))
    bh = cK - m_x                                                                # b^_j (float64)
    ab = xp.abs(bh)
    eps_k = E2 + 2 * U64 * ab                                                    # |k'_j - b^_j|
    g_hat = beta * cQ                                                            # fl(beta C1)
    eps_g = abs(beta) * E1 + U64 * xp.abs(g_hat)                                 # |q_i - g^_i|

    # the ellipsoid per sample (host, d x d), then Z = max_j ||G b_j|| (enclosed)
    ells, Z = [], []
    bh_host = host(bh)
    for s_ in range(N):
        e = _ellipsoid(bh_host[s_])
        ells.append(e)
        if e is None:
            Z.append(math.inf)
            continue
        Gm = e[1]
        z = bh_host[s_] @ Gm.T
        zerr = gamma(d, U64) * (np.abs(bh_host[s_]) @ np.abs(Gm).T)
        # ||G b|| for the EXACT b^ (float vector): ||fl(G b^)|| + ||gamma_d |G||b^| ||
        Z.append(float(np.max(np.sqrt(np.sum(z * z, axis=1)) + np.sqrt(np.sum(zerr * zerr, axis=1)))) * _MARGIN)
    Bmax = host(xp.max(_norm(xp, bh), axis=1))                                  # (N,) max_j ||b^_j||

    def ell(v, s_idx_all=True):
        """rho(v_i) >= max_j |v_i . b^_j| per row (N, L), the smaller of (G4) and Cauchy-Schwarz."""
        nv = _norm(xp, v)
        cs = nv * _x(xp, Bmax, cK)[:, None]
        out = []
        for s_ in range(N):
            e = ells[s_]
            if e is None:
                out.append(cs[s_, :])
                continue
            H, _, eF = e
            Hx = _xp.from_numpy(H, xp, device=array_api_compat.device(cK))
            y = v[s_, ...] @ Hx                                                  # rows: (H^T v_i)^T
            yerr = gamma(d, U64) * (xp.abs(v[s_, ...]) @ xp.abs(Hx))
            hv = (_norm(xp, y) + _norm(xp, yerr))
            rho = (hv * float(Z[s_]) + nv[s_, :] * float(eF * Bmax[s_])) * _MARGIN
            out.append(xp.minimum(rho, cs[s_, :]))
        return xp.stack(out, axis=0)

    def enclose(n):
        """Per-row enclosures for query centre n (host (N, 1, d) dtype values)."""
        n_x = _xp.from_numpy(n, xp, device=array_api_compat.device(cK))
        ah = g_hat - n_x                                                         # a^_i (float64)
        aa = xp.abs(ah)
        # |Q^ - n - a^|: the kernel's C1 is within 2 E1 of the certificate's, beta's product and
        # the certificate's own two roundings
        D1 = 2 * abs(beta) * E1 + u * (xp.abs(g_hat) + 2 * abs(beta) * E1) + eta + 2 * U64 * (xp.abs(g_hat) + aa)
        eps_q = abs(beta) * E1 + 2 * U64 * (xp.abs(g_hat) + aa)                  # |q'_i - a^_i| (exact q')
        s = _balance(host(xp.max(_norm(xp, ah), axis=1)), host(Bmax))
        s_x = _x(xp, s, cK)[:, None, None]
        dq = D1 + u * (aa + D1) + s_x * eta                                      # |q^'_i - a^_i| (kernel)
        D2 = 2 * E2 + 2 * U64 * ab
        dk = D2 + u * (ab + D2) + eta / s_x                                      # |k^'_j - b^_j| (kernel)
        DK = xp.max(_norm(xp, dk), axis=1)[:, None]                              # (N, 1)
        EK = xp.max(_norm(xp, eps_k), axis=1)[:, None]
        Bm = _x(xp, Bmax, cK)[:, None]
        na, ndq, neq = _norm(xp, ah), _norm(xp, dq), _norm(xp, eps_q)
        rhoP = (ell(ah) + na * DK + ndq * (Bm + DK)) * _MARGIN
        sigma = ((ndq + neq) * (Bm + DK) + (na + neq) * (DK + EK)) * _MARGIN
        rabs = (na + ndq) * (Bm + DK) * _MARGIN
        return {"n": n, "s": s, "ah": ah, "dq": dq, "DK": DK, "rhoP": rhoP, "sigma": sigma, "rabs": rabs}

    zero = np.zeros((N, 1, d))
    plain = enclose(zero)
    chosen, weights = plain, None
    if centre_queries not in (False, None):
        n = to_dt(host(xp.mean(g_hat, axis=1, keepdims=True))).astype(np.float64)
        # shrink n until the log-weights n.b^_j spread by <= SPREAD (w^ stays normal)
        lw = np.einsum("nkd,nd->nk", bh_host, n[:, 0, :])
        spread = lw.max(axis=1) - lw.min(axis=1)
        shrink = np.minimum(1.0, SPREAD[dt] / np.maximum(spread, 1e-300))
        n = to_dt(n * shrink[:, None, None] * 0.99).astype(np.float64)
        cand = enclose(n)
        med = lambda e: float(np.median(host(e["rhoP"])))  # noqa: E731
        if centre_queries is True or med(cand) < 0.9 * med(plain):
            chosen = cand
    n = chosen["n"]
    centred = bool(np.any(n != 0))
    # (G2) the weights, computed here once and handed to the kernel
    tau = 0.0
    if centred:
        lw = np.einsum("nkd,nd->nk", bh_host, n[:, 0, :])                        # fl(n . b^_j)
        c = lw.max(axis=1, keepdims=True)
        weights = to_dt(np.exp(lw - c)).astype(np.float64)                       # (N, L_kv), in (0, 1]
        eps_k_host = host(eps_k)
        an = np.abs(n)                                                           # (N, 1, d)
        dot_err = gamma(d, U64) * np.einsum("nkd,nd->nk", np.abs(bh_host), an[:, 0, :])
        exact_err = np.einsum("nkd,nd->nk", eps_k_host, an[:, 0, :])             # |n.(b^ - k')|
        # exp to 4 ulp, the subtraction lw - c, the cast to the dtype
        fn_err = (4 * U64 + u) * 1.01 + U64 * np.abs(lw - c)
        tau = float(np.max(fn_err + dot_err + exact_err)) * 1.01
        wmin = float(np.min(weights))
    else:
        wmin = 1.0
    # lam: the exact F's peakiness, from the UNcentred queries and the centred keys
    rhoF = (ell(g_hat) + _norm(xp, eps_g) * (_x(xp, Bmax, cK)[:, None] + xp.max(_norm(xp, eps_k), axis=1)[:, None])
            + _norm(xp, g_hat) * xp.max(_norm(xp, eps_k), axis=1)[:, None]) * _MARGIN
    kbar = xp.mean(bh, axis=1)                                                   # (N, d) fl(mean b^)
    kbar_dev = (_norm(xp, xp.abs(kbar) + gamma(L_kv + 1, U64) * xp.mean(ab, axis=1) + xp.mean(eps_k, axis=1)))
    Mlam = -(_norm(xp, g_hat) + _norm(xp, eps_g)) * kbar_dev[:, None] * _MARGIN
    # Jensen for the kernel's normaliser: sum_j w^_j x^_ij / W^ = q^'_i . k~,  k~ = sum_j w^_j k^'_j / W^
    ah, dq = chosen["ah"], chosen["dq"]
    wx = None if weights is None else _xp.from_numpy(weights, xp, device=array_api_compat.device(cK))
    if wx is None:
        kw = kbar[:, None, :]                                                    # (N, 1, d)
        kw_err = gamma(L_kv + 1, U64) * xp.mean(ab, axis=1)[:, None, :]
    else:
        Wsum = xp.sum(wx, axis=1)[:, None, None]
        kw = xp.sum(wx[:, :, None] * bh, axis=1, keepdims=True) / Wsum
        kw_err = gamma(L_kv + 3, U64) * xp.sum(wx[:, :, None] * ab, axis=1, keepdims=True) / Wsum
    # |k~ - kw| <= kw_err + max_j dk_j (entrywise: a convex combination of the dk_j)
    dkw = kw_err + xp.max(_dk(xp, chosen, E2, ab, u, eta), axis=1, keepdims=True)
    dot = xp.sum(ah * kw, axis=-1)
    dot_err = gamma(d, U64) * xp.sum(xp.abs(ah) * xp.abs(kw), axis=-1)
    Mfl = dot - dot_err - xp.sum(xp.abs(ah) * dkw + dq * (xp.abs(kw) + dkw), axis=-1) * _MARGIN
    Mfl = Mfl - 1e-300  # never -0.0 rounding the wrong way
    # radius classes on the fixed grid 2^(e / CLASS_STEPS)
    rhoP = chosen["rhoP"]
    rp = host(rhoP)
    top = float(np.max(rp)) if rp.size else 0.0
    e_top = math.ceil(CLASS_STEPS * math.log2(top)) if top > 0 else 0
    e_low = e_top - CLASS_STEPS * CLASS_OCTAVES
    with np.errstate(divide="ignore"):
        e = np.ceil(CLASS_STEPS * np.log2(np.maximum(rp, 2.0 ** (e_low / CLASS_STEPS)))).astype(int)
    e = np.clip(e, e_low, e_top)
    grid = 2.0 ** (np.arange(e_low, e_top + 2) / CLASS_STEPS)
    idx = e - e_low
    # the float grid must dominate each row's radius: bump where pow rounded below it
    short = grid[idx] < rp
    idx = np.where(short, idx + 1, idx)
    assert np.all(grid[idx] >= rp)
    used = np.unique(idx)
    remap = np.full(grid.shape, -1)
    remap[used] = np.arange(used.size)
    cls = remap[idx]
    info = {"B": host(Bmax), "Z": Z, "s": chosen["s"], "median_rhoP": float(np.median(rp)),
            "max_rhoP": top, "median_rhoP_uncentred": float(np.median(host(plain["rhoP"])))}
    geo = Geometry(dtype=dt, m=m, n=n, s=chosen["s"], weights=weights, rhoP=rhoP, sigma=chosen["sigma"],
                   tau=tau, rhoF=rhoF, Mlam=Mlam, rabs=chosen["rabs"], Mfl=Mfl, wmin=wmin,
                   cls=_xp.from_numpy(cls, xp, device=array_api_compat.device(cK)), class_radius=grid[used],
                   centred_queries=centred, info=info)
    geo._xp = xp
    return geo


def _dk(xp, chosen, E2, ab, u, eta):
    """|k^'_j - b^_j| (the kernel's centred keys), as in `enclose`."""
    s_x = _x(xp, chosen["s"], E2)[:, None, None]
    D2 = 2 * E2 + 2 * U64 * ab
    return D2 + u * (ab + D2) + eta / s_x


def _balance(qmax: np.ndarray, kmax: np.ndarray) -> np.ndarray:
    """(G3) s = 2^round(log2(sqrt(max||q'|| / max||k'||))) per sample (1 where either side is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.round(0.5 * np.log2(qmax / kmax))
    e = np.where(np.isfinite(e), e, 0.0)
    return np.exp2(np.clip(e, -500, 500))


def _x(xp, a: np.ndarray, like):
    return _xp.from_numpy(np.asarray(a, dtype=np.float64), xp, device=array_api_compat.device(like))
