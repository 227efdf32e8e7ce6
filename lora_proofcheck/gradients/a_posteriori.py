"""A posteriori bounds: a result's error certified against a more accurate certified reference.

    a_posteriori_bound(problem, result, reference="auto")

The a priori certificate (`certification.adaptive`) bounds the approximate path's error from the
data's moments alone; on the benchmark family it sits 10^3 above the error it bounds, because the
per-row errors cancel across the keys like random terms (|corr| ~ 1/sqrt(L), `benchmarks.tightness`)
and no moment bound can see that without the next degree's features.  Given those, the bound is
the triangle inequality, with nothing about the data assumed:

    max |g~ - g|  <=  max |g~ - g~_ref|  +  max |g~_ref - g|  <=  D  +  bound_ref        (per key)

where g~_ref is a reference run (a higher degree of the same certified low-rank path, or the exact
path) and bound_ref its own certified bound (rounding included: the exact path's is its rounding
floor).  D is read off the two computed results, both cast exactly to float64 on the host: one
float64 subtraction per entry errs by <= u |a - b| (u = 2^-53), so the exact max |a - b| is
<= fl(max |fl(a - b)|) (1 + 2^-52), and every sum is rounded up (math.nextafter).  Both results must
be finite and bound_ref finite; otherwise the a priori bound stands (sound or silent).  The bound
returned is the smaller of the two, per key; the lower bound on max |g| is the larger of the
result's G_lo and the reference's max |g~_ref| - bound_ref.

What it costs: the reference run.  "auto" takes the cheapest by the time model (`timing`) of: the
smallest degree G > g predicted faster than the exact path whose a priori bound is <= REFERENCE_SHARE
of the result's for every key (then D + bound_ref <= error + REFERENCE_SHARE x the a priori bound),
or the exact path.  So this is a VERIFICATION of a result (how far is this degree's answer from
the gradient, certified), not a faster answer: the reference is the more accurate of the two and is
at least as costly; use it to check the fast path's error tightly, e.g. the paper's degree against
the gradient, without an L x L array when the reference is a degree.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .._lib import xp as _xp
from .._lib.validate import check_optional_int
from ..errors import InvalidInputError, InvalidTypeError
from ..problem import check_problem
from . import timing
from .approx import ApproxResult, Search

__all__ = ["REFERENCE_SHARE", "APosterioriBound", "a_posteriori_bound"]

#: "auto" picks a reference degree whose a priori bound is at most this share of the result's
REFERENCE_SHARE = 1e-3
_U64 = 2.0**-53


@dataclass(frozen=True)
class APosterioriBound:
    """A result's error certified against a reference run (module docstring).

    bound            {key: certified bound on max |result.grads[key] - exact gradient|}:
                     min(a_priori, difference + reference_bound), rounded up
    a_priori         {key: result.bound[key]}, the result's own certificate
    difference       {key: D, an upper bound on max |result.grads[key] - reference gradients[key]|}
    reference        "exact", the reference degree (int), or None when none ran (then bound = a_priori)
    reference_bound  {key: the reference's certified bound} (inf when none ran)
    lower            {key: certified lower bound on max |exact gradient|}
    tolerance        {key: result.atol + result.rtol * lower[key]}
    allclose         bound <= tolerance for every key
    seconds          wall time of the reference run (0.0 when none ran)
    reason           why no reference ran, or why the one asked for did not ("" when one did)
    """

    bound: dict
    a_priori: dict
    difference: dict
    reference: object
    reference_bound: dict
    lower: dict
    tolerance: dict
    allclose: bool
    seconds: float
    reason: str


def _host(v):
    return np.asarray(_xp.to_numpy(v), dtype=np.float64)


def _up(x: float) -> float:
    return math.nextafter(x, math.inf) if math.isfinite(x) else x


def _down(x: float) -> float:
    return max(0.0, math.nextafter(x, -math.inf)) if math.isfinite(x) else 0.0


def _max_abs(a) -> float:
    return float(np.max(np.abs(_host(a)))) if np.size(a) else 0.0


def _difference(a, b) -> float:
    """An upper bound on max |a - b| over exactly represented float64 entries (module docstring)."""
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow gives inf: no finite bound
        m = float(np.max(np.abs(_host(a) - _host(b)))) if np.size(a) else 0.0
    return _up(m * (1.0 + 2.0 * _U64)) if math.isfinite(m) else math.inf


def _finite(grads) -> bool:
    return all(bool(np.all(np.isfinite(_host(v)))) for v in grads.values())


def _check(problem, result):
    if not isinstance(result, ApproxResult):
        raise InvalidTypeError(f"result must be an ApproxResult (from approx_gradients), got {type(result).__name__}")
    c = result.certificate
    if c is None:
        raise InvalidInputError("result carries no certificate: pass the ApproxResult approx_gradients returned")
    if (c.L, c.L_kv, c.d, c.N) != (problem.L, problem.L_kv, problem.d, problem.N) or \
            set(result.grads) != {f"{f}_{m}" for m in problem.adapted for f in "AB"}:
        raise InvalidInputError("result was not computed for problem: its shapes or LoRA keys differ")
    for k, v in result.grads.items():
        if tuple(np.shape(v)) != tuple(np.shape(problem.A[k[2]] if k[0] == "A" else problem.B[k[2]])):
            raise InvalidInputError(f"result.grads[{k!r}] has shape {np.shape(v)}, not the problem's")


def _auto_reference(search, result):
    """The cheapest by the time model of: the smallest degree G > g predicted faster than the exact
    path with bound(G) <= REFERENCE_SHARE * result.bound for every key, or the exact path (also
    when the result's bound is infinite)."""
    if not all(math.isfinite(result.bound[k]) for k in search.keys):
        return "exact"  # a forced, uncertified run: no share of its bound to aim at
    for G in range(result.degree + 1, search.max_degree + 1):
        if not timing.faster_than_exact(search.seconds(G), search.exact_seconds):
            break
        approx_max = search.cert.approximation_max(G, search.method)
        if any(approx_max[k] > REFERENCE_SHARE * result.bound[k] for k in search.keys):
            continue
        if search.meets(search.bound(G)[0], {k: REFERENCE_SHARE * result.bound[k] for k in search.keys}):
            return G
    return "exact"


def a_posteriori_bound(problem, result, *, reference="auto", threads=None) -> APosterioriBound:
    """Certify `result`'s error against a reference run (module docstring).

    Parameters
    ----------
    problem : LoRAProblem
        The problem `result` was computed for.
    result : ApproxResult
        From `approx_gradients(problem, ...)`, either path (an exact-path result keeps its bound: it is
        already its rounding floor), any degree, forced or not: a forced run's infinite bound becomes
        finite when the reference certifies.
    reference : "auto", "exact" or int
        "auto": the cheaper of a degree whose a priori bound is <= REFERENCE_SHARE of the result's and
        the exact path (module docstring); "exact": the exact O(L^2) path; an int: that degree
        (not the result's own).
    threads : int, optional
        Host threads for the reference run.

    Returns
    -------
    APosterioriBound

    Examples
    --------
    >>> import lora_proofcheck as lp
    >>> p = lp.LoRAProblem.random(L=512, d=4, r=2, adapt="QV", logit_bound=0.5, seed=0)
    >>> res = lp.approx_gradients(p, degree=3, on_threshold="force")
    >>> post = lp.a_posteriori_bound(p, res, reference=6)
    >>> all(post.bound[k] <= res.bound[k] for k in post.bound), post.reference
    (True, 6)
    """
    problem = check_problem(problem)
    _check(problem, result)
    if isinstance(reference, bool) or not (reference in ("auto", "exact") or isinstance(reference, int)):
        raise InvalidInputError(f"reference must be 'auto', 'exact' or a degree (int), got {reference!r}")
    if isinstance(reference, int):
        reference = check_optional_int("reference", reference)
        if reference < 1:
            raise InvalidInputError(f"reference must be a degree >= 1, got {reference}")
        if reference == result.degree:
            raise InvalidInputError(f"reference={reference} is the result's own degree: it certifies nothing new")
    a_priori = dict(result.bound)
    keys = sorted(a_priori)
    lower0 = dict(result.lower)

    def finish(bound, difference, ref, ref_bound, lower, seconds, reason):
        tol = {k: result.atol + result.rtol * lower[k] for k in keys}
        return APosterioriBound(bound=bound, a_priori=a_priori, difference=difference, reference=ref,
                                reference_bound=ref_bound, lower=lower, tolerance=tol,
                                allclose=all(bound[k] <= tol[k] for k in keys), seconds=seconds, reason=reason)

    inf = {k: math.inf for k in keys}
    if result.path == "exact" and reference == "auto":
        return finish(a_priori, {k: 0.0 for k in keys}, None, inf, lower0, 0.0,
                      "the result is the exact path's: its bound is already its rounding floor")
    if not _finite(result.grads):
        return finish(a_priori, inf, None, inf, lower0, 0.0, "the result is not finite")
    search = Search(problem, result.rtol, result.atol, "auto", threads, 30, "auto", cert=result.certificate)
    if reference == "auto":
        reference = _auto_reference(search, result)
    t0 = time.perf_counter()
    if reference == "exact":
        grads, _, ref_bound = search.run_exact()
        why = "" if _finite(grads) else "the exact path's result is not finite"
    else:
        out, why = search.run_degree(reference)
        grads, ref_bound = (None, inf) if out is None else (out[0], out[2])
        why = why or ""
        if out is not None and not all(math.isfinite(ref_bound[k]) for k in keys):
            why = why or f"degree {reference}'s own bound is not finite"
    seconds = time.perf_counter() - t0
    if why:
        return finish(a_priori, inf, reference, inf, lower0, seconds, f"reference {reference!r} refused: {why}")
    diff = {k: _difference(result.grads[k], grads[k]) for k in keys}
    bound = {k: min(a_priori[k], _up(diff[k] + ref_bound[k])) for k in keys}
    lower = {k: max(lower0[k], _down(_max_abs(grads[k]) - ref_bound[k]), _down(_max_abs(result.grads[k]) - bound[k]))
             for k in keys}
    return finish(bound, diff, reference, dict(ref_bound), lower, seconds, "")
