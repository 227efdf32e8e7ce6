"""The float rounding model of the certificate (its module docstring, floor (b) and (c)).

`kernel_depth` counts the roundings along any term of a kernel-weighted sum of the low-rank path;
`staged_floor` propagates the per-row rounding of every average F~_i w through the chain's stages
to dW; `_capped_products` evaluates its pair averages exactly without an (N, L, d, d) array. The
O(N L d) passes run over cache-sized row blocks (`_lib.blocks.CERTIFICATE_BLOCKS`).
"""

from __future__ import annotations

import math

import array_api_compat
import numpy as np

from .._lib import xp as _xp
from .._lib.blocks import accumulate
from .._lib.xp import to_host64
from ..errors import InvalidTypeError

__all__ = ["DELTA_CAP", "PHI_CAP", "floor_rows", "gamma", "kernel_depth", "staged_floor", "unit_roundoff"]

#: the tight (second-moment) coefficients hold for delta <= DELTA_CAP: there F~ <= PHI_CAP F entrywise
DELTA_CAP = 2.0**-6
PHI_CAP = (1 + DELTA_CAP) / (1 - DELTA_CAP)


def unit_roundoff(dtype_name: str) -> float:
    """u = 2^-53 (float64) or 2^-24 (float32)."""
    if dtype_name == "float64":
        return 2.0**-53
    if dtype_name == "float32":
        return 2.0**-24
    raise InvalidTypeError(f"dtype must be float32 or float64, got {dtype_name}")


def gamma(n: float, u: float) -> float:
    """Higham's gamma_n = n u / (1 - n u) (inf once n u >= 1)."""
    nu = n * u
    return math.inf if nu >= 1.0 else nu / (1.0 - nu)


def kernel_depth(L: int, L_kv: int, d: int, degree: int) -> int:
    """n of module docstring (b): an upper bound on the number of roundings along any term of a
    kernel-weighted sum of the low-rank path, at degree g with k = C(d+g, g) features."""
    k = math.comb(d + degree, degree)
    return max(L, L_kv) + k + d + 2 * degree + 8


def floor_rows(xp, chunks, beta, *, m3, m2, mx, mu3, e3, mu2, e2, mux, S32, S3X, row_weight=1,
                weighted=None) -> dict:
    """What `staged_floor` reads: per-row blocks (sorted by lam), column statistics (N, d, 1),
    and the breakpoints of the capped pair averages (`_capped_products`), all polynomial-free.
    `weighted` (row-adaptive certificate with key weights w^): the w^-weighted means m3, m2, mx,
    S32, S3X that the floor's a-term reads instead of the plain means (`adaptive.py`, R4)."""
    tr = lambda a: xp.permute_dims(a, (0, 2, 1))  # noqa: E731
    mean2T = tr(xp.concat([S32, S3X], axis=-1))                          # (N, 2d, d''): [C3 ⊘ C2 | C3 ⊘ X']
    max2T = tr(mu3 * tr(xp.concat([mu2, mux], axis=1)))                  # products of the maxima
    out = {"xp": xp, "beta": beta, "row_weight": row_weight, "chunks": chunks,
           "m3": m3, "m2": m2, "mx": mx, "mu3": mu3, "e3": e3, "mu2": mu2, "e2": e2, "mux": mux,
           "mean2T": mean2T, "breaks": _breakpoints(xp, mean2T, max2T)}
    w = weighted or {}
    out.update({"m3a": w.get("m3", m3), "m2a": w.get("m2", m2), "mxa": w.get("mx", mx),
                "mean2Ta": tr(xp.concat([w["S32"], w["S3X"]], axis=-1)) if w else mean2T})
    return out


def _breakpoints(xp, mean2T, max2T) -> list:
    """Per sample: (tau, mean2, max2, ts_xp, tau_host) for `_capped_products`, tau = max2 / mean2
    where mean2 > 0 (-inf, and max2 := 0, where mean2 = 0: min(max2, lam 0) = 0), ts its sorted
    values."""
    out = []
    for s in range(mean2T.shape[0]):
        m, x = mean2T[s, ...], max2T[s, ...]
        live = m > 0
        x = xp.where(live, x, 0.0)
        tau = xp.where(live, x / xp.where(live, m, 1.0), -math.inf)
        out.append((tau, m, x, xp.sort(xp.reshape(tau, (-1,))), _xp.to_numpy(tau)))
    return out


