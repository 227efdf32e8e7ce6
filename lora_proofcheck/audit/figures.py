"""Per-head figures: where one real attention head sits against the paper's threshold.

For a head with queries q (L, d_h) and keys k (L_kv, d_h) as the softmax sees them and logits
S = beta q k^T:

* the paper's norms ||X'W'_Q||_max, ||X'W'_K||_max (bias-augmented: X' = [X, 1], W' = [W; b], so
  q = X'W'_Q), Gamma = their max, Gamma / sqrt(log L);
* the logit bound R the certificate uses, computed by the package's own
  `gradients.planner.logit_bound` (i.e. `certificate.logit_enclosure`) on `head_problem(...)`, a
  LoRAProblem whose logits ARE the head's, so the audit follows the certificate when it improves;
* the true max |S_ij| and the row half-ranges (max_j S_ij - min_j S_ij)/2 (S formed: L is small),
  over the entries the softmax sees (causal heads: j <= i);
* what the certified approximate path would need (`certified_requirement`, the ONE place the
  planner lives) for each relative tolerance, its rank / L and cost ratio, the certifiable
  frontier, and the regime label (`regime`).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..certification import polynomial
from ..errors import InvalidInputError
from ..gradients import costs
from ..gradients.planner import logit_bound
from ..kernels.features import feature_rank
from ..problem import LoRAProblem

__all__ = [
    "ADAPT",
    "EXACT_DEGREE_RADIUS",
    "FRONTIER_RTOL",
    "MAX_DEGREE",
    "REGIMES",
    "REGIME_DEFINITION",
    "RTOLS",
    "certifiable_frontier",
    "certified_requirement",
    "head_figures",
    "head_problem",
    "logits",
    "regime",
]

#: relative tolerances the certified path is planned for
RTOLS = (1e-2, 1e-4)
#: the tolerance of the frontier and of the regime label
FRONTIER_RTOL = 1e-2
#: adapted modules the cost ratio assumes (LoRA's usual choice)
ADAPT = "QV"
#: up to this logit bound the planner runs the exact certified-degree search (about 0.1 s per head
#: at R = 8, 0.7 s at R = 16: exact rational Chebyshev coefficients); above it, or wherever the
#: verdict does not depend on it, it reports the proved LOWER bound on the degree instead
#: (`polynomial.degree_lower_bound`, within 1-4 degrees of the exact one where compared)
EXACT_DEGREE_RADIUS = 8.0

#: degrees searched at most (beyond R = 256 the polynomial module certifies nothing anyway)
MAX_DEGREE = 600

REGIMES = ("below", "near", "above")
REGIME_DEFINITION = (
    "below: R <= R*(L), the certifiable frontier: the certified approximate path (relative "
    "tolerance 1e-2 on exp, features of rank C(d_h + g, g)) costs less than the exact path at this L "
    "(cost ratio < 1, package cost model, adapt QV); near: R*(L) < R <= log L: inside the logit scale of "
    "the paper's threshold (Gamma ~ sqrt(log L), logits ~ log L; the package compares R with log L) but "
    "not certifiably cheaper at this L; above: R > log L, past the threshold scale, where the paper's "
    "SETH lower bound (Thm 4.1) applies asymptotically. R is the logit bound the certificate uses; "
    "regime_true applies the same cuts to the true max |S_ij|, showing whether any tighter bound could "
    "change the label."
)


# ----------------------------------------------------------------------------------------------
# the LoRA problem whose logits are the head's


def head_problem(q, k, *, scaling: float) -> LoRAProblem:
    """The paper's single-head problem with exactly this head's logits S = scaling q k^T.

    X = [q | k] (L, 2 d_h); W_Q and W_K select its blocks (0/1 matrices, so X W_Q = [q | 0] and
    X W_K = [k | 0] exactly in float64), W_V = 0, zero adapters (r = 1), Y = 0, beta = scaling.
    Every bound the certificate computes from C1 = X W_Q and C2 = X W_K is the head's own. It works
    for RoPE heads (q, k after the rotation, which no fixed W reproduces) and GQA (k is the shared
    KV head). Self-attention only (as many keys as queries)."""
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    if q.ndim != 2 or q.shape != k.shape:
        raise InvalidInputError(f"q and k must be (L, d_h) arrays of one shape, got {q.shape} and {k.shape}")
    L, d_h = q.shape
    d = 2 * d_h
    X = np.concatenate([q, k], axis=1)
    W = {m: np.zeros((d, d)) for m in "QKV"}
    W["Q"][:d_h, :d_h] = np.eye(d_h)
    W["K"][d_h:, :d_h] = np.eye(d_h)
    return LoRAProblem(
        X,
        np.zeros((L, d)),
        W,
        {"Q": np.zeros((1, d))},
        {"Q": np.zeros((d, 1))},
        alpha=1.0,
        beta=float(scaling),
    )


# ----------------------------------------------------------------------------------------------
# the planner (one function: the certified-fast-path work replaces it with its rtol planner)


def _cost_ratio(L: int, d: int, g: int, adapt: str) -> float:
    """Predicted flops of the low-rank path at degree g (kernel + features) over the exact path's."""
    return costs.approx_flops(L, L, d, g, adapt) / float(costs.exact_flops(L, L, d, adapt))


