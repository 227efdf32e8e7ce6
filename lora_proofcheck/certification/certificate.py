"""A certified a-priori bound on the max-abs error of the approximate (polynomial-method) LoRA gradients.

The approximate path replaces E = exp(S) by E~ = p(S) entrywise (p the certified polynomial of
`polynomial.py`, S = beta X W_Q W_K^T X'^T) and evaluates the exact gradient formulas EXACTLY at
the approximate softmax F~ = diag(E~ 1)^-1 E~ (Lemmas 3.3-3.7 of the paper, errata E1/E2 applied;
proved for every size in `derivations/lowrank_proofs.py`; not the gradient of the approximate loss,
erratum O1). The bound assumes the returned values are the float evaluation of those formulas: the
monomial features may overflow for strongly q/k-imbalanced inputs (issue 11 item 3, open), and
then a finite bound can stand next to non-finite gradients. If
|p(s) - e^s| <= delta e^s on [-R, R] (R >= max |S_ij|, see `logit_bound`), every bound below is
kappa * K with kappa := delta/(1-delta) and K computed from the data in O(N L d^2) (the cost of
forming X W_mu), never from an L x L array. Notation per sample: C1 = X W_Q, C2 = X' W_K,
C3 = X' W_V, omega(v) := (max v - min v)/2 the half-range of a column, O = F C3, c = O - Y,
G = c C3^T, r = (F∘G) 1, P = F∘G - diag(r) F = dL/dS.

Step by step, each inequality with its proof (`derivation_steps()` states them in SymPy):

F   (Lemma 1) E~ = E∘(1+theta), |theta| <= delta  =>  F~_ij = F_ij (1+theta_ij)/(1+theta_i), with
    theta_i := sum_j F_ij theta_ij; so DF := F~ - F has rows summing to 0 and
    ||DF_i||_1 = sum_j F_ij |theta_ij - theta_i| / (1+theta_i) <= delta/(1-delta) = kappa
    (the mean absolute deviation of a variable in [-delta, delta] is <= delta). No factor L.
c   |Dc_ib| = |DF_i . (C3_b - m)| <= kappa omega(C3_b)   (rows of DF sum to 0: shift by the midrange m).
    O_i, O~_i are convex combinations of the rows of C3, so |c_ib|, |c~_ib| <= c^_ib :=
    max(|lo_b - Y_ib|, |hi_b - Y_ib|), [lo_b, hi_b] the range of column b of C3.
G,r,p1,p2  r_i = c_i . O_i, hence P_ij = F_ij T_ij with T_ij := c_i . (C3_j - O_i) (and P~ likewise):
    P 1 = P~ 1 = 0, and |T_ij| <= tau_i := sum_b t_ib, t_ib := max_{o in [lo_b, hi_b]} |o - Y_ib| *
    max(hi_b - o, o - lo_b) = 2 c^_ib omega_b (both factors peak at the end farther from Y_ib).
P   (row contraction) for every column v: |(DP v)_i| <= omega(v) psi_i with
    psi_i := kappa sum_b [t_ib + omega_b (omega_b + c^_ib)]:
    DP = DF∘T + F~∘DT, DT_ij = Dc_i . (C3_j - O~_i) - c_i . Dc_i; the first part is <= kappa tau_i
    omega(v) (Lemma 1, v shifted to its midrange); the second is a covariance under F~_i, at most
    omega(C3_b) omega(v) by Popoviciu / Cauchy-Schwarz, plus |c_i . Dc_i| omega(v).
dW  The L factor appears only where the gradient sums over rows, as data-dependent sums:
    |D dW_Q|_ab <= beta sum_i |X_ia| psi_i omega(C2_b)         (v = C2_b)
    |D dW_K|_ab <= beta sum_i |C1_ib| psi_i omega(X'_a)         (v = X'_a, P^T's rows are P's columns)
    |D dW_V|_ab <= kappa sum_i (omega(X'_a) c^_ib + max|X'_a| omega(C3_b))
    averaged over the batch (1/N sum_n).
A,B dA = s B^T dW, dB = s dW A^T (s = alpha/r):  |D dA| <= |s| |B|^T |D dW|, |D dB| <= |s| |D dW| |A|^T.

Second moments (the tight K, `coefficients_for(delta)`, valid for delta <= DELTA_CAP = 2^-6):
    With M_i <= mean_j S_ij (Jensen: sum_l e^S_il >= L_kv e^M_i) and |S_ij| <= R_i, F_ij <= lam_i/L_kv,
    lam_i := e^(R_i - M_i), and F~_ij <= PHI F_ij, PHI := (1+delta)/(1-delta) <= PHI_CAP; hence
    E_{F_i} g <= lam_i mean_j g_j for g >= 0 (likewise F~ with lam~_i = PHI_CAP lam_i).
    Lemma 1 as a covariance: DF_i . w = Cov_{F_i}(theta, w)/(1+theta_i), so |DF_i . w| <= kappa
    sd_{F_i}(w) <= kappa sqrt(lam_i mean_j (w_j - m)^2) for any m. With v' = v - mean(v), a_j :=
    ||C3_j - m3|| (m3 the column means), rho_i >= ||O_i - m3|| (<= sqrt(lam_i mean a^2) and <= max a),
    ||c_i|| <= min(rho_i + ||m3 - Y_i||, ||c^_i||), A0 = rms(v'), A1 = rms(a v'), s3_b = rms(C3_b - m3_b):
      |(DF∘T) v'|_i  <= kappa ||c_i|| sqrt(lam_i) (A1 + rho_i A0)     (|T_ij| <= ||c_i|| (a_j + rho_i), Minkowski)
      |Dc_i . Cov_{F~_i}(C3, v')| <= kappa sqrt(lam_i) lam~_i A0 sum_b s3_b^2
      |c_i . Dc_i| |E_{F~_i} v'| <= kappa ||c_i|| sqrt(lam_i) ||s3|| sqrt(lam~_i) A0
    and each row takes the smaller of this and omega(v) psi_i. dW_V: D = sum_i (DF_i . X'_a) c_ib +
    (F~_i . X'_a) Dc_ib with |c_ib| <= sqrt(lam_i) s3_b + |m3_b - Y_ib| (and <= c^_ib). Rounding of
    C2, C3 enters through |C_j - m| + E_j (exact deviations are below it). O(N L d^2), no L x L array.

The paper composes max-norms as if sub-multiplicative (erratum E4) and so loses the factors d L^2;
here they come back only as the sums over rows above, and the half-ranges omega replace max-norms.

Rounding floor (float64: u = 2^-53, float32: u = 2^-24; gamma_n := n u/(1 - n u), Higham's bound
|fl(sum of n-fold products) - exact| <= gamma_n sum |terms| for any summation order or blocking):
  (a) consistent part: rounding in W_mu = W* + s B A and in X W_mu perturbs the logits by at most
      sigma (Cauchy-Schwarz on the row errors), so the kernel the approximate path evaluates is
      E∘(1+theta') with |theta'| <= delta' := (1+delta) e^sigma - 1: the exact bound above with
      kappa(delta') - kappa(delta) covers it (the exact path: delta'_e from sigma, the rounding of S,
      the shift and exp, the latter assumed accurate to 4 ulp);
  (b) every F~-weighted sum the low-rank path forms from the features, sum_j E~_ij w_j (and the
      column sums sum_i E~_ij w_i / Z_i), is a nested sum in which each term passes through at
      most n := max(L, L_kv) + k + d + 2g + 8 roundings (`kernel_depth`; Higham's bound holds for
      any order or blocking of the sums, row chunks summed in any order included): <= L_kv - 1
      (or L - 1) additions over the keys (queries), <= k - 1 over the features, <= d - 1 over the
      face split, <= g + 2 in each of the two features (g - 1 monomial products, 1 for the scale,
      2 for the scale itself: sqrt of a rounded rational, then cast), and 5 products / divisions:
      the data face split (C3 ⊘ C2 or c~ ⊘ C1), the two feature products, the normalisation by
      alpha~ and the contraction with c~ (or C3); together <= n - 2. The normalisation is one
      rounding per term whether it divides U1 before the products (U1n = U1/alpha~) or their sum
      after them (T/alpha~, then FaceContract with c~): 1/alpha~_i is a factor of every term of
      row i, so the lemma-by-lemma and the fused evaluation order have the same depth.
      Hence its rounding is <= gamma_n sum_j |U1_i||U2_j| |w_j| <= gamma_n A(R_i) sum_j |w_j| with
      A(x) := sum_t |a_t| x^t (`ExpPolynomial.abs_coefficient_sum`; multinomial expansion) and
      R_i := |beta| ||C1_i|| max_j ||C2_j|| >= |S_ij|, while Z~_i >= (1-delta) L_kv e^M_i (Jensen,
      M_i <= the mean logit of row i, M_i >= -R_i). With Lambda_i := A(R_i) e^-M_i/(1-delta),
      t_i := gamma_n Lambda_i (the normaliser's relative error) and F~_ij <= lam~_i/L_kv,
      lam~_i := PHI(delta') e^(R_i - M_i), each average of row i is off by <= a_i mean_j|w_j| +
      b_i Avg_i(w), a_i = t_i/(1-t_i), b_i = (t_i + 2u)/(1-t_i), Avg_i(w) := min(max|w|, lam~_i
      mean|w|) >= F~_i |w| (A POSTERIORI: the means of |C3|, |C2|, |X'| and the pair means
      mean_j |C3_jb||C2_jb'|, mean_j |C3_jb||X'_ja| come from the data, O(L d^2)). Exact path:
      a = 0, b = gamma_{2 max(L, L_kv) + d + 8} (F formed explicitly);
  (c) the remaining products, sums and the chain rule are propagated stage by stage (c~, r~, the two
      parts of P~ C2, the sums over rows, the batch mean) with their own gamma's and the magnitudes
      above (`rounding.staged_floor`). The certificate's own float64 arithmetic is covered by a final
      relative margin of 2^-30.
The floor assumes the low-rank path contracts the features with the data in that form (any
order or blocking: the lemma-by-lemma chain or the fused one, `derivations/lowrank.py`, whole or
in row chunks) and that no reduced precision (TF32) is enabled.

Cost: O(N (L + L_kv) d^2) in blocks of rows (`_lib.blocks.CERTIFICATE_BLOCKS`), no L x L and no (L, d, d) array; all
that does not depend on the polynomial is computed once by `certify`, so each floor (one per
candidate degree in `select_degree`) is one more pass over the query rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import array_api_compat
import numpy as np
import sympy as sp

from .._lib import xp as _xp
from .._lib.blocks import CERTIFICATE_BLOCKS, accumulate, recycle_block_memory
from .._lib.xp import to_host64, transposed_rows, transposed_take
from ..errors import InvalidInputError, InvalidTypeError
from ..problem import check_problem
from .polynomial import ExpPolynomial
from .rounding import DELTA_CAP, PHI_CAP, floor_rows, gamma, kernel_depth, staged_floor, unit_roundoff

__all__ = ["DELTA_CAP", "KAPPA", "MARGIN", "Certificate", "Step", "certify", "delta_of", "derivation_steps",
           "error_block", "gamma", "joint_max", "kappa_of", "key_statistics", "logit_enclosure", "magnitude_certificate",
           "projections", "psi_const", "psi_slope", "psi_term", "take_cols", "unit_roundoff", "v_term"]

# ----------------------------------------------------------------------------------------------
# the symbolic layer: named quantities and the inequalities between them

delta, kappa = sp.symbols("delta kappa", nonnegative=True)
t_ib, omega_b, chat_ib, omega_xa, mu_xa = sp.symbols(
    "t_ib omega_b chat_ib omega_Xa mu_Xa", nonnegative=True)
beta_s, sigma_s = sp.symbols("beta sigma", nonnegative=True)

#: Lemma 1: the relative error of F~ in row-l1 norm per unit of delta.
KAPPA = delta / (1 - delta)
#: its inverse, delta as a function of kappa (solved, not typed in)
DELTA_OF_KAPPA = sp.solve(sp.Eq(kappa, KAPPA), delta)[0]
#: psi_i / kappa = sum_b PSI_TERM: the per-row bound of the row contraction step
PSI_TERM = t_ib + omega_b * (omega_b + chat_ib)
#: |D dW_V|_ab / kappa = sum_i V_TERM
V_TERM = omega_xa * chat_ib + mu_xa * omega_b
#: the consistent relative error after logit rounding sigma
DELTA_PRIME = (1 + delta) * sp.exp(sigma_s) - 1

#: t_ib in closed form: both factors of |o - Y_ib| max(hi_b - o, o - lo_b) are largest at the end
#: of [lo_b, hi_b] farther from Y_ib (|o - Y_ib| <= c^_ib, max(..) <= hi_b - lo_b = 2 omega_b)
T_CLOSED = 2 * omega_b * chat_ib
#: PSI_TERM at t_ib = T_CLOSED is affine in c^_ib: psi_i / kappa = sum_b (PSI_SLOPE c^_ib + PSI_CONST),
#: one GEMV per row block (coefficients read off symbolically, not typed in)
_PSI_POLY = sp.Poly(sp.expand(PSI_TERM.subs(t_ib, T_CLOSED)), chat_ib)
PSI_SLOPE, PSI_CONST = _PSI_POLY.coeff_monomial(chat_ib), _PSI_POLY.coeff_monomial(1)

_kappa = sp.lambdify(delta, KAPPA, modules="math")
_delta_of_kappa = sp.lambdify(kappa, DELTA_OF_KAPPA, modules="math")
psi_term = sp.lambdify((t_ib, omega_b, chat_ib), PSI_TERM, modules=[{}])  # operators only: any xp
psi_slope = sp.lambdify(omega_b, PSI_SLOPE, modules=[{}])
psi_const = sp.lambdify(omega_b, PSI_CONST, modules=[{}])
v_term = sp.lambdify((omega_xa, chat_ib, mu_xa, omega_b), V_TERM, modules=[{}])


@dataclass(frozen=True)
class Step:
    """One inequality of the derivation: `lhs <= rhs`, and why."""

    name: str
    lhs: sp.Expr
    rhs: sp.Expr
    reason: str

    def latex(self) -> str:
        return f"{sp.latex(self.lhs)} \\le {sp.latex(self.rhs)}"


def derivation_steps() -> tuple[Step, ...]:
    """The chain F~ -> c~ -> G~ -> p~1 -> row sums -> p~2 -> dW -> dA, dB as SymPy inequalities."""
    S = sp.Symbol
    psi = kappa * sp.Sum(PSI_TERM, (S("b"), 1, S("d")))
    sum_i = lambda e: sp.Sum(e, (S("i"), 1, S("L")))  # noqa: E731
    return (
        Step("F", S(r"\|\tilde F_i - F_i\|_1"), KAPPA,
             "Lemma 1: F~_ij = F_ij(1+theta_ij)/(1+theta_i); mean abs. deviation <= delta"),
        Step("c", S(r"|\tilde c_{ib} - c_{ib}|"), kappa * omega_b,
             "rows of F~ - F sum to 0: shift C3_b by its midrange (Alman-Song, sharpened)"),
        Step("G", S(r"|\tilde G_{ij} - G_{ij}|"),
             kappa * sp.Sum(omega_b * S(r"|C3_{jb}|"), (S("b"), 1, S("d"))),
             "G~ - G = (c~ - c) C3^T"),
        Step("p1-p2", S(r"|\tilde T_{ij}|, |T_{ij}|"), sp.Sum(t_ib, (S("b"), 1, S("d"))),
             "r_i = c_i.O_i so P = F∘T, T_ij = c_i.(C3_j - O_i); O in the range of C3"),
        Step("P v", S(r"|((\tilde P - P) v)_i|"), S(r"\omega(v)") * psi,
             "DP = DF∘T + F~∘DT; Lemma 1 and Popoviciu's covariance bound"),
        Step("dW_Q", S(r"|\Delta dW_{Q,ab}|"),
             beta_s * S(r"\omega(C2_b)") * sum_i(S(r"|X_{ia}|") * S(r"\psi_i")), "v = C2_b, sum over rows"),
        Step("dW_K", S(r"|\Delta dW_{K,ab}|"),
             beta_s * S(r"\omega(X'_a)") * sum_i(S(r"|C1_{ib}|") * S(r"\psi_i")), "v = X'_a, P^T C1"),
        Step("dW_V", S(r"|\Delta dW_{V,ab}|"), kappa * sum_i(V_TERM),
             "X'^T(F~^T c~ - F^T c) = sum_i (DM_ia c~_ib + M_ia Dc_ib), M = F X'"),
        Step("A, B", S(r"|\Delta dA|, |\Delta dB|"), S(r"|s| |B|^T |\Delta dW|, |s| |\Delta dW| |A|^T"),
             "LoRA chain rule, entrywise triangle inequality"),
        Step("floor", S(r"\delta'"), DELTA_PRIME, "logit rounding sigma acts as a consistent relative error"),
    )


# ----------------------------------------------------------------------------------------------
# small helpers

def kappa_of(delta_value: float) -> float:
    """kappa = delta / (1 - delta); inf for delta >= 1 (F~ may then have negative entries)."""
    return math.inf if delta_value >= 1.0 else float(_kappa(delta_value))


def delta_of(kappa_value: float) -> float:
    """The inverse of `kappa_of`: delta = kappa / (1 + kappa)."""
    return float(_delta_of_kappa(kappa_value))



# The certificate's own float64 evaluation: a relative margin far above its rounding (~1e-13).
MARGIN = 1.0 + 2.0**-30


def joint_max(xp, lo, hi, y):
    """t = max_{o in [lo, hi]} |o - y| * max(hi - o, o - lo), elementwise, in closed form T_CLOSED:
    for o in [lo, hi], |o - y| <= c^ := max(|lo - y|, |hi - y|) (convexity) and max(hi - o, o - lo)
    <= hi - lo, and both bounds are attained at once at the end farther from y."""
    return (hi - lo) * xp.maximum(xp.abs(lo - y), xp.abs(hi - y))


# ----------------------------------------------------------------------------------------------
# the data-dependent certificate


@dataclass
class Certificate:
    """kappa-coefficients and rounding floors of one problem (see the module docstring).

    `coefficients[key]` (key "A_Q", "B_Q", ...) is the per-entry matrix K with
    |approximate - exact| <= kappa(delta) K entrywise in exact arithmetic; `bound(poly)` adds the
    rounding floor and returns the max over entries per key.
    """

    N: int
    L: int
    L_kv: int
    d: int
    r: int
    adapted: tuple
    dtype: str
    logit_bound: float       # R: >= |S_ij| for the exact and for the computed logits
    sigma: float             # logit rounding: |S^ - S| <= sigma
    coefficients: dict       # key -> np.ndarray (per entry)
    weight_coefficients: dict  # mu -> d x d K of dW_mu
    _rows: dict = field(repr=False)    # row blocks (sorted by lam_i) and statistics for the floors
    _chain: dict = field(repr=False)   # mu -> (|s||B|^T, |s||A|^T) host arrays
    #: the second-moment coefficients (module docstring, "Second moments"): valid for delta <= DELTA_CAP
    tight_coefficients: dict | None = None
    tight_weight_coefficients: dict | None = None

    def coefficients_for(self, delta_value: float) -> dict:
        """The per-entry K valid at relative error delta: the tight ones when delta <= DELTA_CAP."""
        if self.tight_coefficients is not None and delta_value <= DELTA_CAP:
            return self.tight_coefficients
        return self.coefficients

    def weight_coefficients_for(self, delta_value: float) -> dict:
        if self.tight_weight_coefficients is not None and delta_value <= DELTA_CAP:
            return self.tight_weight_coefficients
        return self.weight_coefficients

    # -- exact-arithmetic part ---------------------------------------------------------------
    def approximation_bound(self, delta_value: float) -> dict:
        """max-abs bound per key in exact arithmetic: kappa(delta) * max K."""
        k = kappa_of(delta_value)
        return {key: k * float(np.max(K)) if k < math.inf else math.inf
                for key, K in self.coefficients_for(delta_value).items()}

    # -- rounding floors ----------------------------------------------------------------------
    def rounding_floor(self, poly: ExpPolynomial) -> dict:
        """Per-entry floor (key -> array) of the low-rank path at polynomial `poly` in this dtype.

        Row i's kernel sums use Lambda_i = A(R_i) e^{-M_i} / (1 - delta) with R_i := |beta|
        ||C1_i|| max_j ||C2_j|| >= |S_ij| for all j, so sum_m |U1_im U2_jm| <= A(R_i), and
        Z~_i >= (1 - delta) sum_j e^{S^_ij} >= (1 - delta) L_kv e^{M_i} by Jensen, M_i a lower bound
        on the mean logit beta C1_i . mean_j C2_j (and on -R_i)."""
        _check_poly(poly)
        u = unit_roundoff(self.dtype)
        dlt = poly.rel_error
        if dlt >= 1.0 or poly.radius < self.logit_bound:  # no relative error certified on [-R, R]
            return self._infinite()
        R = poly.radius
        n = kernel_depth(self.L, self.L_kv, self.d, poly.degree)
        xp = self._rows["xp"]
        # A(R_i) = sum_t |a_t| R_i^t by Horner on nonnegative terms, coefficients rounded up
        # (relative rounding <= gamma_{2g+2}, covered by the 2^-30 margin)
        coeffs = [math.nextafter(abs(float(a)), math.inf) for a in reversed(poly.coefficients)]
        g_n, shift = gamma(n, u), math.log1p(-dlt)

        def g_lam(chunk):                                            # gamma_n Lambda_i per row
            Ri = chunk["Ri"]
            absum = 0.0 * Ri
            for a in coeffs:
                absum = absum * Ri + a
            return g_n * xp.exp(xp.minimum(xp.log(absum * MARGIN) - chunk["Mi"] - shift, 700.0))

        t_rows = [g_lam(chunk) for chunk in self._rows["chunks"]]
        if not max(float(xp.max(t)) for t in t_rows) < 0.5:
            return self._infinite()
        dprime = (1 + dlt) * math.exp(self.sigma + 4 * u * R) - 1
        # row i of any average F~_i w: |error| <= a_i mean_j|w_j| + b_i Avg_i(w) (module docstring (b))
        ab = [(t / (1 - t), (t + 2 * u) / (1 - t)) for t in t_rows]
        return self._floor(ab, kappa_of(dprime) - kappa_of(dlt), u, dprime)

    def exact_floor(self) -> dict:
        """Per-entry rounding floor (key -> array) of the exact O(L^2 d) path in this dtype."""
        u = unit_roundoff(self.dtype)
        R = self.logit_bound
        dprime = math.exp(self.sigma + gamma(self.d + 1, u) * R + 2 * u * R) * (1 + 8 * u) - 1
        # F is formed explicitly: every average's error is <= gamma_n sum_j F_ij |w_j| <= gamma_n Avg_i(w)
        b_row = gamma(2 * max(self.L, self.L_kv) + self.d + 8, u)
        return self._floor([(0.0, b_row)] * len(self._rows["chunks"]), kappa_of(dprime), u, dprime)

    def _infinite(self) -> dict:
        return {key: np.full_like(K, np.inf) for key, K in self.coefficients.items()}

    def gradient_magnitudes(self) -> dict:
        """{key: upper bound of max |exact gradient|}: the floor's magnitudes (exact F, F_ij <=
        lam_i / L_kv) through the LoRA chain."""
        u = unit_roundoff(self.dtype)
        _, mag = staged_floor(self._rows, [(0.0, 0.0)] * len(self._rows["chunks"]), u, self.N, self.L,
                              self.L_kv, self.d, 0.0)
        out = {}
        for m in self.adapted:
            bt, at = self._chain[m]
            out[f"A_{m}"] = float(np.max(bt @ mag[m])) * MARGIN
            out[f"B_{m}"] = float(np.max(mag[m] @ at)) * MARGIN
        return out

    def _floor(self, ab, extra_kappa: float, u: float, dprime: float) -> dict:
        """The floors from (a_i, b_i) per row chunk (module docstring (b)) and the consistent part."""
        if not math.isfinite(extra_kappa):
            return self._infinite()
        err, mag = staged_floor(self._rows, ab, u, self.N, self.L, self.L_kv, self.d, dprime)
        weights = self.weight_coefficients_for(dprime)  # K must hold at the consistent delta'
        out = {}
        for m in self.adapted:
            total = extra_kappa * weights[m] + err[m]
            bt, at = self._chain[m]
            chain = gamma(self.d + 2, u)
            out[f"A_{m}"] = (bt @ total + chain * (bt @ (mag[m] + err[m]))) * MARGIN
            out[f"B_{m}"] = (total @ at + chain * ((mag[m] + err[m]) @ at)) * MARGIN
        return out

    # -- totals -----------------------------------------------------------------------------
    def entry_bounds(self, poly: ExpPolynomial, floor: dict | None = None) -> dict:
        """Per-entry certified bound (key -> array): kappa(delta) K + the rounding floor (computed
        unless given). Infinite unless poly.radius >= logit_bound and delta < 1."""
        floor = self.rounding_floor(poly) if floor is None else floor
        k = kappa_of(poly.rel_error)
        return {key: (k * K * MARGIN + floor[key]) if k < math.inf else np.full_like(K, np.inf)
                for key, K in self.coefficients_for(poly.rel_error).items()}

    def bound(self, poly: ExpPolynomial) -> dict:
        """Certified max-abs error per key of the low-rank path at `poly` (rounding included)."""
        return self.bound_and_floor(poly)[0]

    def bound_and_floor(self, poly: ExpPolynomial) -> tuple[dict, dict]:
        """(bound, its rounding part) per key, max over entries."""
        floor = self.rounding_floor(poly)
        total = self.entry_bounds(poly, floor)
        return ({key: float(np.max(v)) for key, v in total.items()},
                {key: float(np.max(v)) for key, v in floor.items()})

    def exact_bound(self) -> dict:
        """Certified max-abs error per key of the exact path (its rounding floor only)."""
        return {key: float(np.max(v)) for key, v in self.exact_floor().items()}

    def required_kappa(self, eps: float, floor: dict | None = None) -> float:
        """Largest kappa with kappa K(delta(kappa)) + floor <= eps in every entry (0 if the floor
        alone fails). K is the tight K up to kappa_cap := kappa(DELTA_CAP), the general K above:
        the feasible set is [0, min(kappa_cap, k_tight)] u (kappa_cap, k_any], k_tight >= k_any."""
        k_any = self._required_kappa(self.coefficients, eps, floor)
        if self.tight_coefficients is None:
            return k_any
        cap = kappa_of(DELTA_CAP)
        if k_any > cap:
            return k_any
        return min(cap, self._required_kappa(self.tight_coefficients, eps, floor))

    def _required_kappa(self, coefficients, eps, floor):
        best = math.inf
        for key, K in coefficients.items():
            f = np.zeros_like(K) if floor is None else floor[key]
            slack = eps - f
            if np.any(slack < 0):
                return 0.0
            with np.errstate(divide="ignore"):
                ratio = np.where(K > 0, slack / (K * MARGIN), np.inf)
            best = min(best, float(np.min(ratio)))
        return best

    def required_delta(self, eps: float, floor: dict | None = None) -> float:
        """Largest certified relative error delta of the exp polynomial that still meets eps."""
        k = self.required_kappa(eps, floor)
        return 1.0 if k == math.inf else delta_of(k)


def _check_poly(poly):
    if not isinstance(poly, ExpPolynomial):
        raise InvalidTypeError(f"poly must be an ExpPolynomial, got {type(poly).__name__}")


def projections(problem) -> dict:
    """float64 views and the projections C_mu = X W_mu (W_mu with its adapter) of a problem, and
    the matrices M_mu with E_mu := |X| M_mu >= |computed - exact| entrywise for X W_mu computed in
    the problem's dtype: |fl(X fl(W* + s B A)) - X W| <= gamma_{d+r+4} |X| (|W*| + |s||B||A|), any
    product order (E is formed block by block where it is used, never for all rows at once).
    "norms" holds the row norms (N, L) of C_Q, E_Q, C_K, E_K (keys "Q", "EQ", "K", "EK")."""
    check_problem(problem)
    xp = problem.xp
    u = unit_roundoff(problem.dtype_name)
    s = abs(problem.scale)
    f64 = lambda a: xp.astype(a, xp.float64, copy=False)  # noqa: E731
    X, Xkv, Y = f64(problem.X3), f64(problem.Xkv3), f64(problem.Y3)
    C, M = {}, {}
    g_in = gamma(problem.d + problem.r + 4, u)
    for m in "QKV":
        W = f64(problem.W[m])
        Wabs = xp.abs(W)
        if m in problem.adapted:
            A_, B_ = f64(problem.A[m]), f64(problem.B[m])
            W = W + problem.scale * (B_ @ A_)
            Wabs = Wabs + s * (xp.abs(B_) @ xp.abs(A_))
        C[m] = (X if m == "Q" else Xkv) @ W
        M[m] = g_in * Wabs
    norms = {}
    for m, Xm in (("Q", X), ("K", Xkv)):
        parts = [_block_norms(xp, transposed_rows(xp, C[m], rows),
                              error_block(xp, M[m], xp.abs(transposed_rows(xp, Xm, rows))))
                 for rows in CERTIFICATE_BLOCKS.slices(Xm.shape[1], 8 * Xm.shape[0] * Xm.shape[2])]
        for key, k in ((m, 0), ("E" + m, 1)):
            norms[key] = xp.concat([p[k] for p in parts], axis=1) if len(parts) > 1 else parts[0][k]
    aXkv = xp.abs(Xkv)
    return {"xp": xp, "u": u, "X": X, "Xkv": Xkv, "Y": Y, "aXkv": aXkv, "C": C, "M": M, "norms": norms}


def error_block(xp, M, aXT):
    """E^T = M^T |X|^T for a transposed block |X|^T (N, d, n) of inputs: the error bound of X W."""
    return xp.matrix_transpose(M) @ aXT


def _block_norms(xp, CT, ET):
    """Row norms (N, n) of transposed blocks C^T, E^T (N, d, n)."""
    ones = xp.ones((1, CT.shape[1]), dtype=CT.dtype, device=array_api_compat.device(CT))
    return xp.sqrt(ones @ (CT * CT))[:, 0, :], xp.sqrt(ones @ (ET * ET))[:, 0, :]


def logit_enclosure(problem, proj: dict | None = None) -> tuple[float, float]:
    """(R, sigma): R >= |S_ij| for the exact logits S = beta C1 C2^T and for the computed ones
    (Cauchy-Schwarz, R = |beta| max_i ||C1_i|| max_j ||C2_j|| plus the rounding of C1, C2), and
    sigma >= |S^_ij - S_ij| (the logit rounding)."""
    proj = projections(problem) if proj is None else proj
    xp, n = proj["xp"], proj["norms"]
    beta = abs(problem.beta)
    qn, qe, kn, ke = (float(xp.max(n[key])) for key in ("Q", "EQ", "K", "EK"))
    R = beta * (qn + 2 * qe) * (kn + 2 * ke) * MARGIN
    sigma = beta * (qe * (kn + 2 * ke) + (qn + qe) * ke) * MARGIN
    return R, sigma


def key_statistics(xp, proj) -> dict:
    """Column statistics over the key rows j of C2 = X' W_K, C3 = X' W_V and X', each (N, d, 1)
    (pair means (N, d, d)): the means first (GEMVs), then one pass over row blocks for extremes,
    means of magnitudes, pair means and the deviations from the means (second moments)."""
    C, M, Xkv = proj["C"], proj["M"], proj["Xkv"]
    N, L_kv, d = Xkv.shape
    tr = lambda a: xp.permute_dims(a, (0, 2, 1))  # noqa: E731
    rmin = lambda a: xp.min(a, axis=-1, keepdims=True)  # noqa: E731
    rmax = lambda a: xp.max(a, axis=-1, keepdims=True)  # noqa: E731
    rsum = lambda a: xp.sum(a, axis=-1, keepdims=True)  # noqa: E731
    add, lo, hi = (lambda a, b: a + b), xp.minimum, xp.maximum
    device = array_api_compat.device(Xkv)
    ones_rows = xp.ones((1, L_kv), dtype=Xkv.dtype, device=device)
    ones = xp.ones((1, d), dtype=Xkv.dtype, device=device)
    # the centres (any centre is valid for the second-moment bounds; the mean minimises them)
    m3, mK, mX = (tr(ones_rows @ a) / L_kv for a in (C["V"], C["K"], Xkv))
    acc: dict = {}
    for rows in CERTIFICATE_BLOCKS.slices(L_kv, 8 * N * d):
        c3, c2, x = (transposed_rows(xp, a, rows) for a in (C["V"], C["K"], Xkv))   # (N, d, n)
        ax, ac2 = xp.abs(x), xp.abs(c2)
        e3, e2 = error_block(xp, M["V"], ax), error_block(xp, M["K"], ax)
        a3, a2 = xp.abs(c3) + 2 * e3, ac2 + 2 * e2                     # >= |C3|, |C2| computed and exact
        dev3 = xp.abs(c3 - m3) + e3                                     # >= |exact C3_j - m3|
        sq3 = dev3 * dev3
        asq = ones @ sq3                                                # (N, 1, n): a_j^2
        devK = xp.abs(c2 - mK) + e2
        devx = xp.abs(x - mX)
        sqK, sqx = devK * devK, devx * devx
        for key, value, op in (
                ("lo3", rmin(c3 - e3), lo), ("hi3", rmax(c3 + e3), hi), ("lo2", rmin(c2 - e2), lo),
                ("hi2", rmax(c2 + e2), hi), ("lox", rmin(x), lo), ("hix", rmax(x), hi),
                ("mux", rmax(ax), hi), ("e2", rmax(e2), hi), ("e3", rmax(e3), hi), ("c2max", rmax(ac2), hi),
                ("sum_a3", rsum(a3), add), ("sum_a2", rsum(a2), add), ("sum_ax", rsum(ax), add),
                ("sum_x2", rsum(x * x), add),
                ("S32", a3 @ tr(a2), add),                              # sum_j |C3_jb||C2_jb'|
                ("S3X", a3 @ tr(ax), add),                              # sum_j |C3_jb||X'_ja|
                ("s3sq", rsum(sq3), add), ("sum_asq", rsum(asq), add), ("max_asq", rmax(asq), hi),
                ("A0K", rsum(sqK), add), ("A1K", sqK @ tr(asq), add),
                ("A0x", rsum(sqx), add), ("A1x", sqx @ tr(asq), add)):
            accumulate(acc, key, value, op)
    mean = lambda key: acc[key] / L_kv  # noqa: E731
    half = lambda key: (acc["hi" + key] - acc["lo" + key]) / 2  # noqa: E731
    return {
        "lo3": acc["lo3"], "hi3": acc["hi3"], "lo2": acc["lo2"], "hi2": acc["hi2"], "lox": acc["lox"],
        "hix": acc["hix"], "w3": half("3"), "w2": half("2"), "wx": half("x"),
        "mux": acc["mux"], "m3": m3, "mK": mK,
        # second moments: s3_b^2, mean_j a_j^2, max_j a_j^2, and per column v of C2 (K) and X' (x)
        # A0 = rms(dev v), A1 = rms(a dev v); mean_j (X'_ja - mean)^2 and mean_j X'_ja^2
        "s3sq": mean("s3sq"), "mean_a2": mean("sum_asq"), "max_a2": acc["max_asq"],
        "A0K": xp.sqrt(mean("A0K")), "A1K": xp.sqrt(mean("A1K")), "A0x": xp.sqrt(mean("A0x")),
        "A1x": xp.sqrt(mean("A1x")), "devx2": mean("A0x"), "x2": mean("sum_x2"),
        # for the floors: means of the magnitudes, pair means, maxima and input errors
        "m3f": mean("sum_a3"), "m2f": mean("sum_a2"), "mxf": mean("sum_ax"),
        "S32": mean("S32"), "S3X": mean("S3X"), "e2": acc["e2"], "e3": acc["e3"],
        "mu2": acc["c2max"] + 2 * acc["e2"],
        "mu3": xp.maximum(xp.abs(acc["lo3"]), xp.abs(acc["hi3"])) + acc["e3"],
    }


def take_cols(xp, v, idx):
    """Columns idx[s] of sample s of an (N, m, L) array, as (N, m, n)."""
    if v.shape[0] == 1:
        return xp.expand_dims(xp.take(v[0, ...], idx[0, :], axis=1), axis=0)
    return xp.stack([xp.take(v[s, ...], idx[s, :], axis=1) for s in range(v.shape[0])], axis=0)


def certify(problem, proj: dict | None = None) -> Certificate:
    """The data-dependent certificate of a `LoRAProblem` (O(N L d^2) work, no L x L array);
    `proj` = `projections(problem)` when already computed.

    Everything that does not depend on the polynomial is computed here, once: column statistics
    of the keys (`key_statistics`), then one pass over blocks of query rows taken in the order of
    lam_i (the floors only ever sum over rows, and `_capped_products` wants them sorted) that
    accumulates the row sums of K and keeps what the floors need per row."""
    check_problem(problem)
    if problem.normalizer_offset:  # rows of F then sum to less than 1: not what the steps below assume
        raise InvalidInputError("normalizer_offset > 0 (Softmax_1): this global certificate covers softmax "
                                "only; the row-adaptive one (`adaptive.certify_adaptive`) covers Softmax_1")
    proj = projections(problem) if proj is None else proj
    xp, C, M = proj["xp"], proj["C"], proj["M"]
    recycle_block_memory(xp)
    X, Y = proj["X"], proj["Y"]
    N, L, d, r = problem.N, problem.L, problem.d, problem.r
    s, beta = abs(problem.scale), abs(problem.beta)
    R, sigma = logit_enclosure(problem, proj)
    nrm = proj["norms"]
    kmax = float(xp.max(nrm["K"] + 2 * nrm["EK"]))
    Ri = xp.minimum(beta * (nrm["Q"] + 2 * nrm["EQ"]) * kmax * MARGIN, R)   # (N, L)
    ks = key_statistics(xp, proj)
    # Jensen: sum_j e^{S_ij} >= L_kv e^{mean_j S_ij}; the mean logit, less sigma and its own float64
    # rounding: a nested sum of depth <= L_kv + d + 3 of terms beta C1_ib C2_jb / L_kv, whose
    # magnitudes sum to <= |beta| ||C1_i|| ||mean_j |C2_j| || (Cauchy-Schwarz)
    mean_logit = problem.beta * (C["Q"] @ ks["mK"])[:, :, 0]
    m2_norm = xp.sqrt(xp.sum(ks["m2f"] * ks["m2f"], axis=1))                 # (N, 1)
    rounding = gamma(problem.L_kv + d + 3, 2.0**-53) * beta * nrm["Q"] * m2_norm
    Mi = xp.maximum(mean_logit - sigma - rounding * MARGIN, -Ri)
    lam = xp.exp(Ri - Mi)                                   # (N, L): F_ij <= lam_i / L_kv
    order = xp.argsort(lam, axis=1)

    tr = lambda a: xp.permute_dims(a, (0, 2, 1))  # noqa: E731
    ones = xp.ones((1, d), dtype=X.dtype, device=array_api_compat.device(X))
    w3, w2, wx, mux, m3, s3sq = (ks[k] for k in ("w3", "w2", "wx", "mux", "m3", "s3sq"))
    mid3 = (ks["lo3"] + ks["hi3"]) / 2                      # c^ = max(|lo3 - Y|, |hi3 - Y|) = |Y - mid3| + w3
    sum_s3 = xp.sum(s3sq, axis=1, keepdims=True)            # (N, 1, 1)
    s3, sdevx, sx2 = xp.sqrt(s3sq), xp.sqrt(ks["devx2"]), xp.sqrt(ks["x2"])
    slope_T = tr(psi_slope(w3))                          # psi_i = slope . c^_i + const (T_CLOSED)
    const = xp.sum(psi_const(w3), axis=1, keepdims=True)
    sqrt_mean_a2, sqrt_max_a2 = xp.sqrt(ks["mean_a2"]), xp.sqrt(ks["max_a2"])
    per_row = xp.stack([lam, Ri, Mi], axis=1)               # (N, 3, L)
    acc: dict = {}
    add = lambda a, b: a + b  # noqa: E731
    chunks = []
    for rows in CERTIFICATE_BLOCKS.slices(L, 8 * N * d):
        idx = order[:, rows]
        Xb, C1, Yb = (transposed_take(xp, a, idx) for a in (X, C["Q"], Y))                 # (N, d, n)
        lrm = take_cols(xp, per_row, idx)
        lam_b, Ri_b, Mi_b = lrm[:, 0:1, :], lrm[:, 1:2, :], lrm[:, 2:3, :]           # (N, 1, n)
        aX = xp.abs(Xb)
        E1 = error_block(xp, M["Q"], aX)
        aC1 = xp.abs(C1) + E1
        # -- the exact-arithmetic K (module docstring, steps c .. dW): psi_i / kappa, c^_i
        chat = xp.abs(Yb - mid3) + w3
        psi = slope_T @ chat + const                                          # (N, 1, n)
        psiT = tr(psi)
        accumulate(acc, "Q", aX @ psiT, add)                     # sum_i |X_ia| psi_i
        accumulate(acc, "K", aC1 @ psiT, add)                    # sum_i |C1_ib| psi_i
        accumulate(acc, "V", xp.sum(chat, axis=-1, keepdims=True), add)
        # -- the second-moment K (module docstring, "Second moments"); row factors (N, 1, n)
        m3y = xp.abs(m3 - Yb)
        sl = xp.sqrt(lam_b)
        slt = math.sqrt(PHI_CAP) * sl                       # sqrt(lam~_i): F~_ij <= lam~_i / L_kv
        rho = xp.minimum(sl * sqrt_mean_a2, sqrt_max_a2)    # >= ||O_i - m3||
        cn = xp.minimum(rho + xp.sqrt(ones @ (m3y * m3y)), xp.sqrt(ones @ (chat * chat)))  # >= ||c_i||
        dcn = sl * xp.sqrt(sum_s3)                          # ||Dc_i|| / kappa
        # the row contraction's three terms t1 + t2 + t3 = x1 A1 + x0 A0 with row factors
        # (t1 = cn sqrt(lam) (A1 + rho A0), t2 = sqrt(lam) lam~ sum_s3 A0, t3 = cn dcn sqrt(lam~) A0)
        x1 = cn * sl
        x0 = x1 * rho + sl * (slt * slt) * sum_s3 + cn * dcn * slt
        row_q = xp.minimum(psi * w2, x1 * ks["A1K"] + x0 * ks["A0K"])           # (N, d_b, n)
        row_k = xp.minimum(psi * wx, x1 * ks["A1x"] + x0 * ks["A0x"])           # (N, d_a, n)
        # dW_V: sum_i |DF_i . X'_a| |c_ib| + |F~_i . X'_a| |Dc_ib|, each factor the smaller of two bounds
        sd3 = sl * s3                                       # >= sd_{F_i}(C3_b)
        cabs = xp.minimum(chat, sd3 + m3y)                  # >= |c_ib| (exact)
        p, q = xp.minimum(wx, sl * sdevx), xp.minimum(mux, slt * sx2)
        accumulate(acc, "tQ", aX @ tr(row_q), add)
        accumulate(acc, "tK", row_k @ tr(aC1), add)
        accumulate(acc, "tV", p @ tr(cabs) + q @ tr(xp.minimum(w3, sd3)), add)
        # -- what the floors need per row: |c~_ib| <= sd_{F~_i}(C3_b) + |m3_b - Y_ib| when F~ <= PHI_CAP F
        ctight = xp.minimum(chat, slt * s3 + m3y)
        chunks.append({"lam": lam_b, "Ri": Ri_b, "Mi": Mi_b, "aX": aX, "aC1": aC1 + E1, "e1": E1,
                       "chat": chat, "ctight": ctight})
    batch = lambda a: xp.sum(a, axis=0) / N  # noqa: E731
    K = {
        "Q": beta * batch(acc["Q"] @ tr(w2)),               # sum_i |X_ia| psi_i omega(C2_b)
        "K": beta * batch(wx @ tr(acc["K"])),               # omega(X'_a) sum_i |C1_ib| psi_i
        # sum_i V_TERM(omega(X'_a), c^_ib, max|X'_a|, omega(C3_b)): V_TERM is additive in
        # (c^_ib, max|X'_a|) (tests check it symbolically), so the sum over i goes inside
        "V": batch(v_term(wx, tr(acc["V"]), L * mux, tr(w3))),
    }
    Kt = {"Q": beta * batch(acc["tQ"]), "K": beta * batch(acc["tK"]), "V": batch(acc["tV"])}
    weight_coefficients = {m: to_host64(K[m]) for m in problem.adapted}
    tight_weight = {m: to_host64(Kt[m]) for m in problem.adapted}
    chain, coefficients, tight = {}, {}, {}
    for m in problem.adapted:
        bt = s * np.abs(to_host64(problem.B[m])).T          # r x d
        at = s * np.abs(to_host64(problem.A[m])).T          # d x r
        chain[m] = (bt, at)
        coefficients[f"A_{m}"] = bt @ weight_coefficients[m]
        coefficients[f"B_{m}"] = weight_coefficients[m] @ at
        tight[f"A_{m}"] = bt @ tight_weight[m]
        tight[f"B_{m}"] = tight_weight[m] @ at
    rows = floor_rows(xp, chunks, beta, m3=ks["m3f"], m2=ks["m2f"], mx=ks["mxf"], mu3=ks["mu3"], e3=ks["e3"],
                       mu2=ks["mu2"], e2=ks["e2"], mux=mux, S32=ks["S32"], S3X=ks["S3X"])
    return Certificate(
        N=N, L=L, L_kv=problem.L_kv, d=d, r=r, adapted=problem.adapted, dtype=problem.dtype_name,
        logit_bound=R, sigma=sigma, coefficients=coefficients, weight_coefficients=weight_coefficients,
        _rows=rows, _chain=chain, tight_coefficients=tight, tight_weight_coefficients=tight_weight,
    )


def magnitude_certificate(*, L, L_kv, d, r, N, adapt, beta, scale, input_bound, value_bound,
                          target_bound, query_bound, key_bound, adapter_bound, dtype="float64",
                          logit_bound) -> Certificate:
    """A `Certificate` from entry magnitudes alone (no data): the same formulas evaluated on one
    representative sample whose every row attains the bounds (|X|, |X'| <= input_bound, C3 columns
    spanning [-value_bound, value_bound], |Y| <= target_bound, |X W_Q| <= query_bound, C2 columns
    spanning [-key_bound, key_bound], |A|, |B| <= adapter_bound). Sums over rows become L times the
    row term. Input rounding assumes |X||W_mu| <= sqrt(d) times the entry bound of X W_mu."""
    np_xp = _xp.resolve_namespace(None)
    full = lambda shape, v: np.full(shape, float(v))  # noqa: E731
    u = unit_roundoff(dtype)
    g_in = gamma(d + r + 4, u)
    v, y, x, q, kb = value_bound, target_bound, input_bound, query_bound, key_bound
    lo3, hi3 = full((1, 1, d), -v), full((1, 1, d), v)
    Y = full((1, 1, d), y)  # one representative row; every sum over rows is L times its term
    chat = np.maximum(np.abs(lo3 - Y), np.abs(hi3 - Y))
    t = joint_max(np_xp, lo3, hi3, Y)
    psi = np.sum(psi_term(t, v, chat), axis=-1)
    aX = full((1, 1, d), x)
    e1 = full((1, 1, d), g_in * math.sqrt(d) * q)
    aC1 = full((1, 1, d), q) + e1
    K = {
        "Q": L * beta * np.outer(np.sum(aX * psi[:, :, None], axis=1)[0], full(d, kb)),
        "K": L * beta * np.outer(full(d, x), np.sum(aC1 * psi[:, :, None], axis=1)[0]),
        "V": L * v_term(full((d, 1), x), chat[0, 0][None, :], full((d, 1), x), full((1, d), v)),
    }
    bt = abs(scale) * full((r, d), adapter_bound)
    at = abs(scale) * full((d, r), adapter_bound)
    weight_coefficients = {m: K[m] for m in adapt}
    coefficients = {}
    for m in adapt:
        coefficients[f"A_{m}"] = bt @ K[m]
        coefficients[f"B_{m}"] = K[m] @ at
    e_in = g_in * math.sqrt(d)
    colv = lambda v: full((1, d, 1), v)  # noqa: E731  a column statistic
    rowv = lambda a: np.reshape(a, (1, d, 1))  # noqa: E731  the representative row, transposed
    chunk = {
        # F~_ij <= e^{2R} / L_kv (inf past float range: min(max, lam mean) is then the max)
        "lam": full((1, 1, 1), math.exp(2 * logit_bound) if 2 * logit_bound < 709.0 else math.inf),
        "Ri": full((1, 1, 1), logit_bound), "Mi": full((1, 1, 1), -logit_bound),
        "aX": rowv(aX), "aC1": rowv(aC1 + e1), "e1": rowv(e1), "chat": rowv(chat), "ctight": rowv(chat),
    }
    # means at their maxima (every row attains the bounds)
    rows = floor_rows(
        np_xp, [chunk], beta, row_weight=L, m3=colv(v * (1 + 2 * e_in)), m2=colv(kb * (1 + 2 * e_in)),
        mx=colv(x), mu3=colv(v * (1 + 2 * e_in)), e3=colv(e_in * v), mu2=colv(kb * (1 + 2 * e_in)),
        e2=colv(e_in * kb),
        mux=colv(x), S32=full((1, d, d), v * (1 + 2 * e_in) * kb * (1 + 2 * e_in)),
        S3X=full((1, d, d), v * (1 + 2 * e_in) * x))
    sigma = 3 * beta * math.sqrt(d) * e_in * q * math.sqrt(d) * kb
    return Certificate(
        N=N, L=L, L_kv=L_kv, d=d, r=r, adapted=tuple(m for m in "QKV" if m in adapt), dtype=dtype,
        logit_bound=float(logit_bound), sigma=sigma, coefficients=coefficients,
        weight_coefficients=weight_coefficients, _rows=rows, _chain={m: (bt, at) for m in adapt},
    )