def _capped_products(xp, cT, lam, breaks, cache: dict):
    """out[s, n, :, i] = sum_b min(max2[n, :, b], lam[n, 0, i] mean2[n, :, b]) cT[s, n, b, i].

    cT: (S, N, d, n) >= 0, lam: (N, 1, n) >= 0 ascending in each sample, `breaks` from
    `_breakpoints` (mean2, max2: (N, e, d) >= 0). The exact value of the direct (N, e, d, n)
    evaluation, without forming it: entry (b', b) takes the branch lam mean2 exactly where
    lam <= tau = max2 / mean2, so on each run of rows between two consecutive values of tau the
    branches are fixed and the run costs (at most) two GEMMs with fixed e x d matrices, cached
    per run in `cache` across calls. O(e d n) flops plus O(e d) runs."""
    outs = []
    for s, (tau, m, x, ts, tau_host) in enumerate(breaks):
        lam_s = lam[s, 0, :]
        # rows start..stop-1 with ts[q-1] < lam <= ts[q] take lam mean2 where tau >= ts[q]
        stops = _xp.to_numpy(xp.searchsorted(lam_s, ts, side="right")).tolist()
        pieces, start = [], 0
        for q, stop in enumerate(stops + [lam_s.shape[0]]):
            if stop <= start:
                continue
            if (s, q) not in cache:  # the branch matrices of this run; q = len(ts): above every tau
                lower = np.zeros(tau_host.shape, dtype=bool) if q == len(stops) else tau_host >= np.sort(
                    tau_host, axis=None)[q]
                mask = xp.asarray(lower, device=array_api_compat.device(m))
                M1 = xp.where(mask, m, 0.0) if lower.any() else None     # None: an all-zero matrix
                M0 = xp.where(mask, 0.0, x) if not lower.all() else None
                cache[(s, q)] = (M1, M0)
            M1, M0 = cache[(s, q)]
            cq = cT[:, s, :, start:stop]
            part = None if M1 is None else lam_s[start:stop] * (M1 @ cq)
            if M0 is not None:
                part = M0 @ cq if part is None else part + M0 @ cq
            pieces.append(part)
            start = stop
        outs.append(xp.concat(pieces, axis=-1) if len(pieces) > 1 else pieces[0])
    return xp.expand_dims(outs[0], axis=1) if len(outs) == 1 else xp.stack(outs, axis=1)


