"""Public API of the approximate path: certified almost-linear LoRA gradients, and where they stop.

    approx_gradients(problem, eps=1e-6)   gradients within a CERTIFIED max-abs error eps
    logit_bound(problem)                  R >= max |S_ij| (Cauchy-Schwarz, O(N L d^2))
    threshold_report(problem)             the paper's norms and thresholds for this data
    plan(L, d, logit_bound, eps)          the same decision without data (assumed magnitudes)

The degree g of the exp polynomial is the smallest whose certificate (`derivations.certificate`:
the approximation bound kappa(delta) K plus the float rounding floor) is <= eps. Its feature rank
k = C(d+g, g) fixes the cost (`costs.lowrank_flops`); when that is not below the exact path's
(`costs.exact_flops`) the problem is above the threshold for this L: the norm-based phase
transition of the paper (Thm 4.1), met concretely.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any

from .derivations import certificate as cert_mod
from .derivations.certificate import DegreeChoice as Choice
from .derivations import polynomial
from .errors import AboveThresholdError, InvalidInputError, InvalidTypeError
from ._validate import check_int, check_positive
from .kernels.features import feature_rank, paper_rank_bound
from .problem import MODULES, LoRAProblem

ON_THRESHOLD = ("raise", "exact", "force")
METHODS = ("taylor", "chebyshev", "auto")
#: degrees searched at most (the polynomial module's default)
MAX_DEGREE = 60


@dataclass(frozen=True)
class ApproxResult:
    """Gradients of the LoRA factors with their certified error.

    grads       {"A_Q": dL/dA_Q, "B_Q": ..., ...}, the keys of `exact_gradients`, input namespace/dtype
    bound       {key: certified bound on max |grads[key] - exact gradient|} (rounding included)
    floor       {key: the float-rounding part of `bound`}
    path        "approx" (low-rank chain) or "exact" (fallback: bound = the exact path's rounding floor)
    degree, rank, paper_rank   g, k = C(d+g, g), the paper's C(2(g+d), 2g) (None on the exact path)
    delta       certified relative error of the exp polynomial (None on the exact path)
    method      "taylor" / "chebyshev" (None on the exact path)
    logit_bound R, the radius the polynomial is certified on
    cost        {"approx_flops", "exact_flops", "ratio"} (approx_flops/ratio None when no degree qualifies)
    loss        batch-mean loss of the path used (the approximate softmax's on the approx path)
    norms       `threshold_report(problem)`
    eps         the requested max-abs error
    """

    grads: dict
    bound: dict
    floor: dict
    path: str
    degree: int | None
    rank: int | None
    paper_rank: int | None
    delta: float | None
    method: str | None
    logit_bound: float
    cost: dict
    loss: Any
    norms: dict = field(repr=False)
    eps: float = 0.0


# ----------------------------------------------------------------------------------------------
# argument checks


def _check_problem(problem) -> LoRAProblem:
    if not isinstance(problem, LoRAProblem):
        raise InvalidTypeError(f"problem must be a LoRAProblem, got {type(problem).__name__}")
    return problem


def _check_degree(degree):
    if degree is None:
        return None
    if isinstance(degree, bool):
        raise InvalidTypeError("degree must be an int >= 0 or None, got bool")
    try:
        degree = operator.index(degree)
    except TypeError:
        raise InvalidTypeError(f"degree must be an int >= 0 or None, got {type(degree).__name__}") from None
    if degree < 0:
        raise InvalidInputError(f"degree must be >= 0, got {degree}")
    return degree


def _check_choice(name, value, allowed):
    if not isinstance(value, str) or value not in allowed:
        raise InvalidInputError(f"{name} must be one of {allowed}, got {value!r}")
    return value


# ----------------------------------------------------------------------------------------------
# norms and thresholds


def logit_bound(problem) -> float:
    """R = |beta| max_i ||(X W_Q)_i||_2 max_j ||(X' W_K)_j||_2 >= max |S_ij| (Cauchy-Schwarz; adapters
    included; max over the batch), rounded up to also bound the logits as computed in the
    problem's dtype. O(N L d^2), no L x L array."""
    return cert_mod.logit_enclosure(_check_problem(problem))[0]


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

    Keys: L, L_kv, d, beta, logit_bound (R), R_over_log_L, norm_XW_Q, norm_XW_K, norm_XW_V (entrywise
    max of X W_mu, adapters included, max over the batch), Gamma = max(norm_XW_Q, norm_XW_K) (Thm 3.1's
    conditions), norm_XW_QW_K = ||X W_Q W_K^T||_max and norm_X_kv = ||X'||_max (Thm A.1's extra
    conditions for mu = K), Gamma_full = the max of all four, sqrt_log_L, Gamma_over_sqrt_log_L,
    beta_d_Gamma2 (the logit scale the paper's Gamma allows), statement (the theorems, in words)."""
    problem = _check_problem(problem)
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
# degree selection (shared by approx_gradients and plan)


def _costs():
    from . import costs  # noqa: PLC0415 - the low-rank stage's cost model

    return costs


def _cost(cert, degree) -> dict:
    """Predicted flops of the low-rank path at `degree` (kernel + features) and of the exact path."""
    costs = _costs()
    modules = "".join(cert.adapted)
    exact = float(costs.exact_flops(cert.L, cert.L_kv, cert.d, modules, N=cert.N))
    if degree is None:
        return {"approx_flops": None, "exact_flops": exact, "ratio": None}
    k = feature_rank(cert.d, degree)
    approx = float(costs.lowrank_flops(cert.L, cert.L_kv, cert.d, k, modules, N=cert.N)
                   + costs.feature_flops(cert.L, cert.L_kv, cert.d, degree, N=cert.N))
    return {"approx_flops": approx, "exact_flops": exact, "ratio": approx / exact}


def largest_cheaper_degree(cert, limit: int = 400) -> int | None:
    """The largest g whose low-rank cost is below the exact path's (None: not even g = 0)."""
    g = None
    for cand in range(limit + 1):
        if _cost(cert, cand)["ratio"] >= 1.0:
            break
        g = cand
    return g


def _poly(R, degree, method):
    if R > polynomial.MAX_RADIUS:
        return None
    return polynomial.exp_polynomial(R, degree=degree, method=method)


def _select(cert, eps, method):
    return cert_mod.select_degree(cert, eps, method=method, max_degree=MAX_DEGREE)


def _threshold_message(cert, eps, choice, cost, g_max) -> str:
    R, L = cert.logit_bound, cert.L
    head = (f"above the threshold: R = {R:.4g} (max |logit| bound), L = {L}, L_kv = {cert.L_kv}, "
            f"d = {cert.d}, eps = {eps:.3g}: ")
    if choice.poly is not None:
        g = choice.poly.degree
        k = feature_rank(cert.d, g)
        need = (f"the smallest certified degree is g = {g} (rank k = C(d+g, g) = {k}, paper's bound "
                f"{paper_rank_bound(cert.d, g)}), costing {cost['ratio']:.3g} x the exact path")
    else:
        need = choice.reason
    if g_max is None:
        cheap = "no rank at all is cheaper than the exact path at this size"
    else:
        k_max = feature_rank(cert.d, g_max)
        poly = _poly(R, min(g_max, MAX_DEGREE), "auto")
        got = "uncertifiable" if poly is None else f"{max(cert.bound(poly).values()):.3g}"
        cheap = f"the largest cheaper rank is k = {k_max} (degree {g_max}), which certifies only {got}"
    return (head + need + "; " + cheap +
            ". Use on_threshold='exact' (exact path) or 'force' (compute anyway), a larger eps, "
            "or reduce the norms ||X W_Q||, ||X' W_K|| (e.g. pre-LN).")


# ----------------------------------------------------------------------------------------------
# the public entry point


def approx_gradients(problem, *, eps=1e-6, degree=None, on_threshold="raise", method="auto",
                     threads=None) -> ApproxResult:
    """LoRA gradients through the almost-linear chained low-rank path, with a certified error.

    eps        requested max-abs error of every returned gradient entry (absolute, in the units of
               the gradients), covering the polynomial approximation AND float rounding.
    degree     None: the smallest degree whose certified bound is <= eps. An int: that degree; its
               bound must still be <= eps unless on_threshold="force".
    on_threshold  what to do when the approximate path cannot deliver eps more cheaply than the
               exact path (above the threshold for this L), or an explicit degree misses eps:
               "raise"  AboveThresholdError explaining R, L, the rank needed and the cost ratio;
               "exact"  the exact O(L^2 d) path: path="exact", bound = its rounding floor only;
               "force"  the approximate path anyway at the needed (or given) degree; bound is that
                        degree's certified bound, which exceeds eps when the degree was given.
    method     "taylor", "chebyshev" or "auto" (per degree, the one with the smaller certified error).
    threads    host threads for the row chunks of either path (None: the BLAS's thread count, so
               threadpoolctl limits apply); see `exact.weight_gradients`.
    """
    problem = _check_problem(problem)
    from .exact import worker_threads  # noqa: PLC0415

    worker_threads(problem, threads)  # checked before any work
    eps = cert_mod.check_eps(eps)
    degree = _check_degree(degree)
    on_threshold = _check_choice("on_threshold", on_threshold, ON_THRESHOLD)
    method = _check_choice("method", method, METHODS)

    proj = cert_mod.projections(problem)
    cert = cert_mod.certify(problem, proj)
    norms = threshold_report(problem, proj=proj)
    R = cert.logit_bound
    if degree is None:
        choice = _select(cert, eps, method)
    else:
        poly = _poly(R, degree, method)
        if poly is None:
            choice = Choice(None, None, None, f"R = {R:.4g} exceeds the radius certificates are derived for")
        else:
            bound, floor = cert.bound_and_floor(poly)
            ok = max(bound.values()) <= eps or on_threshold == "force"
            choice = Choice(poly, bound, floor, "") if ok else Choice(
                None, None, None, f"degree={degree} certifies only {max(bound.values()):.3g} > eps")
    cost = _cost(cert, None if choice.poly is None else choice.poly.degree)
    cheaper = cost["ratio"] is not None and cost["ratio"] < 1.0

    if choice.poly is not None and (cheaper or on_threshold == "force"):
        return _run_approx(problem, cert, choice, cost, norms, eps, threads)
    if on_threshold == "exact":
        return _run_exact(problem, cert, cost, norms, eps, threads)
    if on_threshold == "force" and choice.poly is None:
        raise AboveThresholdError(
            f"on_threshold='force' needs a degree to force: {choice.reason}; pass degree= explicitly")
    raise AboveThresholdError(_threshold_message(cert, eps, choice, cost, largest_cheaper_degree(cert)))


def _kernel():
    from .lowrank import lowrank_weight_gradients  # noqa: PLC0415 - the low-rank stage's kernel

    return lowrank_weight_gradients


def _run_approx(problem, cert, choice, cost, norms, eps, threads) -> ApproxResult:
    from .exact import lora_factor_gradients  # noqa: PLC0415

    poly = choice.poly
    loss, dW = _kernel()(problem, poly, "".join(problem.adapted), threads=threads)
    return ApproxResult(
        grads=lora_factor_gradients(problem, dW), bound=choice.bound, floor=choice.floor, path="approx",
        degree=poly.degree, rank=feature_rank(problem.d, poly.degree),
        paper_rank=paper_rank_bound(problem.d, poly.degree), delta=poly.rel_error, method=poly.method,
        logit_bound=cert.logit_bound, cost=cost, loss=loss, norms=norms, eps=eps,
    )


def _run_exact(problem, cert, cost, norms, eps, threads) -> ApproxResult:
    from .exact import lora_factor_gradients, weight_gradients  # noqa: PLC0415

    loss, dW = weight_gradients(problem, "".join(problem.adapted), threads=threads)
    bound = cert.exact_bound()
    return ApproxResult(
        grads=lora_factor_gradients(problem, dW), bound=bound, floor=dict(bound), path="exact",
        degree=None, rank=None, paper_rank=None, delta=None, method=None,
        logit_bound=cert.logit_bound, cost=cost, loss=loss, norms=norms, eps=eps,
    )


# ----------------------------------------------------------------------------------------------
# planning without data


@dataclass(frozen=True)
class Plan:
    """The approximate path's decision for a size and logit bound, from assumed magnitudes.

    feasible   a degree certifies eps at a cost below the exact path's
    degree, rank, paper_rank, delta, bound, floor   of the smallest degree meeting eps (None if none)
    cost       {"approx_flops", "exact_flops", "ratio"}
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
    eps: float
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


def plan(L, d, logit_bound, eps, *, adapt="QV", r=4, N=1, L_kv=None, method="auto", dtype="float64",
         beta=None, alpha=None, input_bound=1.0, value_bound=1.0, target_bound=1.0,
         query_bound=None, key_bound=None, adapter_bound=None) -> Plan:
    """Would `approx_gradients` find a certified degree cheaper than the exact path? No data needed.

    The certificate's formulas are evaluated on magnitudes instead of data: every row of X, X'
    has entries <= input_bound, each column of X' W_V spans [-value_bound, value_bound], |Y| <=
    target_bound, |X W_Q| <= query_bound, the columns of X' W_K span [-key_bound, key_bound] and
    |A|, |B| <= adapter_bound. Defaults: beta = 1/sqrt(d), alpha = 2r (as `LoRAProblem.random`),
    query_bound = key_bound = sqrt(logit_bound / (beta d)) (equal entries just reaching the
    Cauchy-Schwarz bound R = beta d q k), adapter_bound = 1/sqrt(d). These are assumptions; a real
    problem's certificate (`approx_gradients`) can be tighter or looser.
    """
    L = check_int("L", L, 1)
    d = check_int("d", d, 1)
    r = check_int("r", r, 1)
    N = check_int("N", N, 1)
    L_kv = L if L_kv is None else check_int("L_kv", L_kv, 1)
    R = check_positive("logit_bound", logit_bound)
    eps = cert_mod.check_eps(eps)
    method = _check_choice("method", method, METHODS)
    dtype = _check_choice("dtype", dtype, ("float64", "float32"))
    if not isinstance(adapt, str) or not adapt or any(m not in MODULES for m in adapt) \
            or len(set(adapt)) != len(adapt):
        raise InvalidInputError(f"adapt must be a non-empty string of distinct 'Q', 'K', 'V', got {adapt!r}")
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
        L=L, L_kv=L_kv, d=d, r=r, N=N, adapt="".join(m for m in MODULES if m in adapt), beta=beta,
        scale=alpha / r, dtype=dtype, logit_bound=R,
        **{k: v for k, v in assumptions.items() if k.endswith("_bound")},
    )
    choice = _select(cert, eps, method)
    k = None if choice.poly is None else feature_rank(d, choice.poly.degree)
    cost = _cost(cert, None if choice.poly is None else choice.poly.degree)
    g_max = largest_cheaper_degree(cert)
    max_poly = None if g_max is None else _poly(R, min(g_max, MAX_DEGREE), method)
    max_bound = None if max_poly is None else max(cert.bound(max_poly).values())
    feasible = choice.poly is not None and cost["ratio"] < 1.0
    if feasible:
        reason = (f"degree {choice.poly.degree} (rank {k}) certifies {max(choice.bound.values()):.3g} <= eps "
                  f"at {cost['ratio']:.3g} x the exact path's flops")
    elif choice.poly is not None:
        reason = (f"above the threshold: degree {choice.poly.degree} (rank {k}) is needed but costs "
                  f"{cost['ratio']:.3g} x the exact path")
    else:
        reason = f"above the threshold: {choice.reason}"
    poly = choice.poly
    return Plan(
        L=L, L_kv=L_kv, d=d, r=r, N=N, adapt=adapt, logit_bound=R, eps=eps, method=method, dtype=dtype,
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
