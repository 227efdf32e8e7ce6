"""The row-adaptive certificate: what `approx_gradients` certifies and runs.

It bounds the error of the low-rank path that runs the `FeaturePlan` it hands out: centred,
balanced, key-weighted features (`geometry.py`, G1-G3) with a certified polynomial PER RADIUS
CLASS of query rows.  The exact-arithmetic chain is `certificate.py`'s (its module docstring, steps
F ... A, B and "Second moments"); what changes is which delta each row pays and what the float
rounding follows.  Per sample, notation as in `certificate.py` and `geometry.py`.

(R1) ROW-ADAPTIVE KERNEL, an identity (`adaptive_proofs.row_coefficients`, SymPy).  Row i of class c(i)
     uses p_c(x) = sum_t a_{c,t} x^t, certified on [-rho_c, rho_c] with rho_c >= rhoP_i.  With
         U1[i, m] = (a_{c(i),t} t!) sigma_m (q^'_i / s)^m,   U2[j, m] = w^_j sigma_m (s k^'_j)^m,
     sigma_m = 1/sqrt(m!), t = |m|:  (U1 U2^T)_ij = w^_j sum_t a_{c(i),t} (q^'_i . k^'_j)^t
     = w^_j p_{c(i)}(x^_ij): the coefficients only rescale the query features block by degree, so
     rows may differ at no cost (the rank is C(d+g, g) as before).
(R2) LEMMA 1, OSCILLATION FORM, an inequality.  Let A_c <= p_c(x) e^{-x} <= B_c on [-rho_c, rho_c]
     (`polynomial.ratio_range`).  The kernel's E~_ij = w^_j p_c(x^_ij) and the exact
     E_ij := w_j e^{x_ij} (F = diag(E 1)^-1 E by G1, G2) satisfy E~_ij = E_ij gamma_ij with
         gamma_ij = [p_c(x^) e^{-x^}] [e^{x^ - x}] [w^_j / w_j]  in  [A'_i, B'_i],
         A'_i = A_c e^{-(sigma_i + tau)},  B'_i = B_c e^{sigma_i + tau}.
     Write gamma_ij = C (1 + theta_ij) for any C > 0 (softmax ignores C): Lemma 1 gives
     ||F~_i - F_i||_1 = E_{F_i}|theta - theta_i| / (1 + theta_i) and E|X - EX| <= sd(X) <= (b - a)/2
     for X in [a, b] (Popoviciu), while 1 + theta_i >= A'/C; so
         ||F~_i - F_i||_1 <= kappa_i := (B'_i - A'_i) / (2 A'_i),     F~_ij / F_ij <= Phi_i := B'_i / A'_i,
     whatever C (check: (A', B') = (1 - delta, 1 + delta) gives the old kappa = delta/(1-delta) and
     PHI).  sd_{F_i}(theta)/(1 + theta_i) <= kappa_i too, so the second-moment bounds hold with it.
     The consistent part of the old floor (logit rounding sigma, the kernel's weights tau) is inside
     kappa_i, not added separately.
(R3) PER-ROW CHAIN, an inequality.  Every step of `certificate.py` after Lemma 1 bounds a ROW's
     quantity by kappa times that row's term: c~_i, T~_i, psi_i and the second-moment row terms use
     only row i of F, F~ (and Phi_i <= PHI_CAP for the latter).  The sums over rows then carry each
     row's own kappa_i:  dW_Q = beta X^T DP C2 is sum_i X_ia (DP C2_b)_i;  dW_K = beta X'^T DP^T C1
     is, swapping the two sums, sum_i C1_ib (DP X'_a)_i (P^T's columns mix rows, but (X'^T DP^T)_a is
     the row contraction (DP X'_a)_i for every row i: each row's term is bounded by omega(X'_a) psi_i
     with its own kappa_i);  dW_V = sum_i [(DF_i . X'_a) c~_ib + (F_i . X'_a) Dc_ib].  Hence
         |D dW|_ab <= sum_c kappa_c K_c,ab,   K_c := the old K summed over the rows of class c only,
     taking the tight (second-moment) K_c where Phi_c <= PHI_CAP, else the general one.  With
     kappa_c := max over the class (sigma_i <= sigma_max), the degree search costs O(classes) per
     degree, not a pass over the rows.
(R4) ROUNDING FLOOR FOLLOWING THE SUMMATION TREE, an inequality (Higham, Accuracy and Stability,
     2nd ed., Lemma 3.1 and §4.2: a sum evaluated by any tree in which each term passes through at
     most t additions has error <= gamma_t sum |terms|; eq. (3.5) for inner products, any order).
     The kernel (`gradients/lowrank_path.py`) sums over rows as row chunks of `rows` rows: each chunk is ONE BLAS
     product whose inner dimension is the chunk (depth <= rows - 1 in whatever order the BLAS
     uses), and the chunks' partial sums are added by `_lib.blocks.add_grouped` (depth
     `_lib.blocks.summation_depth(#chunks)`).  So the depth over L rows is
         D(L) = (min(rows, L) - 1) + summation_depth(ceil(L / rows))      (not L - 1),
     and each term of a kernel-weighted sum passes through at most
         n = max(D(L), D(L_kv)) + (k - 1) + (d - 1) + 2 (g + 7) + 7
     roundings: the key/query sum, the feature contraction (one BLAS product of inner dimension k:
     k - 1, any order), the face split, <= g + 7 in each feature (g - 1 monomial products; the
     column scale sigma_m = fl(sqrt(fl(1/m!))), cast to the dtype: 3, and its product; the row
     coefficient a_{c,t} t! (float64, then the dtype: 2) and its product, or the weight's product
     (its value's rounding is in tau); one spare) and 7 products / divisions (data face split, the two
     feature-data products, the normalisation, the contraction with c~, two spare).  The sums over
     rows in dW (gamma_{L+2} before) take gamma_{D(L)+2}.  Magnitudes:
         sum_m |U1_im| |U2_jm| = w^_j sum_t |a_{c,t}| (|q^'_i| . |k^'_j|)^t <= w^_j A_c(rabs_i),
     A_c(x) := sum_t |a_{c,t}| x^t (multinomial), and the kernel's normaliser (exact arithmetic on
     its inputs) alpha_i = sum_j w^_j p_c(x^_ij) >= A_c sum_j w^_j e^{x^_ij} >= A_c W^ e^{Mfl_i}
     (Jensen with weights w^/W^).  So row i's averages err by <= a_i mean_w|v| + b_i Avg_i(|v|) with
     t_i = gamma_n A_c(rabs_i) e^{-Mfl_i} / A_c, a_i = t_i/(1-t_i), b_i = (t_i + 2u)/(1-t_i), mean_w
     the w^-weighted mean over keys (= the plain mean when n = 0) and Avg_i(v) = min(max|v|,
     lam~_i mean|v|) >= F~_i|v| (lam~_i = Phi lam_i, Phi := max_c Phi_c: `_capped_products` wants the
     rows sorted by lam~), then `rounding.staged_floor` propagates them as before.
(R5) OVERFLOW: the balanced features are bounded a priori: |U1_im| <= |a_{c,t}| t! sigma_m Qinf^t,
     |U2_jm| <= sigma_m Kinf^t (Qinf, Kinf >= the kernel's max |entry| of q^'/s, s k^'; the
     recurrence's intermediates are monomials, <= Qinf^t), and every sum the chain forms is bounded
     by the floor's magnitudes.  `FeaturePlan.overflow_free` checks all of them against the dtype's
     largest float / 8 before the kernel runs; `approx_gradients` refuses (or falls back) otherwise,
     and never returns a finite bound with a non-finite result.
(R6) UNDERFLOW, an inequality: the subnormal errors of the features' inputs are in the enclosures
     (`geometry.py`); those of every product and division inside the features and the chain are
     the absolute term of `underflow.lowrank_underflow`, added to every entry of the floor (and
     the exact path's, `underflow.exact_underflow`, to the exact fallback's bound).
(S1) SOFTMAX_1 (normalizer_offset n > 0), an identity and an inequality.  F_ij = e^{S_ij} / (n +
     sum_l e^{S_il}) is the softmax over the keys plus one SINK key of logit log n whose values are
     zero (C3 = C2 = X' = 0 there): the Softmax_1 gradients are that softmax's gradients restricted
     to the real keys (the sink's rows of C2, X' vanish in dW_Q, dW_K, dW_V).  The kernel adds n
     exactly (`lowrank_chain`, alpha~ = T[:, :1] + n), so the sink's ratio gamma_i0 is 1 and Lemma 1
     holds with the range [min(A', 1), max(B', 1)].  No shift may move the sink's logit, so neither
     side is centred (m = 0, n_q = 0, no weights); the key ranges of the chain (lo, hi of C3, C2,
     X') include the sink's 0; the second-moment (tight) terms, which assume rows summing to 1, are
     not used (K = the general K).  The floor's magnitudes only grow with the normaliser, so (R4)
     holds with the real keys' statistics, plus one rounding (the + n) in the depth.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from fractions import Fraction

import array_api_compat
import numpy as np

from .._lib import xp as _xp
from .._lib.blocks import CERTIFICATE_BLOCKS, accumulate, recycle_block_memory, summation_depth
from .._lib.xp import to_host64, transposed_take
from . import polynomial as polymod
from . import underflow
from .certificate import (
    MARGIN,
    certify,
    error_block,
    key_statistics,
    logit_enclosure,
    projections,
    psi_const,
    psi_slope,
    take_cols,
    v_term,
)
from .geometry import Geometry, geometry
from .rounding import PHI_CAP, floor_rows, gamma, staged_floor, unit_roundoff

METHODS = ("taylor", "chebyshev")
REALMAX = {"float64": float(np.finfo(np.float64).max), "float32": float(np.finfo(np.float32).max)}


@dataclass(frozen=True)
class ClassPoly:
    """One radius class's certified polynomial and what Lemma 1 (R2) makes of it."""

    poly: polymod.ExpPolynomial | None
    A0: float          # A_c <= p e^-x on the class interval (rounded down; the floor's denominator)
    A: float           # A' = A_c e^-(sigma + tau), rounded down
    B: float           # B' = B_c e^(sigma + tau), rounded up
    kappa: float
    phi: float