def staged_floor(rows: dict, ab: list, u: float, N: int, L: int, L_kv: int, d: int, dprime: float, *,
                  fac: float | None = None, cmags: list | None = None, depth_q: int | None = None,
                  depth_kv: int | None = None):
    """Stage-by-stage rounding bound (module docstring, floor (b) and (c)) for each dW_mu.

    Every F~-weighted sum of the chain is an average over the keys j of row i (or, for the column
    sums F~^T w, a sum over rows i of F~_ij w_i, bounded row by row the same way). For w >= 0 per
    key, mean(w) := mean_j w_j and Avg_i(w) := min(max_j w_j, lam~_i mean(w)) >= F~_i w
    (F~_ij <= lam~_i / L_kv, lam~_i = PHI(delta') e^{R_i - M_i}, and F~ is a convex combination);
    the rounding of an average is <= a_i mean(w) + b_i Avg_i(w) (a = gamma_n Lambda_i/(1-t_i) from
    the signed feature products, b = (t_i + 2u)/(1-t_i) from the normalisation, t_i = gamma_n
    Lambda_i; exact path: a = 0, b = gamma_{2L+d+8}); `ab` holds (a_i, b_i) per row block. The pair
    means S32 = mean_j |C3_jb||C2_jb'|, S3X = mean_j |C3_jb||X'_ja| are computed from the data
    (O(L d^2)). With c'_i >= |c~_i| (the second-moment bound when delta' <= DELTA_CAP, else c^)
    plus its rounding:
      O~:   eO = err_avg(|C3|) + e3,  |O~| <= Avg(|C3|)          c~ = O~ - Y: ec = (eO + u c')/(1-u)
      r~:   er = sum_b (cp eO + ec |O~|) + gamma_{d+1} rmag,  rmag = sum_b cp (|O~| + eO)
      P~C2 = (F~∘(c~ C3^T)) C2 - r~ F~C2, each part its rounding, propagated errors of c~, r~, C2,
            C3 and the subtraction; dW_Q = beta X^T P~C2 adds gamma_{L+2} of the magnitudes;
      dW_K = beta X'^T ((F~∘(c~ C3^T))^T C1 - F~^T (r~ C1)), column sums bounded row by row;
      dW_V = X'^T F~^T c~;  the batch mean adds gamma_{N+1} of the magnitudes.
    Per row only O(d) numbers are formed (blocks of rows, transposed: (N, d, n)): the capped pair
    averages sum_b'' c_ib'' Avg_i(|C3_b''||C2_b'|) and their X' twins come from `_capped_products`,
    the input-error term sum_b'' c'_ib'' (e3_b'' mu2_b' + mu3_b'' e2_b'') is rank two, and the sums
    over rows are GEMMs accumulated block by block: exact reformulations of the per-entry
    (N, L, d, d) evaluation (the same value up to float64 rounding).
    Returns ({mu: d x d error}, {mu: d x d magnitude}) on the host.

    Row-adaptive certificate (`adaptive.py`, R4): `fac` (lam~ = fac lam, default PHI(delta')),
    `cmags` (per chunk, the bound on |c~| to use), the a-term's means from `rows["m3a"]` etc.
    (the w^-weighted means; the plain ones otherwise) and the gamma indices of the sums over
    query rows / key rows (`depth_q`, `depth_kv`; default L + 2, L_kv + 2: one summation chain).
    """
    xp = rows["xp"]
    g = lambda n: gamma(n, u)  # noqa: E731
    if fac is None:
        fac = (1 + dprime) / (1 - dprime) * (1 + 2.0**-20)            # lam~_i = fac lam_i
    cmag_key = "ctight" if dprime <= DELTA_CAP else "chat"           # >= |c~|, exact arithmetic
    mu3, e3, mu2, e2, mux, m3, m2, mx = (rows[k] for k in ("mu3", "e3", "mu2", "e2", "mux", "m3", "m2", "mx"))
    # the a-term's means (w^-weighted for the row-adaptive kernel with key weights)
    m3a, m2a, mxa = (rows.get(k, v) for k, v in (("m3a", m3), ("m2a", m2), ("mxa", mx)))
    mean2Ta = rows.get("mean2Ta", rows["mean2T"])
    dq = L + 2 if depth_q is None else depth_q
    dkv = L_kv + 2 if depth_kv is None else depth_kv
    tr = lambda a: xp.permute_dims(a, (0, 2, 1))  # noqa: E731
    e3T, mu3T = tr(e3), tr(mu3)
    ones = xp.ones((1, d), dtype=mu3.dtype, device=array_api_compat.device(mu3))
    cache: dict = {}
    acc: dict = {}
    add = lambda a, b: a + b  # noqa: E731
    for ci, (chunk, (a, b)) in enumerate(zip(rows["chunks"], ab, strict=True)):
        lt = fac * chunk["lam"]                                       # (N, 1, n), ascending
        cmag = chunk[cmag_key] if cmags is None else cmags[ci]        # (N, d, n)
        # O~, c~, r~
        Omag = xp.minimum(mu3, lt * m3)
        eO = a * m3a + b * Omag + e3
        ec = (eO + u * cmag) / (1 - u)
        cp = cmag + ec
        rmag = ones @ (cp * (Omag + eO))                              # (N, 1, n)
        er = ones @ (cp * eO + ec * Omag) + g(d + 1) * rmag
        # the pair averages of the face splits [C3 ⊘ C2 | C3 ⊘ X'] for c' (magnitude) and its error
        capped = _capped_products(xp, xp.stack([cp, ec], axis=0), lt, rows["breaks"], cache)
        mag_p1, q1 = capped[0, :, :d, :], capped[0, :, d:, :]
        ec_p1, qc = capped[1, :, :d, :], capped[1, :, d:, :]
        cp_mean = mean2Ta @ cp                                        # sum_b'' mean2[:, b''] cp_ib'' (a-term)
        ce3 = e3T @ cmag                                              # sum_b'' c'_ib'' e3_b''
        # dW_Q: P~C2 = p1 - p2 per row. p1 = (F~∘(c~ C3^T)) C2: magnitude mag_p1, errors: rounding
        # a cp_mean + b mag_p1, c~'s error ec_p1, the inputs' sum_b'' c'_ib'' (e3 mu2 + mu3 e2);
        # p2 = r~ F~C2: magnitude rmag FF, error er FF + rmag eF2 + u rmag FF; the subtraction adds
        # u (|p1| + |p2| + their errors): err_pc = (1 + u)(err_p1 + err_p2) + u mag_pc
        F2 = xp.minimum(mu2, lt * m2)
        eF2 = a * m2a + b * F2 + e2
        FF = F2 + eF2
        mag_pc = mag_p1 + rmag * FF
        err_pc = (1 + u) * (a * cp_mean[:, :d, :] + b * mag_p1 + ec_p1 + ce3 * mu2 + (mu3T @ cmag) * e2
                            + (er + u * rmag) * FF + rmag * eF2) + u * mag_pc
        aX = chunk["aX"]
        accumulate(acc, "Qe", aX @ tr(err_pc), add)                                       # then beta X^T
        accumulate(acc, "Qm", aX @ tr(mag_pc), add)
        # dW_K: per row i the weights over the keys are |X'_a| (|c~_i| . |C3_j|); C1_ib is a row factor.
        # Both parts (F~∘(c~ C3^T))^T C1 and F~^T (r~ C1), magnitudes mk and errors ek per row:
        Ax = xp.minimum(mux, lt * mx)
        eAx = a * mxa + b * Ax
        mk = q1 + rmag * Ax
        ek = a * cp_mean[:, d:, :] + b * q1 + qc + (ce3 + er + u * rmag) * Ax + rmag * eAx
        aC1 = tr(chunk["aC1"])
        accumulate(acc, "Km", mk @ aC1, add)
        accumulate(acc, "Ke", ek @ aC1 + mk @ tr(chunk["e1"]), add)
        # dW_V = X'^T F~^T c~
        cpT = tr(cp)
        accumulate(acc, "Vm", Ax @ cpT, add)
        accumulate(acc, "Ve", eAx @ cpT + Ax @ tr(ec), add)
    w, beta = rows["row_weight"], rows["beta"]   # plan: one representative row standing for L
    Qe, Qm, Ke, Km, Ve, Vm = (w * acc[k] for k in ("Qe", "Qm", "Ke", "Km", "Ve", "Vm"))
    err_q = beta * (Qe + g(dq) * (Qm + Qe))
    mag_q = beta * Qm
    err_pk = Ke + u * (Km + Ke)
    err_k = beta * (err_pk + g(dkv) * (Km + err_pk))
    mag_k = beta * Km
    err_v = Ve + g(dkv - 1) * (Vm + Ve)
    mag_v = Vm
    batch = lambda a: xp.sum(a, axis=0) / N  # noqa: E731
    err, mag = {}, {}
    for m, e, a in (("Q", err_q, mag_q), ("K", err_k, mag_k), ("V", err_v, mag_v)):
        e, a = to_host64(batch(e)), to_host64(batch(a))
        err[m] = e + g(N + 1) * (a + e)
        mag[m] = a
    return err, mag


# ----------------------------------------------------------------------------------------------
# data-free version (for `approx.plan`)