def certified_requirement(
    R: float,
    *,
    d: int,
    L: int,
    rtol: float,
    adapt: str = ADAPT,
    exact_degree_radius: float = EXACT_DEGREE_RADIUS,
) -> dict:
    """What the certified approximate path would need for a head with logit bound R at length L.

    Today: the smallest degree g with a certified relative error <= rtol of exp on [-R, R]
    (`polynomial.min_degree`, Taylor or Chebyshev), its feature rank k = C(d + g, g), rank / L and
    the cost ratio of the low-rank path over the exact path (`costs`, the paper's model at d = d_h:
    the attention core; the projections X W cost the same on both paths). For R above
    `exact_degree_radius` the degree is searched only if the verdict depends on it (the lower
    bound's cost ratio is < 1); otherwise `degree` is None and `degree_lower_bound`, a proved lower
    bound, gives the rank and cost ratio (lower bounds too).

    Keys: rtol, degree, degree_lower_bound, degree_exact, method, rank, rank_over_L, cost_ratio,
    bounds_are_lower (rank and cost are lower bounds), certifiable (cost ratio < 1 at a certified
    degree; False when even the lower bound costs more; None when unknown).
    """
    return dict(_requirement(float(R), int(d), int(L), float(rtol), adapt, float(exact_degree_radius)))


@functools.lru_cache(maxsize=65536)
def _requirement(R: float, d: int, L: int, rtol: float, adapt: str, exact_degree_radius: float) -> dict:
    g_lb = polynomial.degree_lower_bound(R, rtol)
    g, method = None, None
    # search when asked to, or when the verdict depends on it (the lower bound is still cheaper)
    if R <= exact_degree_radius or (R <= polynomial.MAX_RADIUS and _cost_ratio(L, d, g_lb, adapt) < 1.0):
        g = polynomial.min_degree(R, rtol, max_degree=MAX_DEGREE)
        if g is not None:
            method = polynomial.exp_polynomial(R, degree=g).method
    g_used = g if g is not None else g_lb
    rank = feature_rank(d, g_used)
    ratio = _cost_ratio(L, d, g_used, adapt)
    if g is not None:
        certifiable = ratio < 1.0
    else:
        certifiable = False if ratio >= 1.0 else None
    return {
        "rtol": rtol,
        "degree": g,
        "degree_lower_bound": g_lb,
        "degree_exact": g is not None,
        "method": method,
        "rank": rank,
        "rank_over_L": rank / L,
        "cost_ratio": ratio,
        "bounds_are_lower": g is None,
        "certifiable": certifiable,
    }


