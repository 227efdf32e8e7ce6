"""The planner: where a problem stands against the paper's threshold, and whether the certified
approximate path beats the exact one.

    logit_bound(problem)                  R >= max |S_ij| (Cauchy-Schwarz, O(N L d^2))
    threshold_report(problem)             the paper's norms and thresholds for this data
    plan(L, d, logit_bound, rtol=1e-3)    the approximate path's decision without data (assumed magnitudes)

The degree g of the exp polynomial is the smallest whose certificate (`certification.certificate`:
the approximation bound kappa(delta) K plus the float rounding floor) meets the tolerance
atol + rtol G (`certification.degree.select_degree`). Its feature rank k = C(d+g, g) fixes the
cost, predicted in seconds by the machine's time model (`timing`); when no such degree is
predicted faster than the exact path the problem is above the threshold for this L: the
norm-based phase transition of the paper (Thm 4.1), met concretely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._lib.validate import MODULES, check_choice, check_int, check_modules, check_positive, check_tolerances
from ..certification import certificate as cert_mod
from ..certification.degree import MAX_DEGREE, polynomial_at, select_degree
from ..errors import InvalidInputError
from ..kernels.features import feature_rank, paper_rank_bound
from ..problem import check_problem
from . import costs, timing

__all__ = ["METHODS", "THRESHOLD_STATEMENT", "Plan", "cost_of", "largest_cheaper_degree", "logit_bound", "plan",
           "threshold_report"]

METHODS = ("taylor", "chebyshev", "auto")


def cost_of(cert, degree, rates=None) -> dict:
    """`costs.path_costs` for the problem a certificate describes, at `degree` (None: exact only),
    with the time model's seconds (`timing.predict_seconds`; `rates` default: this machine's) and
    their ratio, which is what decides."""
    rates = timing.load_rates() if rates is None else rates
    modules = "".join(cert.adapted)
    out = costs.path_costs(cert.L, cert.L_kv, cert.d, modules, N=cert.N, degree=degree)
    out["flops_ratio"] = out.pop("ratio")
    out["exact_seconds"] = timing.predict_seconds(rates, "exact", cert.L, cert.L_kv, cert.d, modules, N=cert.N)
    out["approx_seconds"] = None if degree is None else timing.predict_seconds(
        rates, "approx", cert.L, cert.L_kv, cert.d, modules, N=cert.N, degree=degree)
    out["ratio"] = None if degree is None else out["approx_seconds"] / out["exact_seconds"]
    out["rates"] = rates.source
    return out


def largest_cheaper_degree(cert, rates=None, limit: int = 400) -> int | None:
    """The largest degree the time model predicts faster than the exact path, beyond its tie band
    (`timing.TIE`; None: none is)."""
    rates = timing.load_rates() if rates is None else rates
    modules = "".join(cert.adapted)
    exact = timing.predict_seconds(rates, "exact", cert.L, cert.L_kv, cert.d, modules, N=cert.N)
    best = None
    for g in range(0, limit + 1):
        if not timing.faster_than_exact(
                timing.predict_seconds(rates, "approx", cert.L, cert.L_kv, cert.d, modules, N=cert.N, degree=g), exact):
            break
        best = g
    return best


# ----------------------------------------------------------------------------------------------
# norms and thresholds


def logit_bound(problem) -> float:
    """The logit bound R >= max |S_ij| the certificate uses.

    R = |beta| max_i ||(X W_Q)_i||_2 max_j ||(X' W_K)_j||_2 (Cauchy-Schwarz; adapters included; max over
    the batch), rounded up to also bound the logits as computed in the problem's dtype. O(N L d^2), no
    L x L array.

    Parameters
    ----------
    problem : LoRAProblem

    Returns
    -------
    float

    Examples
    --------
    >>> import lora_proofcheck as lp
    >>> p = lp.LoRAProblem.random(L=256, d=4, r=2, adapt="QKV", logit_bound=1.0, seed=0)
    >>> round(lp.logit_bound(p), 6)
    1.0
    """
    return cert_mod.logit_enclosure(check_problem(problem))[0]


THRESHOLD_STATEMENT = (
    "Paper (Hu et al., ICLR 2025): with d = O(log L) and eps = 1/poly(L), LoRA gradients take L^(1+o(1)) "
    "time when Gamma = o(sqrt(log L)) (Thm 3.1 partial Q,V; Thm A.1 full Q,K,V), and no O(L^(2-delta)) "
    "algorithm exists under SETH once Gamma = sqrt(log L) * kappa(L), kappa = omega(1) (Thm 4.1). "
    "Gamma bounds ||X W_Q||_max and ||X' W_K||_max (adapters included). The paper omits beta and the "
    "inner dimension: the logits reach beta * d * Gamma^2, so the quantity that decides the polynomial "
    "degree is R (compare R with log L)."
)


def threshold_report(problem, *, proj: dict | None = None) -> dict:
    """Where this problem stands w.r.t. the paper's norm threshold (digest §2 table).

    Parameters
    ----------
    problem : LoRAProblem
    proj : dict, optional
        `certification.certificate.projections(problem)`, when already computed.

    Returns
    -------
    dict
        L, L_kv, d, beta, logit_bound (R), R_over_log_L, norm_XW_Q, norm_XW_K, norm_XW_V (entrywise max
        of X W_mu, adapters included, max over the batch), Gamma = max(norm_XW_Q, norm_XW_K) (Thm 3.1's
        conditions), norm_XW_QW_K = ||X W_Q W_K^T||_max and norm_X_kv = ||X'||_max (Thm A.1's extra
        conditions for mu = K), Gamma_full = the max of all four, sqrt_log_L, Gamma_over_sqrt_log_L,
        beta_d_Gamma2 (the logit scale the paper's Gamma allows), statement (the theorems, in words).

    Examples
    --------
    >>> import lora_proofcheck as lp
    >>> rep = lp.threshold_report(lp.LoRAProblem.random(L=1024, d=8, r=4, adapt="QKV", logit_bound=1.0))
    >>> round(rep["sqrt_log_L"], 3), rep["Gamma"] < rep["sqrt_log_L"]
    (2.633, True)
    """
    problem = check_problem(problem)
    proj = cert_mod.projections(problem) if proj is None else proj
    xp = proj["xp"]
    norms = {m: float(xp.max(xp.abs(proj["C"][m]))) for m in MODULES}
    R = cert_mod.logit_enclosure(problem, proj)[0]
    gamma = max(norms["Q"], norms["K"])
    # full case (Thm A.1, mu = K): C_K^(1) W_K = X W_Q W_K^T and C_K^(2) = X'
    W_K = xp.astype(problem.weights()["K"], xp.float64)
    qk = float(xp.max(xp.abs(proj["C"]["Q"] @ xp.matrix_transpose(W_K))))
    xkv = float(xp.max(proj["aXkv"]))
    log_L = math.log(problem.L) if problem.L > 1 else 0.0
    sqrt_log = math.sqrt(log_L)
    return {
        "L": problem.L, "L_kv": problem.L_kv, "d": problem.d, "beta": problem.beta,
        "logit_bound": R,
        "R_over_log_L": R / log_L if log_L else math.inf,
        "norm_XW_Q": norms["Q"], "norm_XW_K": norms["K"], "norm_XW_V": norms["V"],
        "Gamma": gamma,
        "norm_XW_QW_K": qk, "norm_X_kv": xkv,
        "Gamma_full": max(gamma, qk, xkv),
        "sqrt_log_L": sqrt_log,
        "Gamma_over_sqrt_log_L": gamma / sqrt_log if sqrt_log else math.inf,
        "beta_d_Gamma2": abs(problem.beta) * problem.d * gamma**2,
        "statement": THRESHOLD_STATEMENT,
    }


# ----------------------------------------------------------------------------------------------
# planning without data


@dataclass(frozen=True)
class Plan:
    """The approximate path's decision for a size and logit bound, from assumed magnitudes.

    feasible   a degree certifies the tolerance, predicted faster than the exact path
    tolerance  atol + rtol * gradient_scale (the max-abs error every key must meet)
    gradient_scale  G: the given `gradient_scale`, else the certified upper bound of max |g| for the
               assumed magnitudes (the most a relative tolerance can mean there)
    degree, rank, paper_rank, delta, bound, floor   of the smallest degree meeting it (None if none)
    cost       {"approx_seconds", "exact_seconds", "ratio" (of the seconds, what decides),
               "approx_flops", "exact_flops", "flops_ratio", "rates" (where the rates come from)}
    max_cheaper_degree, max_cheaper_rank, max_cheaper_bound   the largest degree still cheaper
               than the exact path, its rank, and the bound certified at min(that degree, 60)
    reason     one line: why (in)feasible
    assumptions  the magnitudes used (see `plan`)
    """

    L: int
    L_kv: int
    d: int
    r: int
    N: int
    adapt: str
    logit_bound: float
    rtol: float
    atol: float
    tolerance: float
    gradient_scale: float
    method: str
    dtype: str
    feasible: bool
    degree: int | None
    rank: int | None
    paper_rank: int | None
    delta: float | None
    bound: float | None
    floor: float | None
    cost: dict
    max_cheaper_degree: int | None
    max_cheaper_rank: int | None
    max_cheaper_bound: float | None
    reason: str
    assumptions: dict

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def plan(L, d, logit_bound, eps=None, *, rtol=1e-3, atol=0.0, gradient_scale=None, adapt="QV", r=4, N=1,
         L_kv=None, method="auto", dtype="float64", beta=None, alpha=None, input_bound=1.0, value_bound=1.0,
         target_bound=1.0, query_bound=None, key_bound=None, adapter_bound=None) -> Plan:
    """Would `approx_gradients` find a certified degree cheaper than the exact path? No data needed.

    Parameters
    ----------
    L, d : int
        Sequence length (queries) and head dimension.
    logit_bound : float
        R >= max |S_ij| (e.g. from `logit_bound(problem)`).
    eps : float, optional
        Deprecated: an absolute tolerance, the same as ``atol=eps, rtol=0``.
    rtol, atol : float
        The tolerance atol + rtol * G every key's certified bound must meet (as `approx_gradients`).
    gradient_scale : float, optional
        G, the gradients' max |g|; default: the certified upper bound for the assumed magnitudes
        (so a relative tolerance is read at its most generous: the verdict is optimistic there).
    adapt, r, N, L_kv, method, dtype, beta, alpha : optional
        As in `LoRAProblem.random` and `approx_gradients`.
    input_bound, value_bound, target_bound, query_bound, key_bound, adapter_bound : float, optional
        The magnitudes the certificate is evaluated on instead of data (below).

    Returns
    -------
    Plan

    Notes
    -----
    The certificate's formulas are evaluated on magnitudes instead of data: every row of X, X'
    has entries <= input_bound, each column of X' W_V spans [-value_bound, value_bound], |Y| <=
    target_bound, |X W_Q| <= query_bound, the columns of X' W_K span [-key_bound, key_bound] and
    |A|, |B| <= adapter_bound. Defaults: beta = 1/sqrt(d), alpha = 2r (as `LoRAProblem.random`),
    query_bound = key_bound = sqrt(logit_bound / (beta d)) (equal entries just reaching the
    Cauchy-Schwarz bound R = beta d q k), adapter_bound = 1/sqrt(d). These are assumptions; a real
    problem's certificate (`approx_gradients`) can be tighter or looser.

    Examples
    --------
    >>> import lora_proofcheck as lp
    >>> pl = lp.plan(L=2**16, d=2, logit_bound=0.5, atol=1e-3, rtol=0)
    >>> pl.feasible, pl.degree, pl.rank
    (True, 8, 45)
    """
    rtol, atol = check_tolerances(rtol, atol, eps)
    L = check_int("L", L, 1)
    d = check_int("d", d, 1)
    r = check_int("r", r, 1)
    N = check_int("N", N, 1)
    L_kv = L if L_kv is None else check_int("L_kv", L_kv, 1)
    R = check_positive("logit_bound", logit_bound)
    method = check_choice("method", method, METHODS)
    dtype = check_choice("dtype", dtype, ("float64", "float32"))
    adapt = check_modules(adapt, "adapt")
    beta = 1.0 / math.sqrt(d) if beta is None else check_positive("beta", beta)
    alpha = 2.0 * r if alpha is None else check_positive("alpha", alpha)
    entry = math.sqrt(R / (beta * d))
    assumptions = {
        "beta": beta, "alpha": alpha,
        "input_bound": check_positive("input_bound", input_bound),
        "value_bound": check_positive("value_bound", value_bound),
        "target_bound": check_positive("target_bound", target_bound),
        "query_bound": entry if query_bound is None else check_positive("query_bound", query_bound),
        "key_bound": entry if key_bound is None else check_positive("key_bound", key_bound),
        "adapter_bound": (1.0 / math.sqrt(d) if adapter_bound is None
                          else check_positive("adapter_bound", adapter_bound)),
    }
    cert = cert_mod.magnitude_certificate(
        L=L, L_kv=L_kv, d=d, r=r, N=N, adapt=adapt, beta=beta,
        scale=alpha / r, dtype=dtype, logit_bound=R,
        **{k: v for k, v in assumptions.items() if k.endswith("_bound")},
    )
    if gradient_scale is None:
        G = max(cert.gradient_magnitudes().values())
    else:
        G = check_positive("gradient_scale", gradient_scale)
    eps = atol + rtol * G
    if not (eps > 0 and math.isfinite(eps)):
        raise InvalidInputError(f"the tolerance atol + rtol * gradient_scale = {eps!r} must be finite and > 0")
    rates = timing.load_rates()
    choice = select_degree(cert, eps, method=method)
    k = None if choice.poly is None else feature_rank(d, choice.poly.degree)
    cost = cost_of(cert, None if choice.poly is None else choice.poly.degree, rates)
    g_max = largest_cheaper_degree(cert, rates)
    max_poly = None if g_max is None else polynomial_at(R, min(g_max, MAX_DEGREE), method)
    max_bound = None if max_poly is None else max(cert.bound(max_poly).values())
    feasible = choice.poly is not None and timing.faster_than_exact(cost["approx_seconds"], cost["exact_seconds"])
    if feasible:
        reason = (f"degree {choice.poly.degree} (rank {k}) certifies {max(choice.bound.values()):.3g} <= tolerance "
                  f"{eps:.3g}, predicted {cost['ratio']:.3g} x the exact path's time")
    elif choice.poly is not None:
        reason = (f"above the threshold: degree {choice.poly.degree} (rank {k}) is needed but is predicted at "
                  f"{cost['ratio']:.3g} x the exact path's time (faster means below {1 - timing.TIE:g} x: "
                  "the time model's tie band, timing.TIE)")
    else:
        reason = f"above the threshold: {choice.reason}"
    poly = choice.poly
    return Plan(
        L=L, L_kv=L_kv, d=d, r=r, N=N, adapt=adapt, logit_bound=R, rtol=rtol, atol=atol, tolerance=eps,
        gradient_scale=G, method=method, dtype=dtype,
        feasible=feasible,
        degree=None if poly is None else poly.degree, rank=k,
        paper_rank=None if poly is None else paper_rank_bound(d, poly.degree),
        delta=None if poly is None else poly.rel_error,
        bound=None if poly is None else max(choice.bound.values()),
        floor=None if poly is None else max(choice.floor.values()),
        cost=cost, max_cheaper_degree=g_max,
        max_cheaper_rank=None if g_max is None else feature_rank(d, g_max),
        max_cheaper_bound=max_bound, reason=reason, assumptions=assumptions,
    )