@dataclass
class FeaturePlan:
    """What the low-rank kernel must compute (R1): per sample m, n (N, 1, d), s (N,), weights
    (N, L_kv) or None, and per query row its class `cls` (N, L) into `coefficients` (C, g+1), the
    float values a_{c,t} t!.  Host NumPy float64 arrays holding values of the problem's dtype."""

    degree: int
    m: np.ndarray
    n: np.ndarray
    s: np.ndarray
    weights: np.ndarray | None
    cls: object
    coefficients: np.ndarray
    overflow_free: bool
    reason: str = ""
    runnable: bool = True    # coefficients exist and are finite: the kernel can run (uncertified if not overflow_free)


# per polynomial, cached: every class of every certificate asks again (polynomials are cached
# per grid radius, `polynomial._certify`); the exact rationals are slow to convert
@functools.lru_cache(maxsize=1 << 16)
def _scaled_coefficients(poly) -> tuple:
    """a_t t! as floats (R1's row coefficients)."""
    return tuple(float(Fraction(int(a.p), int(a.q)) * math.factorial(t)) for t, a in enumerate(poly.coefficients))


@functools.lru_cache(maxsize=1 << 16)
def _abs_coefficients_up(poly) -> tuple:
    """|a_t| as floats rounded up (R4's A_c)."""
    return tuple(math.nextafter(abs(float(a)), math.inf) for a in poly.coefficients)