@functools.lru_cache(maxsize=1024)
def certifiable_frontier(
    L: int, d: int, *, rtol: float = FRONTIER_RTOL, adapt: str = ADAPT, rel_tol: float = 1e-3
) -> float:
    """R*(L): the largest logit bound (to a relative rel_tol, from below) at which
    `certified_requirement` finds a certified degree cheaper than the exact path. 0 when even
    degree 0 is not cheaper. Found by bisection on R (the certified degree is non-decreasing in R)."""

    def ok(R):
        need = certified_requirement(R, d=d, L=L, rtol=rtol, adapt=adapt)
        return bool(need["certifiable"])

    if _cost_ratio(L, d, 0, adapt) >= 1.0:
        return 0.0
    lo, hi = 0.0, 2.0**-20
    if not ok(hi):
        return 0.0
    while ok(hi):
        lo, hi = hi, 2.0 * hi
        if hi > EXACT_DEGREE_RADIUS:
            return lo  # certifiable up to the search radius: report what was checked
    while hi - lo > rel_tol * lo:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def regime(R: float, L: int, frontier: float) -> str:
    """'below' (R <= frontier), 'near' (frontier < R <= log L) or 'above' (R > log L): REGIME_DEFINITION."""
    if R <= frontier:
        return "below"
    if R <= math.log(L):
        return "near"
    return "above"


# ----------------------------------------------------------------------------------------------
# one head


def logits(q, k, scaling: float) -> np.ndarray:
    """S = scaling q k^T in float64 (L x L_kv: the audit's L is small enough to form it)."""
    return float(scaling) * (np.asarray(q, np.float64) @ np.asarray(k, np.float64).T)


def head_figures(
    q,
    k,
    *,
    scaling: float,
    visible=None,
    q_proj=None,
    k_proj=None,
    rtols=RTOLS,
    adapt: str = ADAPT,
    frontier: float | None = None,
    exact_degree_radius: float = EXACT_DEGREE_RADIUS,
) -> dict:
    """Every figure of one head (see the module docstring). q, k: (L, d_h) as the softmax sees them;
    visible: (L, L) bool mask of the entries it sees (None: all); q_proj, k_proj: the projection
    outputs before RoPE (None: equal to q, k)."""
    q = np.asarray(q, np.float64)
    k = np.asarray(k, np.float64)
    L, d_h = q.shape
    R = logit_bound(head_problem(q, k, scaling=scaling))
    S = logits(q, k, scaling)
    if visible is None:
        hi, lo = S.max(axis=1), S.min(axis=1)
        max_abs = float(np.abs(S).max())
    else:
        hi = np.where(visible, S, -np.inf).max(axis=1)
        lo = np.where(visible, S, np.inf).min(axis=1)
        max_abs = float(np.abs(S[visible]).max())
    half = 0.5 * (hi - lo)
    qp = q if q_proj is None else np.asarray(q_proj, np.float64)
    kp = k if k_proj is None else np.asarray(k_proj, np.float64)
    norm_q, norm_k = float(np.abs(qp).max()), float(np.abs(kp).max())
    gamma = max(norm_q, norm_k)
    log_L = math.log(L)
    if frontier is None:
        frontier = certifiable_frontier(L, d_h, adapt=adapt)
    needs = [
        certified_requirement(
            R, d=d_h, L=L, rtol=float(t), adapt=adapt, exact_degree_radius=exact_degree_radius
        )
        for t in rtols
    ]
    return {
        "L": L,
        "head_dim": d_h,
        "beta": float(scaling),
        "norm_XW_Q": norm_q,
        "norm_XW_K": norm_k,
        "Gamma": gamma,
        "sqrt_log_L": math.sqrt(log_L),
        "log_L": log_L,
        "Gamma_over_sqrt_log_L": gamma / math.sqrt(log_L),
        "norm_q_max": float(np.abs(q).max()),
        "norm_k_max": float(np.abs(k).max()),
        "logit_bound": R,
        "logit_bound_kind": "cauchy-schwarz (certification.certificate.logit_enclosure)",
        "max_abs_logit": max_abs,
        "bound_over_true": R / max_abs if max_abs > 0 else math.inf,
        "row_half_range_max": float(half.max()),
        "row_half_range_median": float(np.median(half)),
        "R_over_log_L": R / log_L,
        "max_abs_logit_over_log_L": max_abs / log_L,
        "frontier_R": frontier,
        "regime": regime(R, L, frontier),
        "regime_true": regime(max_abs, L, frontier),
        "needs": needs,
    }
