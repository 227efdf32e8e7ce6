"""Certified almost-linear LoRA gradients: `approx_gradients` and its result.

    approx_gradients(problem, eps=1e-6)   gradients within a CERTIFIED max-abs error eps

The approximate path is the low-rank chain (`lowrank_path`); `approx_gradients` certifies it
(`certification`), asks the planner whether it beats the exact path (`planner`), and runs the
path chosen. The degree g is the smallest whose certified bound is <= eps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .._lib.blocks import worker_threads
from .._lib.validate import check_choice, check_optional_int, check_positive
from ..certification import certificate as cert_mod
from ..certification.degree import MAX_DEGREE, DegreeChoice, polynomial_at, select_degree
from ..errors import AboveThresholdError
from ..kernels.features import feature_rank, paper_rank_bound
from ..problem import check_problem
from .exact_path import lora_factor_gradients, weight_gradients
from .lowrank_path import lowrank_weight_gradients
from .planner import METHODS, cost_of, largest_cheaper_degree, threshold_report

__all__ = ["ON_THRESHOLD", "ApproxResult", "approx_gradients"]

ON_THRESHOLD = ("raise", "exact", "force")


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
# the public entry point


def approx_gradients(problem, *, eps=1e-6, degree=None, on_threshold="raise", method="auto",
                     threads=None) -> ApproxResult:
    """LoRA gradients through the almost-linear chained low-rank path, with a certified error.

    Parameters
    ----------
    problem : LoRAProblem
    eps : float
        Requested max-abs error of every returned gradient entry (absolute, in the units of the
        gradients), covering the polynomial approximation AND float rounding.
    degree : int, optional
        None: the smallest degree whose certified bound is <= eps. An int: that degree; its bound
        must still be <= eps unless ``on_threshold="force"``.
    on_threshold : {"raise", "exact", "force"}
        What to do when the approximate path cannot deliver eps more cheaply than the exact path
        (above the threshold for this L), or an explicit degree misses eps: "raise" raises
        `AboveThresholdError` explaining R, L, the rank needed and the cost ratio; "exact" runs the
        exact O(L^2 d) path (``path="exact"``, bound = its rounding floor only); "force" runs the
        approximate path anyway at the needed (or given) degree, and its bound is that degree's
        certified bound, which exceeds eps when the degree was given.
    method : {"auto", "taylor", "chebyshev"}
        The exp polynomial ("auto": per degree, the one with the smaller certified error).
    threads : int, optional
        Host threads for the row chunks of either path (None: the BLAS's thread count, so
        threadpoolctl limits apply).

    Returns
    -------
    ApproxResult
        The gradients (keys of `exact_gradients`) with their certified bound per key.

    Raises
    ------
    AboveThresholdError
        With ``on_threshold="raise"`` when no degree certifies eps more cheaply than the exact path.

    Examples
    --------
    >>> import lora_proofcheck as lp
    >>> p = lp.LoRAProblem.random(L=4096, d=2, r=2, adapt="QV", logit_bound=0.5, seed=0)
    >>> res = lp.approx_gradients(p, eps=1e-3)
    >>> res.path, res.degree, res.rank, max(res.bound.values()) <= 1e-3
    ('approx', 7, 36, True)
    """
    problem = check_problem(problem)
    worker_threads(problem.xp, threads)  # checked before any work
    eps = check_positive("eps", eps)
    degree = check_optional_int("degree", degree)
    on_threshold = check_choice("on_threshold", on_threshold, ON_THRESHOLD)
    method = check_choice("method", method, METHODS)

    proj = cert_mod.projections(problem)
    cert = cert_mod.certify(problem, proj)
    norms = threshold_report(problem, proj=proj)
    R = cert.logit_bound
    if degree is None:
        choice = select_degree(cert, eps, method=method)
    else:
        poly = polynomial_at(R, degree, method)
        if poly is None:
            choice = DegreeChoice(None, None, None, f"R = {R:.4g} exceeds the radius certificates are derived for")
        else:
            bound, floor = cert.bound_and_floor(poly)
            ok = max(bound.values()) <= eps or on_threshold == "force"
            choice = DegreeChoice(poly, bound, floor, "") if ok else DegreeChoice(
                None, None, None, f"degree={degree} certifies only {max(bound.values()):.3g} > eps")
    cost = cost_of(cert, None if choice.poly is None else choice.poly.degree)
    cheaper = cost["ratio"] is not None and cost["ratio"] < 1.0

    if choice.poly is not None and (cheaper or on_threshold == "force"):
        return _run_approx(problem, cert, choice, cost, norms, eps, threads)
    if on_threshold == "exact":
        return _run_exact(problem, cert, cost, norms, eps, threads)
    if on_threshold == "force" and choice.poly is None:
        raise AboveThresholdError(
            f"on_threshold='force' needs a degree to force: {choice.reason}; pass degree= explicitly")
    raise AboveThresholdError(_threshold_message(cert, eps, choice, cost, largest_cheaper_degree(cert)))


def _run_approx(problem, cert, choice, cost, norms, eps, threads) -> ApproxResult:
    poly = choice.poly
    loss, dW = lowrank_weight_gradients(problem, poly, "".join(problem.adapted), threads=threads)
    return ApproxResult(
        grads=lora_factor_gradients(problem, dW), bound=choice.bound, floor=choice.floor, path="approx",
        degree=poly.degree, rank=feature_rank(problem.d, poly.degree),
        paper_rank=paper_rank_bound(problem.d, poly.degree), delta=poly.rel_error, method=poly.method,
        logit_bound=cert.logit_bound, cost=cost, loss=loss, norms=norms, eps=eps,
    )


def _run_exact(problem, cert, cost, norms, eps, threads) -> ApproxResult:
    loss, dW = weight_gradients(problem, "".join(problem.adapted), threads=threads)
    bound = cert.exact_bound()
    return ApproxResult(
        grads=lora_factor_gradients(problem, dW), bound=bound, floor=dict(bound), path="exact",
        degree=None, rank=None, paper_rank=None, delta=None, method=None,
        logit_bound=cert.logit_bound, cost=cost, loss=loss, norms=norms, eps=eps,
    )


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
        poly = polynomial_at(R, min(g_max, MAX_DEGREE), "auto")
        got = "uncertifiable" if poly is None else f"{max(cert.bound(poly).values()):.3g}"
        cheap = f"the largest cheaper rank is k = {k_max} (degree {g_max}), which certifies only {got}"
    return (head + need + "; " + cheap +
            ". Use on_threshold='exact' (exact path) or 'force' (compute anyway), a larger eps, "
            "or reduce the norms ||X W_Q||, ||X' W_K|| (e.g. pre-LN).")


