"""A certified a-priori bound on the max-abs error of the approximate (polynomial-method) LoRA gradients.

The approximate path replaces E = exp(S) by E~ = p(S) entrywise (p the certified polynomial of
`polynomial.py`, S = beta X W_Q W_K^T X'^T) and computes EXACTLY the gradient of the approximate
softmax F~ = diag(E~ 1)^-1 E~ (Lemmas 3.3-3.7 of the paper, errata E1/E2 applied). If
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
    max(hi_b - o, o - lo_b) (<= 2 c^_ib omega_b).
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
      column sums sum_i E~_ij w_i / Z_i), is a nested sum (`kernels/_ops.py`: a GEMM over the keys,
      one over the k features, one over d for the face split) of depth <= n := max(L, L_kv) + k + d
      + 8, so its rounding is <= gamma_n sum_j |U1_i||U2_j| |w_j| <= gamma_n A(R_i) sum_j |w_j| with
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
      above (`_staged_floor`). The certificate's own float64 arithmetic is covered by a final
      relative margin of 2^-30.
The floor assumes the low-rank path contracts the features with the data in that form (any
order or blocking; `lowrank.py` does) and that no reduced precision (TF32) is enabled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from .. import _xp
from ..errors import InvalidInputError, InvalidTypeError
from .._validate import check_positive
from .polynomial import ExpPolynomial

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

_kappa = sp.lambdify(delta, KAPPA, modules="math")
_delta_of_kappa = sp.lambdify(kappa, DELTA_OF_KAPPA, modules="math")
_psi_term = sp.lambdify((t_ib, omega_b, chat_ib), PSI_TERM, modules=[{}])  # operators only: any xp
_v_term = sp.lambdify((omega_xa, chat_ib, mu_xa, omega_b), V_TERM, modules=[{}])


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


def kappa_of(delta_value: float) -> float:
    """kappa = delta / (1 - delta); inf for delta >= 1 (F~ may then have negative entries)."""
    return math.inf if delta_value >= 1.0 else float(_kappa(delta_value))


def delta_of(kappa_value: float) -> float:
    """The inverse of `kappa_of`: delta = kappa / (1 + kappa)."""
    return float(_delta_of_kappa(kappa_value))


#: the tight (second-moment) coefficients hold for delta <= DELTA_CAP: there F~ <= PHI_CAP F entrywise
DELTA_CAP = 2.0**-6
PHI_CAP = (1 + DELTA_CAP) / (1 - DELTA_CAP)

# The certificate's own float64 evaluation: a relative margin far above its rounding (~1e-13).
_MARGIN = 1.0 + 2.0**-30


def _half_range(xp, a, lo_pad=0.0, hi_pad=0.0):
    """(lo, hi, omega) of each column over the rows (axis 1), padded by error bounds."""
    lo = xp.min(a - lo_pad, axis=1, keepdims=True)
    hi = xp.max(a + hi_pad, axis=1, keepdims=True)
    return lo, hi, (hi - lo) / 2


def _joint_max(xp, lo, hi, y):
    """t = max_{o in [lo, hi]} |o - y| * max(hi - o, o - lo), elementwise.

    On [lo, mid] the factor is hi - o and |(o - y)(hi - o)| is the modulus of a quadratic, whose
    maximum over an interval is at an end or at the vertex (y + hi)/2; likewise on [mid, hi] with
    o - lo and vertex (y + lo)/2. So five candidates suffice."""
    mid = (lo + hi) / 2
    f = lambda o: xp.abs(o - y) * xp.maximum(hi - o, o - lo)  # noqa: E731
    v1 = xp.minimum(xp.maximum((y + hi) / 2, lo), mid)
    v2 = xp.minimum(xp.maximum((y + lo) / 2, mid), hi)
    out = f(lo)
    for o in (mid, hi, v1, v2):
        out = xp.maximum(out, f(o))
    return out


def _host(x) -> np.ndarray:
    return np.asarray(_xp.to_numpy(x), dtype=np.float64)


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
    _rows: dict = field(repr=False)    # per-row xp arrays for the floors
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
        k = math.comb(self.d + poly.degree, poly.degree)
        # nesting depth of every kernel-weighted sum (`kernels/_ops.py`): a GEMM over the keys (or
        # queries), one over the k features, one over d (the face split), and <= 8 products/divisions
        n = max(self.L, self.L_kv) + k + self.d + 8
        xp = self._rows["xp"]
        Ri = self._rows["Ri"]
        # A(R_i) = sum_t |a_t| R_i^t by Horner on nonnegative terms, coefficients rounded up
        # (relative rounding <= gamma_{2g+2}, covered by the 2^-30 margin)
        absum = 0.0 * Ri
        for a in reversed(poly.coefficients):
            absum = absum * Ri + math.nextafter(abs(float(a)), math.inf)
        log_lam = xp.log(absum * _MARGIN) - self._rows["Mi"] - math.log1p(-dlt)
        g_lam = gamma(n, u) * xp.exp(xp.minimum(log_lam, 700.0))     # gamma_n Lambda_i
        if not float(xp.max(g_lam)) < 0.5:
            return self._infinite()
        dprime = (1 + dlt) * math.exp(self.sigma + 4 * u * R) - 1
        # row i of any average F~_i w: |error| <= a_i mean_j|w_j| + b_i Avg_i(w) (module docstring (b))
        a_row = g_lam / (1 - g_lam)
        b_row = (g_lam + 2 * u) / (1 - g_lam)
        return self._floor(a_row, b_row, kappa_of(dprime) - kappa_of(dlt), u, dprime)

    def exact_floor(self) -> dict:
        """Per-entry rounding floor (key -> array) of the exact O(L^2 d) path in this dtype."""
        u = unit_roundoff(self.dtype)
        R = self.logit_bound
        dprime = math.exp(self.sigma + gamma(self.d + 1, u) * R + 2 * u * R) * (1 + 8 * u) - 1
        # F is formed explicitly: every average's error is <= gamma_n sum_j F_ij |w_j| <= gamma_n Avg_i(w)
        b_row = gamma(2 * max(self.L, self.L_kv) + self.d + 8, u)
        return self._floor(0.0, b_row, kappa_of(dprime), u, dprime)

    def _infinite(self) -> dict:
        return {key: np.full_like(K, np.inf) for key, K in self.coefficients.items()}

    def _floor(self, a_row, b_row, extra_kappa: float, u: float, dprime: float) -> dict:
        if not math.isfinite(extra_kappa):
            return self._infinite()
        err, mag = _staged_floor(self._rows, a_row, b_row, u, self.N, self.L, self.L_kv, self.d, dprime)
        weights = self.weight_coefficients_for(dprime)  # K must hold at the consistent delta'
        out = {}
        for m in self.adapted:
            total = extra_kappa * weights[m] + err[m]
            bt, at = self._chain[m]
            chain = gamma(self.d + 2, u)
            out[f"A_{m}"] = (bt @ total + chain * (bt @ (mag[m] + err[m]))) * _MARGIN
            out[f"B_{m}"] = (total @ at + chain * ((mag[m] + err[m]) @ at)) * _MARGIN
        return out

    # -- totals -----------------------------------------------------------------------------
    def entry_bounds(self, poly: ExpPolynomial, floor: dict | None = None) -> dict:
        """Per-entry certified bound (key -> array): kappa(delta) K + the rounding floor (computed
        unless given). Infinite unless poly.radius >= logit_bound and delta < 1."""
        floor = self.rounding_floor(poly) if floor is None else floor
        k = kappa_of(poly.rel_error)
        return {key: (k * K * _MARGIN + floor[key]) if k < math.inf else np.full_like(K, np.inf)
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
                ratio = np.where(K > 0, slack / (K * _MARGIN), np.inf)
            best = min(best, float(np.min(ratio)))
        return best

    def required_delta(self, eps: float, floor: dict | None = None) -> float:
        """Largest certified relative error delta of the exp polynomial that still meets eps."""
        k = self.required_kappa(eps, floor)
        return 1.0 if k == math.inf else delta_of(k)


@dataclass(frozen=True)
class DegreeChoice:
    """The outcome of `select_degree`: the polynomial (None when no degree qualifies), its bound
    and floor per key, and the reason when none."""

    poly: ExpPolynomial | None
    bound: dict | None
    floor: dict | None
    reason: str


def select_degree(cert: Certificate, eps: float, *, method: str = "auto",
                  max_degree: int = 60) -> DegreeChoice:
    """The smallest degree whose certified bound (approximation + rounding) is <= eps everywhere.

    A lower bound first: the floor is >= 0, so delta must be <= required_delta(eps), and
    `polynomial.min_degree` skips every smaller degree with a proof. Upwards from there each
    degree is certified in turn; the search stops once the rounding floor alone exceeds eps (it
    grows with the degree through the features' magnitude sum and rank), which can only report
    "unreachable", never a wrong bound."""
    from . import polynomial  # noqa: PLC0415

    eps = check_eps(eps)
    R = cert.logit_bound
    need = min(cert.required_delta(eps), 0.999)
    if need <= 0.0:
        return DegreeChoice(None, None, None, f"eps={eps:.3g} is below the float rounding floor alone")
    try:
        g0 = polynomial.min_degree(R, need, method=method, max_degree=max_degree)
    except InvalidInputError:  # a radius beyond what certificates are derived for
        g0 = None
    if g0 is None:
        return DegreeChoice(None, None, None, f"no degree <= {max_degree} reaches the needed relative error "
                                              f"delta <= {need:.3g} of exp on [-{R:.4g}, {R:.4g}]")
    for g in range(g0, max_degree + 1):
        poly = polynomial.exp_polynomial(R, degree=g, method=method)
        bound, floor = cert.bound_and_floor(poly)
        if max(bound.values()) <= eps:
            return DegreeChoice(poly, bound, floor, "")
        worst = max(floor.values())
        if math.isinf(worst):
            return DegreeChoice(None, None, None, f"float rounding is uncontrolled at R = {R:.4g} in "
                                                  f"{cert.dtype}: the features' magnitudes A(R) e^R exceed "
                                                  "1/(2 gamma_n)")
        if worst > eps:
            return DegreeChoice(None, None, None, f"eps={eps:.3g} is below the float rounding floor "
                                                  f"({worst:.3g} at degree {g}, {cert.dtype})")
    return DegreeChoice(None, None, None, f"no degree <= {max_degree} certifies eps={eps:.3g}")


def _check_poly(poly):
    if not isinstance(poly, ExpPolynomial):
        raise InvalidTypeError(f"poly must be an ExpPolynomial, got {type(poly).__name__}")


def projections(problem) -> dict:
    """float64 views and the projections C_mu = X W_mu (W_mu with its adapter) of a problem, with
    E_mu >= |computed - exact| entrywise for X W_mu computed in the problem's dtype:
    |fl(X fl(W* + s B A)) - X W| <= gamma_{d+r+4} |X| (|W*| + |s||B||A|), any product order."""
    from ..problem import LoRAProblem  # noqa: PLC0415 - problem imports kernels

    if not isinstance(problem, LoRAProblem):
        raise InvalidTypeError(f"problem must be a LoRAProblem, got {type(problem).__name__}")
    xp = problem.xp
    u = unit_roundoff(problem.dtype_name)
    s = abs(problem.scale)
    f64 = lambda a: xp.astype(a, xp.float64)  # noqa: E731
    X, Xkv, Y = f64(problem.X3), f64(problem.Xkv3), f64(problem.Y3)
    aX, aXkv = xp.abs(X), xp.abs(Xkv)
    C, E = {}, {}
    g_in = gamma(problem.d + problem.r + 4, u)
    for m in "QKV":
        W = f64(problem.W[m])
        M = xp.abs(W)
        if m in problem.adapted:
            A_, B_ = f64(problem.A[m]), f64(problem.B[m])
            W = W + problem.scale * (B_ @ A_)
            M = M + s * (xp.abs(B_) @ xp.abs(A_))
        Xm, aXm = (X, aX) if m == "Q" else (Xkv, aXkv)
        C[m] = Xm @ W
        E[m] = aXm @ (g_in * M)
    return {"xp": xp, "u": u, "X": X, "Xkv": Xkv, "Y": Y, "aX": aX, "aXkv": aXkv, "C": C, "E": E}


def logit_enclosure(problem, proj: dict | None = None) -> tuple[float, float]:
    """(R, sigma): R >= |S_ij| for the exact logits S = beta C1 C2^T and for the computed ones
    (Cauchy-Schwarz, R = |beta| max_i ||C1_i|| max_j ||C2_j|| plus the rounding of C1, C2), and
    sigma >= |S^_ij - S_ij| (the logit rounding)."""
    proj = projections(problem) if proj is None else proj
    xp, C, E = proj["xp"], proj["C"], proj["E"]
    beta = abs(problem.beta)
    norm = lambda a: xp.sqrt(xp.sum(a * a, axis=-1))  # noqa: E731
    qn, qe, kn, ke = (float(xp.max(norm(a))) for a in (C["Q"], E["Q"], C["K"], E["K"]))
    R = beta * (qn + 2 * qe) * (kn + 2 * ke) * _MARGIN
    sigma = beta * (qe * (kn + 2 * ke) + (qn + qe) * ke) * _MARGIN
    return R, sigma


def certify(problem, proj: dict | None = None) -> Certificate:
    """The data-dependent certificate of a `LoRAProblem` (O(N L d^2) work, no L x L array);
    `proj` = `projections(problem)` when already computed."""
    proj = projections(problem) if proj is None else proj
    xp, C, E = proj["xp"], proj["C"], proj["E"]
    X, Xkv, Y, aX, aXkv = (proj[k] for k in ("X", "Xkv", "Y", "aX", "aXkv"))
    d, r = problem.d, problem.r
    s, beta = abs(problem.scale), abs(problem.beta)
    R, sigma = logit_enclosure(problem, proj)
    norm = lambda a: xp.sqrt(xp.sum(a * a, axis=-1))  # noqa: E731
    kmax = float(xp.max(norm(C["K"]) + 2 * norm(E["K"])))
    Ri = xp.minimum(beta * (norm(C["Q"]) + 2 * norm(E["Q"])) * kmax * _MARGIN, R)   # (N, L)
    # Jensen: sum_j e^{S_ij} >= L_kv e^{mean_j S_ij}; the mean logit, less sigma and a float64 margin
    kbar = xp.mean(C["K"], axis=1, keepdims=True)
    mean_logit = problem.beta * xp.sum(C["Q"] * kbar, axis=-1)
    Mi = xp.maximum(mean_logit - sigma - 2.0**-40 * R, -Ri)

    # -- the exact-arithmetic coefficients K (module docstring, steps c .. dW)
    lo3, hi3, w3 = _half_range(xp, C["V"], E["V"], E["V"])
    chat = xp.maximum(xp.abs(lo3 - Y), xp.abs(hi3 - Y))
    t = _joint_max(xp, lo3, hi3, Y)
    psi = xp.sum(_psi_term(t, w3, chat), axis=-1)                     # (N, L), / kappa
    _, _, w2 = _half_range(xp, C["K"], E["K"], E["K"])
    _, _, wx = _half_range(xp, Xkv)
    mux = xp.max(aXkv, axis=1, keepdims=True)
    aC1 = xp.abs(C["Q"]) + E["Q"]
    N, L = problem.N, problem.L
    outer = lambda a, b: xp.sum(a[:, :, None] * b[:, None, :], axis=0) / N  # noqa: E731
    row_sum = lambda a: xp.sum(a * psi[:, :, None], axis=1)  # noqa: E731
    K = {
        "Q": beta * outer(row_sum(aX), w2[:, 0, :]),
        "K": beta * outer(wx[:, 0, :], row_sum(aC1)),
        # V_TERM(omega(X'_a), c^_ib, max|X'_a|, omega(C3_b)) summed over rows: (N, L, a, b)
        "V": xp.sum(_v_term(wx[:, :, :, None], chat[:, :, None, :], mux[:, :, :, None], w3[:, :, None, :]),
                    axis=(0, 1)) / N,
    }
    Kt = _second_moment_coefficients(xp, proj, psi, w2, wx, w3, lo3, hi3, chat, Ri, Mi, beta, aX, aC1, mux, N)
    weight_coefficients = {m: _host(K[m]) for m in problem.adapted}
    tight_weight = {m: _host(Kt[m]) for m in problem.adapted}
    chain, coefficients, tight = {}, {}, {}
    for m in problem.adapted:
        bt = s * np.abs(_host(problem.B[m])).T          # r x d
        at = s * np.abs(_host(problem.A[m])).T          # d x r
        chain[m] = (bt, at)
        coefficients[f"A_{m}"] = bt @ weight_coefficients[m]
        coefficients[f"B_{m}"] = weight_coefficients[m] @ at
        tight[f"A_{m}"] = bt @ tight_weight[m]
        tight[f"B_{m}"] = tight_weight[m] @ at

    # -- what the floors need (magnitudes of computed quantities and input errors, a posteriori)
    a3 = xp.abs(C["V"]) + 2 * E["V"]                        # >= |C3| computed and exact
    a2 = xp.abs(C["K"]) + 2 * E["K"]
    m3c = xp.mean(C["V"], axis=1, keepdims=True)
    s3 = xp.sqrt(xp.mean((xp.abs(C["V"] - m3c) + E["V"]) ** 2, axis=1, keepdims=True))
    lam = xp.exp(Ri - Mi)                                   # (N, L): F_ij <= lam_i / L_kv
    pair_mean = lambda a, b: (xp.permute_dims(a, (0, 2, 1)) @ b) / problem.L_kv  # noqa: E731
    rows = {
        "lam": lam, "m3": xp.mean(a3, axis=1), "m2": xp.mean(a2, axis=1), "mx": xp.mean(aXkv, axis=1),
        "S32": pair_mean(a3, a2), "S3X": pair_mean(a3, aXkv),
        # |c~_ib| <= sd_{F~_i}(C3_b) + |m3_b - Y_ib| when F~ <= PHI_CAP F (delta <= DELTA_CAP)
        "ctight": xp.minimum(chat, xp.sqrt(PHI_CAP * lam)[:, :, None] * s3 + xp.abs(m3c - Y)),
        "xp": xp, "beta": beta, "aX": aX, "chat": chat, "mux": mux[:, 0, :], "Ri": Ri, "Mi": Mi,
        "e1": E["Q"], "aC1": aC1 + E["Q"],
        "e2": xp.max(E["K"], axis=1), "mu2": xp.max(xp.abs(C["K"]), axis=1) + 2 * xp.max(E["K"], axis=1),
        "e3": xp.max(E["V"], axis=1),
        "mu3": xp.maximum(xp.abs(lo3), xp.abs(hi3))[:, 0, :] + xp.max(E["V"], axis=1),
    }
    return Certificate(
        N=N, L=L, L_kv=problem.L_kv, d=d, r=r, adapted=problem.adapted, dtype=problem.dtype_name,
        logit_bound=R, sigma=sigma, coefficients=coefficients, weight_coefficients=weight_coefficients,
        _rows=rows, _chain=chain, tight_coefficients=tight, tight_weight_coefficients=tight_weight,
    )


def _second_moment_coefficients(xp, proj, psi, w2, wx, w3, lo3, hi3, chat, Ri, Mi, beta, aX, aC1, mux, N):
    """The tight K (per unit kappa, valid for delta <= DELTA_CAP): per row and column the minimum of
    the half-range bound (`certify`) and the second-moment bound (module docstring, "Second
    moments"). O(N L d^2) work, no L x L array."""
    C, E = proj["C"], proj["E"]
    Xkv, Y = proj["Xkv"], proj["Y"]
    msq = lambda a: xp.mean(a * a, axis=1, keepdims=True)  # noqa: E731  mean over keys j
    sq_norm = lambda a: xp.sum(a * a, axis=-1, keepdims=True)  # noqa: E731
    lam = xp.exp(Ri - Mi)[:, :, None]                       # (N, L, 1): F_ij <= lam_i / L_kv
    lam_t = PHI_CAP * lam                                   # F~_ij <= lam~_i / L_kv
    # |exact C3_j - m3| <= |computed C3_j - m3| + E3_j: every moment below uses these upper bounds
    m3 = xp.mean(C["V"], axis=1, keepdims=True)
    dev3 = xp.abs(C["V"] - m3) + E["V"]                     # (N, L_kv, d)
    a2 = sq_norm(dev3)                                      # (N, L_kv, 1): a_j^2
    s3sq = msq(dev3)                                        # (N, 1, d): s3_b^2
    rho = xp.minimum(xp.sqrt(lam * xp.mean(a2, axis=1, keepdims=True)), xp.sqrt(xp.max(a2, axis=1, keepdims=True)))
    cn = xp.minimum(rho + xp.sqrt(sq_norm(m3 - Y)), xp.sqrt(sq_norm(chat)))   # (N, L, 1) >= ||c_i||
    dcn = xp.sqrt(lam * xp.sum(s3sq, axis=-1, keepdims=True))                 # ||Dc_i|| / kappa
    sum_s3 = xp.sum(s3sq, axis=-1, keepdims=True)                            # (N, 1, 1)

    def contraction(v, v_err):
        """(N, L, dv): the second-moment bound on |((P~ - P) v)_i| / kappa for each column v."""
        dev = xp.abs(v - xp.mean(v, axis=1, keepdims=True)) + v_err         # (N, L_kv, dv)
        A0 = xp.sqrt(msq(dev))                                              # (N, 1, dv)
        A1 = xp.sqrt(xp.mean(a2 * dev * dev, axis=1, keepdims=True))
        t1 = cn * xp.sqrt(lam) * (A1 + rho * A0)
        t2 = xp.sqrt(lam) * lam_t * sum_s3 * A0
        t3 = cn * dcn * xp.sqrt(lam_t) * A0
        return t1 + t2 + t3

    row_q = xp.minimum(psi[:, :, None] * w2, contraction(C["K"], E["K"]))       # (N, L, d_b)
    row_k = xp.minimum(psi[:, :, None] * wx, contraction(Xkv, 0.0))             # (N, L, d_a)
    tr = lambda a: xp.permute_dims(a, (0, 2, 1))  # noqa: E731
    batch = lambda a: xp.sum(a, axis=0) / N  # noqa: E731
    # dW_V: sum_i |DF_i . X'_a| |c_ib| + |F~_i . X'_a| |Dc_ib|, each factor the smaller of two bounds
    devx = xp.abs(Xkv - xp.mean(Xkv, axis=1, keepdims=True))
    p = xp.minimum(wx, xp.sqrt(lam * msq(devx)))                                 # (N, L, d_a)
    q = xp.minimum(mux, xp.sqrt(lam_t * msq(Xkv)))                               # (N, L, d_a)
    dc = xp.minimum(w3, xp.sqrt(lam * s3sq))                                     # (N, L, d_b)
    cabs = xp.minimum(chat, xp.sqrt(lam * s3sq) + xp.abs(m3 - Y))               # >= |c_ib| (exact)
    return {
        "Q": beta * batch(tr(aX) @ row_q),
        "K": beta * batch(tr(row_k) @ aC1),
        "V": batch(tr(p) @ cabs + tr(q) @ dc),
    }


def _staged_floor(rows: dict, a_row, b_row, u: float, N: int, L: int, L_kv: int, d: int, dprime: float):
    """Stage-by-stage rounding bound (module docstring, floor (b) and (c)) for each dW_mu.

    Every F~-weighted sum of the chain is an average over the keys j of row i (or, for the column
    sums F~^T w, a sum over rows i of F~_ij w_i, bounded row by row the same way). For w >= 0 per
    key, mean(w) := mean_j w_j and Avg_i(w) := min(max_j w_j, lam~_i mean(w)) >= F~_i w
    (F~_ij <= lam~_i / L_kv, lam~_i = PHI(delta') e^{R_i - M_i}, and F~ is a convex combination);
    the rounding of an average is <= a_i mean(w) + b_i Avg_i(w) (a = gamma_n Lambda_i/(1-t_i) from
    the signed feature products, b = (t_i + 2u)/(1-t_i) from the normalisation, t_i = gamma_n
    Lambda_i; exact path: a = 0, b = gamma_{2L+d+8}). The pair means S32 = mean_j |C3_jb||C2_jb'|,
    S3X = mean_j |C3_jb||X'_ja| are computed from the data (O(L d^2)). With c'_i >= |c~_i| (the
    second-moment bound when delta' <= DELTA_CAP, else c^) plus its rounding:
      O~:   eO = err_avg(|C3|) + e3,  |O~| <= Avg(|C3|)          c~ = O~ - Y: ec = (eO + u c')/(1-u)
      r~:   er = sum_b (cp eO + ec |O~|) + gamma_{d+1} rmag,  rmag = sum_b cp (|O~| + eO)
      P~C2 = (F~∘(c~ C3^T)) C2 - r~ F~C2, each part its rounding, propagated errors of c~, r~, C2,
            C3 and the subtraction; dW_Q = beta X^T P~C2 adds gamma_{L+2} of the magnitudes;
      dW_K = beta X'^T ((F~∘(c~ C3^T))^T C1 - F~^T (r~ C1)), column sums bounded row by row;
      dW_V = X'^T F~^T c~;  the batch mean adds gamma_{N+1} of the magnitudes.
    Returns ({mu: d x d error}, {mu: d x d magnitude}) on the host.
    """
    xp = rows["xp"]
    g = lambda n: gamma(n, u)  # noqa: E731
    col = lambda a: float(a) if isinstance(a, (int, float)) else a[:, :, None]  # noqa: E731  (N, L) -> (N, L, 1)
    a_i, b_i = col(a_row), col(b_row)
    phi = (1 + dprime) / (1 - dprime)
    lam_t = phi * rows["lam"][:, :, None] * (1 + 2.0**-20)          # (N, L, 1)
    use_tight = dprime <= DELTA_CAP
    cmag = rows["ctight"] if use_tight else rows["chat"]            # (N, L, d) >= |c~|, exact arithmetic
    mu3, e3, mu2, e2, mux = (rows[k][:, None, :] for k in ("mu3", "e3", "mu2", "e2", "mux"))
    m3, m2, mx = (rows[k][:, None, :] for k in ("m3", "m2", "mx"))
    S32, S3X = rows["S32"], rows["S3X"]                              # (N, d, d): [b'', b'] and [b'', a]

    def avg(mean, mxv):
        return xp.minimum(mxv, lam_t * mean)

    def err_avg(mean, mxv):
        return a_i * mean + b_i * avg(mean, mxv)

    def pair(cvec, mean2, max2):
        """sum_b'' cvec_ib'' F(mean2[b'', :], max2[b'', :]) for F = Avg and err_avg: (N, L, d)."""
        m4, x4 = mean2[:, None, :, :], max2[:, None, :, :]           # (N, 1, d'', d)
        lt = lam_t[..., None]
        ai, bi = (x if isinstance(x, float) else x[..., None] for x in (a_i, b_i))
        av = xp.minimum(x4, lt * m4)                                 # (N, L, d'', d)
        return (xp.sum(cvec[:, :, :, None] * av, axis=2),
                xp.sum(cvec[:, :, :, None] * (ai * m4 + bi * av), axis=2))

    # O~, c~, r~
    Omag = avg(m3, mu3)
    eO = err_avg(m3, mu3) + e3
    ec = (eO + u * cmag) / (1 - u)
    cp = cmag + ec
    rmag = xp.sum(cp * (Omag + eO), axis=-1, keepdims=True)         # (N, L, 1)
    er = xp.sum(cp * eO + ec * Omag, axis=-1, keepdims=True) + g(d + 1) * rmag
    beta, aX = rows["beta"], rows["aX"]
    rows_w = rows.get("row_weight", 1)  # plan: one representative row standing for L
    tr = lambda a: xp.permute_dims(a, (0, 2, 1))  # noqa: E731
    rsum = lambda a, b: rows_w * (tr(a) @ b)  # noqa: E731  sum_i a_i^T b_i: (N, d, d)
    batch = lambda a: xp.sum(a, axis=0) / N  # noqa: E731

    # dW_Q: P~C2 = p1 - p2 per row, then beta X^T
    max32 = rows["mu3"][:, :, None] * rows["mu2"][:, None, :]        # (N, d'', d)
    mag_p1, rnd_p1 = pair(cp, S32, max32)
    ec_p1, _ = pair(ec, S32, max32)
    in_p1 = xp.sum(cmag[:, :, :, None] * (rows["e3"][:, None, :, None] * mu2[:, :, None, :]
                                          + rows["mu3"][:, None, :, None] * e2[:, :, None, :]), axis=2)
    err_p1 = rnd_p1 + ec_p1 + in_p1
    F2 = avg(m2, mu2)
    eF2 = err_avg(m2, mu2) + e2
    mag_p2 = rmag * (F2 + eF2)
    err_p2 = er * (F2 + eF2) + rmag * eF2 + u * mag_p2
    err_pc = err_p1 + err_p2 + u * (mag_p1 + err_p1 + mag_p2 + err_p2)
    mag_pc = mag_p1 + mag_p2
    err_q = beta * (rsum(aX, err_pc) + g(L + 2) * rsum(aX, mag_pc + err_pc))
    mag_q = beta * rsum(aX, mag_pc)

    # dW_K: per row i the weights over the keys are |X'_a| (|c~_i| . |C3_j|); C1_ib is a row factor
    aC1, e1 = rows["aC1"], rows["e1"]
    max3x = rows["mu3"][:, :, None] * rows["mux"][:, None, :]
    q1, rq1 = pair(cp, S3X, max3x)                                   # (N, L, d_a)
    qc, _ = pair(ec, S3X, max3x)
    Ax = avg(mx, mux)
    eAx = err_avg(mx, mux)
    q3 = xp.sum(cmag * rows["e3"][:, None, :], axis=-1, keepdims=True) * Ax
    mag_k1 = rsum(q1, aC1)
    err_k1 = rsum(rq1 + qc + q3, aC1) + rsum(q1, e1)
    mag_k2 = rsum(rmag * Ax, aC1)
    err_k2 = rsum(rmag * eAx + er * Ax + u * rmag * Ax, aC1) + rsum(rmag * Ax, e1)
    err_pk = err_k1 + err_k2 + u * (mag_k1 + err_k1 + mag_k2 + err_k2)
    mag_pk = mag_k1 + mag_k2
    err_k = beta * (err_pk + g(L_kv + 2) * (mag_pk + err_pk))
    mag_k = beta * mag_pk

    # dW_V = X'^T F~^T c~
    mag_v = rsum(Ax, cp)
    e_v = rsum(eAx, cp) + rsum(Ax, ec)
    err_v = e_v + g(L_kv + 1) * (mag_v + e_v)

    err, mag = {}, {}
    for m, e, a in (("Q", err_q, mag_q), ("K", err_k, mag_k), ("V", err_v, mag_v)):
        e, a = _host(batch(e)), _host(batch(a))
        err[m] = e + g(N + 1) * (a + e)
        mag[m] = a
    return err, mag


# ----------------------------------------------------------------------------------------------
# data-free version (for `approx.plan`)


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
    t = _joint_max(np_xp, lo3, hi3, Y)
    psi = np.sum(_psi_term(t, v, chat), axis=-1)
    aX = full((1, 1, d), x)
    e1 = full((1, 1, d), g_in * math.sqrt(d) * q)
    aC1 = full((1, 1, d), q) + e1
    K = {
        "Q": L * beta * np.outer(np.sum(aX * psi[:, :, None], axis=1)[0], full(d, kb)),
        "K": L * beta * np.outer(full(d, x), np.sum(aC1 * psi[:, :, None], axis=1)[0]),
        "V": L * _v_term(full((d, 1), x), chat[0, 0][None, :], full((d, 1), x), full((1, d), v)),
    }
    bt = abs(scale) * full((r, d), adapter_bound)
    at = abs(scale) * full((d, r), adapter_bound)
    weight_coefficients = {m: K[m] for m in adapt}
    coefficients = {}
    for m in adapt:
        coefficients[f"A_{m}"] = bt @ K[m]
        coefficients[f"B_{m}"] = K[m] @ at
    e_in = g_in * math.sqrt(d)
    rows = {
        "xp": np_xp, "beta": beta, "aX": aX, "chat": chat, "mux": full((1, d), x), "row_weight": L,
        "Ri": full((1, 1), logit_bound), "Mi": full((1, 1), -logit_bound),
        "e1": e1, "aC1": aC1 + e1,
        "e2": full((1, d), e_in * kb), "mu2": full((1, d), kb * (1 + 2 * e_in)),
        "e3": full((1, d), e_in * v), "mu3": full((1, d), v * (1 + 2 * e_in)),
        # means at their maxima (every row attains the bounds), F~_ij <= e^{2R} / L_kv
        "lam": full((1, 1), math.exp(2 * logit_bound)), "ctight": chat, "mx": full((1, d), x),
        "m3": full((1, d), v * (1 + 2 * e_in)), "m2": full((1, d), kb * (1 + 2 * e_in)),
        "S32": full((1, d, d), v * (1 + 2 * e_in) * kb * (1 + 2 * e_in)),
        "S3X": full((1, d, d), v * (1 + 2 * e_in) * x),
    }
    sigma = 3 * beta * math.sqrt(d) * e_in * q * math.sqrt(d) * kb
    return Certificate(
        N=N, L=L, L_kv=L_kv, d=d, r=r, adapted=tuple(m for m in "QKV" if m in adapt), dtype=dtype,
        logit_bound=float(logit_bound), sigma=sigma, coefficients=coefficients,
        weight_coefficients=weight_coefficients, _rows=rows, _chain={m: (bt, at) for m in adapt},
    )


def check_eps(eps) -> float:
    """eps must be a finite number > 0."""
    return check_positive("eps", eps)