def _class_poly(radius: float, degree: int, method: str, slack: float, sink: bool = False) -> ClassPoly:
    """The certified polynomial of one class (method "auto": the smaller kappa), and (A', B');
    `sink` (Softmax_1, S1): the range also holds the sink's exact ratio 1."""
    if radius > polymod.MAX_RADIUS:
        return ClassPoly(None, 0.0, 0.0, math.inf, math.inf, math.inf)
    best = None
    for meth in (METHODS if method == "auto" else (method,)):
        p = polymod.exp_polynomial(radius, degree=degree, method=meth)
        A, B = polymod.ratio_range(p)
        if not A > 0:
            cand = ClassPoly(p, A, 0.0, math.inf, math.inf, math.inf)
        else:
            lo = A * math.exp(-slack) * (1 - 2.0**-50)
            hi = B * math.exp(slack) * (1 + 2.0**-50)
            if sink:
                lo, hi = min(lo, 1.0), max(hi, 1.0)
            kap = (hi - lo) / (2 * lo) * MARGIN
            cand = ClassPoly(p, A, lo, hi, kap, hi / lo * MARGIN)
        if best is None or cand.kappa < best.kappa:
            best = cand
    return best


@dataclass
class AdaptiveCertificate:
    """Per-class kappa-coefficients and the per-row data of the floors (module docstring)."""

    N: int
    L: int
    L_kv: int
    d: int
    r: int
    adapted: tuple
    dtype: str
    geo: Geometry
    K_general: dict      # key -> (C, rows, cols): sum over the rows of class c of the general K
    K_tight: dict        # key -> (C, rows, cols): the same with the second-moment row terms
    sigma_max: float
    sink: bool           # Softmax_1 (S1): normalizer_offset > 0
    info: dict           # maxima for the underflow term (R6) and the exact path's bound
    _rows: dict = field(repr=False)
    _chain: dict = field(repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def logit_bound(self) -> float:
        """The largest class radius (the old R's role: the widest polynomial interval)."""
        return float(np.max(self.geo.class_radius))

    def class_polys(self, degree: int, method: str = "auto") -> list[ClassPoly]:
        key = ("polys", degree, method)
        if key not in self._cache:
            slack = self.sigma_max + self.geo.tau
            self._cache[key] = [_class_poly(float(rc), degree, method, slack, self.sink)
                                for rc in self.geo.class_radius]
        return self._cache[key]

    # -- exact arithmetic ---------------------------------------------------------------------
    def approximation_bound(self, degree: int, method: str = "auto") -> dict:
        """Per-entry bound sum_c kappa_c K_c (R3), key -> array."""
        cps = self.class_polys(degree, method)
        out = {}
        for key in self.K_general:
            total = np.zeros(self.K_general[key].shape[1:])
            for c, cp in enumerate(cps):
                Kc = self.K_tight[key][c] if cp.phi <= PHI_CAP else self.K_general[key][c]
                if not np.any(Kc > 0):
                    continue
                if not math.isfinite(cp.kappa):
                    return {k: np.full_like(v[0], np.inf) for k, v in self.K_general.items()}
                total = total + cp.kappa * Kc
            out[key] = total * MARGIN
        return out

    # -- rounding ------------------------------------------------------------------------------
    def depths(self, degree: int, chunk_rows: int | None, k_block: int | None = None) -> dict:
        """(R4) the depths: over query rows, key rows, and per kernel-weighted term.

        `k_block` (PROJECTION ONLY: the generated kernels do not do it yet): the depth if the two
        k-wide products U1 Vq, U2 Vk were split into blocks of k_block features summed by
        `_lib.blocks.add_grouped`: (k_block - 1) + summation_depth(ceil(k / k_block)) instead of k - 1."""
        k = math.comb(self.d + degree, degree)
        D = lambda n: n - 1 if chunk_rows is None else (  # noqa: E731
            min(chunk_rows, n) - 1 + summation_depth(-(-n // chunk_rows)))
        Dq, Dkv = D(self.L), D(self.L_kv)
        Dk = k - 1 if k_block is None else min(k_block, k) - 1 + summation_depth(-(-k // k_block))
        return {"q": Dq, "kv": Dkv, "k": Dk,
                "term": max(Dq, Dkv) + Dk + (self.d - 1) + 2 * (degree + 7) + 7 + int(self.sink)}

    def rounding_floor(self, degree: int, method: str = "auto", *, chunk_rows: int | None = None,
                       k_block: int | None = None) -> dict:
        """Per-entry floor (key -> array) of the kernel running this certificate's FeaturePlan with
        row chunks of `chunk_rows` rows (None: one chunk, the depth of the old model); `k_block`:
        a projection (see `depths`), not what the kernels run today. Cached per arguments."""
        key = ("floor", degree, method, chunk_rows, k_block)
        if key not in self._cache:
            self._cache[key] = self._rounding_floor(degree, method, chunk_rows, k_block)
        return self._cache[key]

    def _rounding_floor(self, degree, method, chunk_rows, k_block) -> dict:
        cps = self.class_polys(degree, method)
        u = unit_roundoff(self.dtype)
        if any(not math.isfinite(cp.kappa) for cp in cps):
            return self._infinite()
        xp = self._rows["xp"]
        dep = self.depths(degree, chunk_rows, k_block)
        g_n = gamma(dep["term"], u)
        # A_c(x) = sum_t |a_{c,t}| x^t per class: coefficient table (t, C), rounded up
        table = np.array([_abs_coefficients_up(cp.poly) for cp in cps])
        Amin = np.array([cp.A0 for cp in cps])                                      # A_c (no slack)
        phi = max(cp.phi for cp in cps)
        tab = [_xp.from_numpy(table[:, t], xp) for t in range(table.shape[1])]
        amin = _xp.from_numpy(Amin, xp)
        phis = _xp.from_numpy(np.array([cp.phi for cp in cps]), xp)
        ab, cmags, tmax = [], [], 0.0
        for chunk in self._rows["chunks"]:
            cl = chunk["cls"]                                                   # (N, n)
            gather = lambda col: xp.reshape(xp.take(col, xp.reshape(cl, (-1,))), (cl.shape[0], 1, cl.shape[1]))  # noqa: E731,B023
            rr = chunk["rabs"]                                                  # (N, 1, n)
            absum = 0.0 * rr
            for col in reversed(tab):
                absum = absum * rr + gather(col)
            logt = xp.log(absum * MARGIN) - chunk["Mfl"] - xp.log(gather(amin))
            t = g_n * xp.exp(xp.minimum(logt, 700.0))
            tmax = max(tmax, float(xp.max(t)))
            ab.append((t / (1 - t), (t + 2 * u) / (1 - t)))
            cmags.append(chunk["chat"] if self.sink else xp.where(gather(phis) <= PHI_CAP, chunk["ctight"], chunk["chat"]))
        if not tmax < 0.5:
            return self._infinite()
        err, mag = staged_floor(self._rows, ab, u, self.N, self.L, self.L_kv, self.d, 0.0,
                                 fac=phi * (1 + 2.0**-20), cmags=cmags, depth_q=dep["q"] + 2,
                                 depth_kv=dep["kv"] + 2)
        if k_block is None:  # a projection's depths are not what runs
            self._cache[("mag", degree, method, chunk_rows)] = mag
        under = self._underflow(degree, cps)
        if under is None:
            return self._infinite()
        return self._chained(err, mag, u, under)

    def _chained(self, err: dict, mag: dict, u: float, under: dict) -> dict:
        """dW errors and magnitudes through the LoRA chain to the keys, plus the underflow part."""
        out = {}
        for m in self.adapted:
            bt, at = self._chain[m]
            chain = gamma(self.d + 2, u)
            ua = underflow.factor_underflow(under[m], d=self.d, scale=self.info["scale"],
                                            other_max=self.info["Bmax"][m], dtype_name=self.dtype)
            ub = underflow.factor_underflow(under[m], d=self.d, scale=self.info["scale"],
                                            other_max=self.info["Amax"][m], dtype_name=self.dtype)
            out[f"A_{m}"] = (bt @ err[m] + chain * (bt @ (mag[m] + err[m]))) * MARGIN + ua
            out[f"B_{m}"] = (err[m] @ at + chain * ((mag[m] + err[m]) @ at)) * MARGIN + ub
        return out

    def _maxima(self) -> dict:
        info = self.info
        return {"d": self.d, "r": self.r, "L": self.L, "L_kv": self.L_kv, "beta": info["beta"], "xq": info["xq"],
                "xk": info["xk"], "m1": info["m1"], "m2": info["m2"], "m3": info["m3"], "ymax": info["ymax"]}

    def _underflow(self, degree: int, cps) -> dict | None:
        """(R6) the underflow part of the floor at `degree`, {mu: scalar}; None: refuse."""
        info = self.geo.info
        coeffs = self.feature_coefficients(degree, cps)
        cmax = max(1.0, float(np.max(np.abs(coeffs)))) if coeffs.size else 1.0
        qg = max(1.0, info["qinf"]) ** degree
        kg = max(1.0, info["kinf"]) ** degree
        A0 = min(cp.A0 for cp in cps)
        if not (A0 > 0 and math.isfinite(qg) and math.isfinite(kg)):
            return None
        m = self._maxima()
        m.update(k=math.comb(self.d + degree, degree), g=degree, U1max=cmax * qg * (1 + 2.0**-10),
                 U2max=kg * (1 + 2.0**-10), qg=qg, kg=kg, cmax=cmax,
                 alpha_min=A0 * math.exp(float(np.min(to_host64(self.geo.Mfl)))) * (1 - 2.0**-20))
        return underflow.lowrank_underflow(m, self.dtype)

    def _infinite(self) -> dict:
        return {key: np.full_like(K[0], np.inf) for key, K in self.K_general.items()}

    def magnitudes(self, degree: int, method: str = "auto", *, chunk_rows: int | None = None) -> dict | None:
        """{key: array} upper bounds of |exact gradient| entrywise (the floor's magnitudes through
        the LoRA chain: valid for any F with F_ij <= lam~_i / L_kv, the exact F included), or None."""
        self.rounding_floor(degree, method, chunk_rows=chunk_rows)
        mag = self._cache.get(("mag", degree, method, chunk_rows))
        if mag is None:
            return None
        out = {}
        for m in self.adapted:
            bt, at = self._chain[m]
            out[f"A_{m}"] = (bt @ mag[m]) * MARGIN
            out[f"B_{m}"] = (mag[m] @ at) * MARGIN
        return out

    def exact_bound(self, problem, proj: dict | None = None) -> dict:
        """{key: certified max-abs error} of the exact path (its rounding floor and underflow).

        Softmax (n = 0): `certificate.Certificate.exact_bound`. Softmax_1 (S1): the consistent part
        kappa' K (K the general K on the sink-augmented ranges; the logits' rounding, the exponent
        errors of the subtraction of the row max and of fl(log n), exp to 8u, on both the keys' and
        the sink's ratio) plus the staged floor of an explicit F (gamma_{2 max(L, L_kv) + d + 9}: one
        more term in the normaliser)."""
        proj = projections(problem) if proj is None else proj
        u = unit_roundoff(self.dtype)
        under = underflow.exact_underflow(self._maxima(), self.dtype)
        if not self.sink:
            old = _old_certify(problem, proj)
            floor = old.exact_floor()
            keyed = {f"{p}_{m}": underflow.factor_underflow(
                under[m], d=self.d, scale=self.info["scale"],
                other_max=self.info["Bmax" if p == "A" else "Amax"][m], dtype_name=self.dtype)
                for m in self.adapted for p in "AB"}
            return {k: float(np.max(v)) + keyed[k] for k, v in floor.items()}
        R, sigma = logit_enclosure(problem, proj)
        log_n = abs(math.log(problem.normalizer_offset))
        Rm = max(R, log_n)
        expo = sigma + gamma(self.d + 1, u) * R + (u + 2.0**-52) * log_n + 4 * u * Rm
        dp = math.exp(expo) * (1 + 8 * u) - 1
        kap = ((1 + dp) ** 2 - 1) / 2 * MARGIN          # range [1/(1+dp), 1+dp]: (B - A) / (2A)
        b_row = gamma(2 * max(self.L, self.L_kv) + self.d + 9, u)
        ab = [(0.0, b_row)] * len(self._rows["chunks"])
        err, mag = staged_floor(self._rows, ab, u, self.N, self.L, self.L_kv, self.d, 0.0,
                                 fac=(1 + dp) ** 2 * (1 + 2.0**-20),
                                 cmags=[c["chat"] for c in self._rows["chunks"]])
        floor = self._chained(err, mag, u, under)
        return {k: float(np.max(v + kap * np.sum(self.K_general[k], axis=0))) for k, v in floor.items()}

    def feature_coefficients(self, degree: int, cps=None) -> np.ndarray:
        """(C, g+1) the float values a_{c,t} t! of the dtype (R1), as float64."""
        cps = self.class_polys(degree) if cps is None else cps
        coeffs = np.zeros((len(cps), degree + 1))
        for c, cp in enumerate(cps):
            if cp.poly is None:
                return np.full((len(cps), degree + 1), np.inf)
            coeffs[c] = _scaled_coefficients(cp.poly)
        to_dt = np.float32 if self.dtype == "float32" else np.float64
        with np.errstate(over="ignore"):
            return to_dt(coeffs).astype(np.float64)

    # -- totals --------------------------------------------------------------------------------
    def entry_bounds(self, degree: int, method: str = "auto", *, chunk_rows: int | None = None) -> dict:
        approx = self.approximation_bound(degree, method)
        floor = self.rounding_floor(degree, method, chunk_rows=chunk_rows)
        return {k: approx[k] + floor[k] for k in approx}

    def bound_and_floor(self, degree: int, method: str = "auto", *, chunk_rows: int | None = None):
        """({key: max-abs bound}, {key: its rounding part}), cached per (degree, method, chunk_rows)."""
        key = ("bound", degree, method, chunk_rows)
        if key not in self._cache:
            approx = self.approximation_bound(degree, method)
            floor = self.rounding_floor(degree, method, chunk_rows=chunk_rows)
            self._cache[key] = ({k: float(np.max(approx[k] + floor[k])) for k in approx},
                                {k: float(np.max(floor[k])) for k in floor})
        return self._cache[key]

    def approximation_max(self, degree: int, method: str = "auto") -> dict:
        """{key: max of the exact-arithmetic part}: a cheap lower bound of `bound_and_floor`'s bound."""
        key = ("approx_max", degree, method)
        if key not in self._cache:
            self._cache[key] = {k: float(np.max(v)) for k, v in self.approximation_bound(degree, method).items()}
        return self._cache[key]

    # -- what the kernel runs ------------------------------------------------------------------
    def feature_plan(self, degree: int, method: str = "auto", *, chunk_rows: int | None = None) -> FeaturePlan:
        """The FeaturePlan of (R1), with the overflow check of (R5) for a kernel run with row chunks of
        `chunk_rows` rows (None: one chunk; the check reads that run's floor magnitudes, so the
        caller's later `bound_and_floor` at the same chunk_rows reuses them)."""
        cps = self.class_polys(degree, method)
        geo = self.geo
        ok = all(cp.poly is not None for cp in cps)
        coeffs = self.feature_coefficients(degree, cps) if ok else np.zeros((len(cps), degree + 1))
        ok = ok and bool(np.all(np.isfinite(coeffs)))
        runnable = ok
        reason = "" if ok else "a radius class exceeds the radius certificates are derived for"
        if ok and not all(math.isfinite(cp.kappa) for cp in cps):
            ok = False
            reason = (f"degree {degree} certifies no relative error on the widest class interval "
                      f"[-{self.logit_bound:.3g}, {self.logit_bound:.3g}] (the polynomial may vanish there)")
        overflow_free = ok and self._overflow_free(degree, coeffs, method, chunk_rows)
        if ok and not overflow_free:
            reason = f"the balanced features of degree {degree} would overflow {self.dtype}"
        return FeaturePlan(degree=degree, m=geo.m, n=geo.n, s=geo.s, weights=geo.weights, cls=geo.cls,
                           coefficients=coeffs, overflow_free=overflow_free, reason=reason, runnable=runnable)

    def _overflow_free(self, degree: int, coeffs: np.ndarray, method: str = "auto",
                       chunk_rows: int | None = None) -> bool:
        """(R5) every array the kernel forms stays below the dtype's largest float / 8 (in logs):
        the monomials and features (|U1| <= cmax Qinf^t, |U2| <= Kinf^t: sigma_m <= 1, w^ <= 1);
        Vq = U2^T Z2 with Z2 = [1 | C3 | C2 | C3 o C2] <= Z2max; T = U1 Vq <= A(rabs) L_kv Z2max (its
        partial sums are <= (1 + gamma) sum |terms|); Z1 = [c~ o C1 | r~ C1 | c~] / alpha with |c~| <=
        c^, |r~| <= c^ max|C3|, alpha >= A_c W^ e^Mfl (W^ >= 1); Vk = U1^T Z1 and U2 Vk likewise; the
        sums over rows in dW by the floor's magnitudes (`staged_floor`, the same bounds)."""
        big = math.log(REALMAX[self.dtype] / 8)
        info = self.geo.info
        lg = lambda v: math.log(max(float(v), 1e-300))  # noqa: E731
        lq, lk = degree * math.log(max(1.0, info["qinf"])), degree * math.log(max(1.0, info["kinf"]))
        cmax = float(np.max(np.abs(coeffs))) if coeffs.size else 0.0
        lc = math.log(max(cmax, 1.0))
        m1, m2, m3, ch = info["m1"], info["m2"], info["m3"], info["chat"]
        lZ2 = lg(max(1.0, m3, m2, m3 * m2))
        lZ1 = lg(ch * max(1.0, m1, m3 * m1))
        rmax = float(np.max(to_host64(self.geo.rabs)))
        try:
            Amax = max(sum(abs(float(c)) * rmax**t for t, c in enumerate(row)) for row in coeffs) if coeffs.size else 0.0
        except OverflowError:
            Amax = math.inf
        lA = lg(Amax) if math.isfinite(Amax) else math.inf
        cps = self.class_polys(degree, method)
        A0 = min(cp.A0 for cp in cps)
        if not A0 > 0:
            return False
        lz = -float(np.min(to_host64(self.geo.Mfl))) - math.log(A0)                 # 1 / alpha
        mag = self._cache.get(("mag", degree, method, chunk_rows))
        if mag is None:
            self.rounding_floor(degree, method, chunk_rows=chunk_rows)
            mag = self._cache.get(("mag", degree, method, chunk_rows))
        lmag = max(lg(np.max(v)) for v in mag.values()) if mag else math.inf
        checks = (lq + lc, lk, lk + math.log(self.L_kv) + lZ2, lA + math.log(self.L_kv) + lZ2,
                  lZ1 + lz, lq + lc + math.log(self.L) + lZ1 + lz, lA + math.log(self.L) + lZ1 + lz, lmag)
        return all(math.isfinite(c) and c < big for c in checks)


def certify_adaptive(problem, proj: dict | None = None, *, centre_queries="auto",
                     row_scale=None) -> AdaptiveCertificate:
    """The row-adaptive certificate of a `LoRAProblem` (module docstring); O(N (L + L_kv) d^2 +
    N L d^2 C) work for C radius classes, no L x L array.

    `row_scale` (diagnostics only, (N, L)): multiplies row i's exact-arithmetic terms, so that
    K_c = sum_{i in c} row_scale_i k_i (e.g. the measured ||F~_i - F_i||_1 in place of kappa)."""
    proj = projections(problem) if proj is None else proj
    xp, C, M = proj["xp"], proj["C"], proj["M"]
    recycle_block_memory(xp)
    X, Y = proj["X"], proj["Y"]
    N, L, d, r = problem.N, problem.L, problem.d, problem.r
    s, beta = abs(problem.scale), abs(problem.beta)
    sink = bool(problem.normalizer_offset)
    geo = geometry(problem, proj, centre_queries=False if sink else centre_queries, centre_keys=not sink)
    ks = key_statistics(xp, proj)
    if sink:  # (S1) the chain's key ranges hold the sink's zero values
        ks = dict(ks)
        for v in "32x":
            ks["lo" + v], ks["hi" + v] = xp.minimum(ks["lo" + v], 0.0), xp.maximum(ks["hi" + v], 0.0)
            ks["w" + v] = (ks["hi" + v] - ks["lo" + v]) / 2
    weighted = _weighted_key_means(xp, proj, geo) if geo.weights is not None else None
    lam = geo.lam
    order = xp.argsort(lam, axis=1)
    ncls = int(geo.class_radius.shape[0])
    tr = lambda a: xp.permute_dims(a, (0, 2, 1))  # noqa: E731
    device = array_api_compat.device(X)
    ones = xp.ones((1, d), dtype=X.dtype, device=device)
    w3, w2, wx, mux, m3, s3sq = (ks[k] for k in ("w3", "w2", "wx", "mux", "m3", "s3sq"))
    mid3 = (ks["lo3"] + ks["hi3"]) / 2
    sum_s3 = xp.sum(s3sq, axis=1, keepdims=True)
    s3, sdevx, sx2 = xp.sqrt(s3sq), xp.sqrt(ks["devx2"]), xp.sqrt(ks["x2"])
    slope_T = tr(psi_slope(w3))
    const = xp.sum(psi_const(w3), axis=1, keepdims=True)
    sqrt_mean_a2, sqrt_max_a2 = xp.sqrt(ks["mean_a2"]), xp.sqrt(ks["max_a2"])
    clsf = xp.astype(geo.cls, xp.float64)
    rs = xp.ones_like(lam) if row_scale is None else xp.asarray(row_scale, dtype=xp.float64)
    per_row = xp.stack([lam, geo.rabs, geo.Mfl, clsf, rs, geo.rhoF], axis=1)  # (N, 6, L)
    # |E_u C3 - m3| (m3 the float64 column means of the certificate's C3): the rounding of the mean
    # and the input errors, generously
    c3slack = (ks["e3"] + gamma(problem.L_kv + 1, 2.0**-53) * ks["mu3"]) * 2              # (N, d, 1) >= |E_u C3 - m3|
    m3_slack = xp.sqrt(xp.sum(c3slack ** 2, axis=1, keepdims=True))
    # |mean_j X'_ja| (exact) per column: the float64 mean plus its rounding
    xmean = xp.abs(xp.permute_dims(xp.mean(proj["Xkv"], axis=1, keepdims=True), (0, 2, 1))) \
        + gamma(problem.L_kv + 1, 2.0**-53) * ks["mxf"]
    acc: dict = {}
    add = lambda a, b: a + b  # noqa: E731
    chunks = []
    for rows in CERTIFICATE_BLOCKS.slices(L, 8 * N * d):
        idx = order[:, rows]
        Xb, C1, Yb = (transposed_take(xp, a, idx) for a in (X, C["Q"], Y))
        lrm = take_cols(xp, per_row, idx)
        lam_b, rabs_b, Mfl_b, rhoF_b = lrm[:, 0:1, :], lrm[:, 1:2, :], lrm[:, 2:3, :], lrm[:, 5:6, :]
        cls_b = xp.astype(lrm[:, 3, :], xp.int64)                            # (N, n)
        rs_b = lrm[:, 4:5, :]                                                # (N, 1, n): 1 unless diagnosing
        n = Xb.shape[-1]
        aX = xp.abs(Xb)
        E1 = error_block(xp, M["Q"], aX)
        aC1 = xp.abs(C1) + E1
        chat = xp.abs(Yb - mid3) + w3
        psi = slope_T @ chat + const                                   # (N, 1, n) psi_i / kappa
        seg = _segments(xp, cls_b, ncls)
        csum = lambda P: _class_sums(xp, P * rs_b, seg, ncls)  # noqa: E731  (N, m, C), row i into class c(i)
        accumulate(acc, "Q", csum(aX * psi), add)                               # (N, d, C)
        accumulate(acc, "K", csum(aC1 * psi), add)
        accumulate(acc, "V", csum(chat), add)
        accumulate(acc, "count", csum(xp.ones_like(psi)), add)                   # (N, 1, C)
        m3y = xp.abs(m3 - Yb)
        sl = xp.sqrt(lam_b)
        slt = math.sqrt(PHI_CAP) * sl
        # ||O_i - m3||: Jensen / the range (certificate.py), and Lemma 1 (R2) for F_i against the
        # uniform distribution: F_ij = u_j gamma_j / E_u gamma, gamma_j = e^{q_i.k'_j} in [e^-rhoF, e^rhoF],
        # so |E_F w - E_u w| <= (e^{2 rhoF} - 1)/2 sd_u(w) per column, sd_u <= s3; plus |E_u C3 - m3|
        rho = xp.minimum(xp.minimum(sl * sqrt_mean_a2, sqrt_max_a2),
                         xp.expm1(2 * rhoF_b) / 2 * xp.sqrt(sum_s3) * MARGIN + m3_slack)
        cn = xp.minimum(rho + xp.sqrt(ones @ (m3y * m3y)), xp.sqrt(ones @ (chat * chat)))
        dcn = sl * xp.sqrt(sum_s3)
        x1 = cn * sl
        x0 = x1 * rho + sl * (slt * slt) * sum_s3 + cn * dcn * slt
        row_q = xp.minimum(psi * w2, x1 * ks["A1K"] + x0 * ks["A0K"])
        row_k = xp.minimum(psi * wx, x1 * ks["A1x"] + x0 * ks["A0x"])
        sd3 = sl * s3
        # F_i (and F~_i when Phi_c <= PHI_CAP) against the uniform distribution (R2, uniform_covariance):
        # |E_F v - E_u v| <= Dl_i sd_u(v), Dl_i = (e^{2 rhoF_i} - 1)/2 (Dlt: with the ratio PHI_CAP)
        Dl = xp.expm1(2 * rhoF_b) / 2 * MARGIN
        Dlt = (PHI_CAP * xp.exp(2 * rhoF_b) - 1) / 2 * MARGIN
        cabs = xp.minimum(chat, xp.minimum(sd3, Dl * s3) + m3y + c3slack)        # >= |c_ib|
        p = xp.minimum(wx, sl * sdevx)
        q = xp.minimum(xp.minimum(mux, slt * sx2), xmean + Dlt * sdevx)          # >= |F~_i . X'_a|
        pair = lambda a, b: csum(xp.reshape(a[:, :, None, :] * b[:, None, :, :], (N, d * d, n)))  # noqa: E731
        accumulate(acc, "tQ", pair(aX, row_q), add)                               # (N, d*d, C)
        accumulate(acc, "tK", pair(row_k, aC1), add)
        accumulate(acc, "tV", pair(p, cabs) + pair(q, xp.minimum(w3, sd3)), add)
        ctight = xp.minimum(chat, xp.minimum(slt, Dlt) * s3 + m3y + c3slack)      # >= |c~_ib| (Phi_c <= cap)
        chunks.append({"lam": lam_b, "rabs": rabs_b, "Mfl": Mfl_b, "cls": cls_b, "aX": aX, "aC1": aC1 + E1,
                       "e1": E1, "chat": chat, "ctight": ctight})
    batch = lambda a: xp.sum(a, axis=0) / N  # noqa: E731
    K_gen, K_tight = {}, {}
    chain = {}
    for mu in problem.adapted:
        bt = s * np.abs(to_host64(problem.B[mu])).T
        at = s * np.abs(to_host64(problem.A[mu])).T
        chain[mu] = (bt, at)
    Wg = {mu: [] for mu in "QKV"}
    Wt = {mu: [] for mu in "QKV"}
    for c in range(ncls):
        Wg["Q"].append(to_host64(beta * batch(acc["Q"][:, :, c:c + 1] @ tr(w2))))
        Wg["K"].append(to_host64(beta * batch(wx @ tr(acc["K"][:, :, c:c + 1]))))
        Wg["V"].append(to_host64(batch(v_term(wx, tr(acc["V"][:, :, c:c + 1]), acc["count"][:, :, c:c + 1] * mux,
                                           tr(w3)))))
        Wt["Q"].append(to_host64(beta * batch(xp.reshape(acc["tQ"][:, :, c], (N, d, d)))))
        Wt["K"].append(to_host64(beta * batch(xp.reshape(acc["tK"][:, :, c], (N, d, d)))))
        Wt["V"].append(to_host64(batch(xp.reshape(acc["tV"][:, :, c], (N, d, d)))))
    for mu in problem.adapted:
        bt, at = chain[mu]
        K_gen[f"A_{mu}"] = np.stack([bt @ W for W in Wg[mu]])
        K_gen[f"B_{mu}"] = np.stack([W @ at for W in Wg[mu]])
        tight = Wg if sink else Wt  # (S1) rows of F sum to less than 1: the general K only
        K_tight[f"A_{mu}"] = np.stack([bt @ W for W in tight[mu]])
        K_tight[f"B_{mu}"] = np.stack([W @ at for W in tight[mu]])
    rows = floor_rows(xp, chunks, beta, m3=ks["m3f"], m2=ks["m2f"], mx=ks["mxf"], mu3=ks["mu3"], e3=ks["e3"],
                       mu2=ks["mu2"], e2=ks["e2"], mux=mux, S32=ks["S32"], S3X=ks["S3X"], weighted=weighted)
    # what the overflow check (R5) needs: the kernel's max |entries| of q^'/s and s k^', and of the data
    geo.info["qinf"] = float(xp.max(_centred_abs(xp, proj, geo, float(problem.beta), query=True)))
    geo.info["kinf"] = float(xp.max(_centred_abs(xp, proj, geo, float(problem.beta), query=False)))
    geo.info["m1"] = float(xp.max(xp.abs(C["Q"]) + 2 * (xp.abs(proj["X"]) @ M["Q"])))
    geo.info["m2"] = float(np.max(to_host64(ks["mu2"])))
    geo.info["m3"] = float(np.max(to_host64(ks["mu3"])))
    geo.info["chat"] = float(xp.max(xp.abs(Y))) + float(np.max(np.abs(to_host64(mid3)))) + float(np.max(to_host64(w3)))
    # maxima for the underflow term (R6) and the exact path's bound
    host_max = lambda a: float(np.max(np.abs(to_host64(a)))) if a.shape[-1] else 0.0  # noqa: E731
    info = {"beta": beta, "scale": s, "xq": float(xp.max(xp.abs(X))), "xk": float(xp.max(proj["aXkv"])),
            "m1": geo.info["m1"], "m2": geo.info["m2"], "m3": geo.info["m3"], "ymax": float(xp.max(xp.abs(Y))),
            "Bmax": {mu: host_max(problem.B[mu]) for mu in problem.adapted},
            "Amax": {mu: host_max(problem.A[mu]) for mu in problem.adapted}}
    return AdaptiveCertificate(
        N=N, L=L, L_kv=problem.L_kv, d=d, r=r, adapted=problem.adapted, dtype=problem.dtype_name, geo=geo,
        K_general=K_gen, K_tight=K_tight, sigma_max=float(xp.max(geo.sigma)), sink=sink, info=info,
        _rows=rows, _chain=chain)


def _old_certify(problem, proj):
    return certify(problem, proj)  # the exact path's floor (n = 0)


def _segments(xp, cls_b, ncls):
    """Per sample: the permutation sorting the block's rows by class and each class's [start, stop)."""
    out = []
    for s_ in range(cls_b.shape[0]):
        perm = xp.argsort(cls_b[s_, :])
        sorted_host = np.asarray(_xp.to_numpy(xp.take(cls_b[s_, :], perm)))
        bounds = np.searchsorted(sorted_host, np.arange(ncls + 1), side="left")
        out.append((perm, bounds))
    return out


def _class_sums(xp, P, seg, ncls):
    """(N, m, C): the sum of P's columns (rows of the block) over each class; plain sums of the
    nonnegative terms of one class (no cumulative-sum cancellation)."""
    outs = []
    for s_, (perm, bounds) in enumerate(seg):
        Ps = xp.take(P[s_, ...], perm, axis=-1)
        zero = xp.zeros((P.shape[1],), dtype=P.dtype, device=array_api_compat.device(P))
        cols = [xp.sum(Ps[:, int(a):int(b)], axis=-1) if b > a else zero for a, b in zip(bounds[:-1], bounds[1:])]
        outs.append(xp.stack(cols, axis=-1))
    return xp.stack(outs, axis=0)


def _centred_abs(xp, proj, geo, beta, *, query):
    """An upper bound of the kernel's balanced inputs |q^'/s| (query) or |s k^'| entrywise:
    the certificate's centred vectors plus twice their error bound, doubled (generous: only the
    overflow check (R5) reads it)."""
    dev = array_api_compat.device(proj["X"])
    if query:
        v = xp.abs(beta * proj["C"]["Q"] - _xp.from_numpy(geo.n, xp, device=dev))
        e = abs(beta) * (xp.abs(proj["X"]) @ proj["M"]["Q"])
        s = _xp.from_numpy(1.0 / geo.s, xp, device=dev)[:, None, None]
    else:
        v = xp.abs(proj["C"]["K"] - _xp.from_numpy(geo.m, xp, device=dev))
        e = proj["aXkv"] @ proj["M"]["K"]
        s = _xp.from_numpy(geo.s, xp, device=dev)[:, None, None]
    return ((v + 2 * e) * 2.0) * s


def _weighted_key_means(xp, proj, geo) -> dict:
    """w^-weighted means over the keys of |C3|, |C2|, |X'| (with their error margins, as in
    `key_statistics`) and the pair means: the a-term of the floor (R4) when n != 0."""
    C, M, Xkv = proj["C"], proj["M"], proj["Xkv"]
    N, L_kv, d = Xkv.shape
    dev = array_api_compat.device(Xkv)
    w = _xp.from_numpy(geo.weights, xp, device=dev)[:, :, None]                  # (N, L_kv, 1)
    Wsum = xp.sum(w, axis=1, keepdims=True)
    ax = xp.abs(Xkv)
    e3, e2 = ax @ M["V"], ax @ M["K"]
    a3, a2 = xp.abs(C["V"]) + 2 * e3, xp.abs(C["K"]) + 2 * e2
    tr = lambda a: xp.permute_dims(a, (0, 2, 1))  # noqa: E731
    mean = lambda a: tr(xp.sum(w * a, axis=1, keepdims=True) / Wsum)  # noqa: E731  (N, d, 1)
    return {"m3": mean(a3), "m2": mean(a2), "mx": mean(ax),
            "S32": tr(a3) @ (w * a2) / Wsum, "S3X": tr(a3) @ (w * ax) / Wsum}
