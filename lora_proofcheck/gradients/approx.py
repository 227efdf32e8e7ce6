"""Certified almost-linear LoRA gradients: `approx_gradients` and its result.

    approx_gradients(problem, rtol=1e-3, atol=0.0)

returns gradients g~ with, for every gradient key (A_Q, B_Q, ...), a CERTIFIED bound

    max |g~ - g| <= bound <= atol + rtol * max |g|          (numpy.allclose, in the max norm per key)

whose right-hand side is certified from below: max |g| >= G_lo := max |g~'| - bound' for any
certified result g~' (the final one or a pilot), so the check never trusts the gradient it checks.
`eps` is deprecated: it was an absolute max-abs error, i.e. ``atol=eps, rtol=0`` (a
DeprecationWarning says so).

The approximate path is the low-rank chain (`lowrank_path.plan_weight_gradients`) on the feature
plan of the row-adaptive certificate (`certification.adaptive`: centred, balanced, key-weighted
features with a certified polynomial per radius class of query rows). The degree search:

1. a priori: the floor's magnitudes bound |g| from ABOVE (G_hi); when no degree cheaper than the
   exact path certifies atol + rtol G_hi, no pilot can help: the exact path, with that reason.
2. pilots: from the smallest degree whose bound is <= G_hi / 16, the kernel runs at rising degrees
   until each key's bound is at most half its max |g~|; every pilot certifies a G_lo. The pilots
   may cost at most PILOT_BUDGET of the exact path (the time model, `timing`). A pilot that
   already meets the tolerance is the answer. After a pilot the search jumps (at most once): its values
   estimate max|g| (uncertified), and the next run is the smallest degree that would meet the
   tolerance were max|g| JUMP_MARGIN of that estimate, outside the pilot budget since it is the
   final's cost; it is the answer when its own certified G_lo confirms it (on the benchmark family
   with this machine's rates, pilots 2, 3, 4 then 6 became 2 then 6 at L = 2^13, and the whole call
   0.48 s -> 0.37 s against the exact path's 0.47 s), else the search goes on.
3. the smallest degree whose bound is <= atol + rtol G_lo for every key runs; the final G_lo can
   only be larger, so the a-posteriori check holds by construction.
4. otherwise (no degree <= max_degree meets it, the floor alone exceeds it, or the cheapest
   certified degree costs more than the exact path): ``on_threshold="exact"`` (the default)
   returns the exact path's gradients, ``path="exact"``, with the reason; "raise" raises
   `AboveThresholdError` naming that cause; "force" runs the approximate path anyway at the
   smallest degree meeting the tolerance (or `degree`).

A non-finite result never carries a finite bound: an overflow the plan predicts, or a non-finite
gradient, falls back (or raises) exactly as a missed tolerance does.

"Cheaper" is the time model's verdict (`timing.predict_seconds` with this machine's calibrated
rates, `lora-proofcheck plan --calibrate`; typical-CPU defaults otherwise), not flop counts, and it
means faster by more than the model's tie band (`timing.faster_than_exact`, 10 %): within it the
exact path is taken, being exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._lib import xp as _xp
from .._lib.blocks import worker_threads
from .._lib.envinfo import available_memory
from .._lib.validate import check_choice, check_int, check_optional_int, check_tolerances
from ..certification import adaptive
from ..certification import certificate as cert_mod
from ..errors import AboveThresholdError, InvalidInputError
from ..kernels.features import feature_rank, paper_rank_bound
from ..problem import check_problem
from . import costs, timing
from .exact_path import lora_factor_gradients, weight_gradients
from .lowrank_path import chunk_rows, chunked_bytes, plan_weight_gradients
from .planner import METHODS, threshold_report

__all__ = ["JUMP_MARGIN", "ON_THRESHOLD", "PILOT_BUDGET", "ApproxResult", "approx_gradients"]

ON_THRESHOLD = ("exact", "raise", "force")
#: the pilots may cost at most this fraction of the exact path's predicted time
PILOT_BUDGET = 0.5
#: the first pilot: the smallest degree whose bound is below this fraction of the upper bound of |g|
PILOT_START = 1.0 / 16
#: the share of a pilot's max|g~| the jump to the final degree assumes max|g| is (approx.py, step 2)
JUMP_MARGIN = 0.75
#: a degree runs only when twice its modelled peak memory (`lowrank_path.chunked_bytes`, within 2x
#: of tracemalloc's peaks) fits in this fraction of the memory available: higher degrees need more
MEMORY_FRACTION = 0.5
_CENTRE = ("auto", True, False)


@dataclass(frozen=True)
class ApproxResult:
    """Gradients of the LoRA factors and what is certified about them.

    grads       {"A_Q": dL/dA_Q, ...}, the keys of `exact_gradients`, in the input's namespace/dtype
    bound       {key: certified bound on max |grads[key] - exact gradient|} (rounding included)
    floor       {key: the float-rounding part of `bound`}
    lower       {key: G_lo, a certified lower bound on max |exact gradient|}
    tolerance   {key: atol + rtol * lower[key]}
    allclose    bound <= tolerance for every key: certified numpy.allclose(grads, exact, rtol, atol)
                in the max norm per key
    path        "approx" (low-rank chain) or "exact" (the O(L^2) path; bound = its rounding floor)
    reason      why the exact path was taken ("" on the approximate path, unless a forced degree ran
                uncertified: then why its bound is infinite)
    degree, rank, paper_rank   g, k = C(d+g, g), the paper's C(2(g+d), 2g) (None on the exact path)
    delta       the largest certified relative error of the class polynomials (None: exact path)
    method      "taylor", "chebyshev" or "taylor+chebyshev": the class polynomials' methods
    logit_bound the widest class radius (the interval the widest polynomial is certified on)
    classes     the number of radius classes of query rows
    pilots      the degrees run before the answer, to certify G_lo
    cost        {"approx_seconds", "exact_seconds", "ratio", "approx_flops", "exact_flops", "rates"}:
                the time model's prediction for the degree chosen (None entries when none)
    loss        batch-mean loss of the path used (the approximate softmax's on the approx path)
    norms       `threshold_report(problem)`
    rtol, atol  the tolerances asked for
    """

    grads: dict
    bound: dict
    floor: dict
    lower: dict
    tolerance: dict
    allclose: bool
    path: str
    reason: str
    degree: int | None
    rank: int | None
    paper_rank: int | None
    delta: float | None
    method: str | None
    logit_bound: float
    classes: int
    pilots: tuple
    cost: dict
    loss: Any
    norms: dict = field(repr=False)
    rtol: float = 0.0
    atol: float = 0.0
    certificate: Any = field(default=None, repr=False, compare=False)


# ----------------------------------------------------------------------------------------------
# the public entry point


def approx_gradients(problem, *, rtol=1e-3, atol=0.0, eps=None, degree=None, on_threshold="exact",
                     method="auto", threads=None, max_degree=30, centre_queries="auto") -> ApproxResult:
    """LoRA gradients through the almost-linear low-rank path, certified to a tolerance.

    Parameters
    ----------
    problem : LoRAProblem
    rtol, atol : float
        The certified bound on max |g~ - g| of every gradient key is <= atol + rtol * max |g|
        (numpy.allclose's semantics in the max norm per key), rounding included; max |g| is
        certified from below, never read off the approximation.
    eps : float, optional
        Deprecated: an absolute tolerance, the same as ``atol=eps, rtol=0``.
    degree : int, optional
        None: the smallest degree that meets the tolerance (module docstring). An int: that degree;
        it must still meet the tolerance unless ``on_threshold="force"``.
    on_threshold : {"exact", "raise", "force"}
        When the approximate path cannot meet the tolerance more cheaply than the exact path:
        "exact" (default) returns the exact path's gradients with ``path="exact"`` and the reason;
        "raise" raises `AboveThresholdError` naming the cause (norms above the threshold, the
        rounding floor, or L too small to pay off); "force" runs the approximate path anyway (at
        `degree`, or the smallest degree meeting the tolerance) with its certified bound.
    method : {"auto", "taylor", "chebyshev"}
        The exp polynomial of each radius class ("auto": the one with the smaller certified error).
    threads : int, optional
        Host threads for the row chunks of either path (None: the BLAS's thread count).
    max_degree : int
        The largest degree searched.
    centre_queries : {"auto", True, False}
        Centre the queries too (`certification.geometry`, G2); "auto" when it narrows the median row
        interval by >= 10 %.

    Returns
    -------
    ApproxResult

    Raises
    ------
    AboveThresholdError
        With ``on_threshold="raise"`` when the exact path is taken, and with "force" when no degree
        <= max_degree certifies the tolerance.

    Examples
    --------
    >>> import lora_proofcheck as lp
    >>> p = lp.LoRAProblem.random(L=4096, d=2, r=2, adapt="QV", logit_bound=0.5, seed=0)
    >>> res = lp.approx_gradients(p, rtol=1e-3)
    >>> res.path, res.allclose, all(res.bound[k] <= res.tolerance[k] for k in res.bound)
    ('approx', True, True)
    """
    problem = check_problem(problem)
    worker_threads(problem.xp, threads)  # checked before any work
    rtol, atol = check_tolerances(rtol, atol, eps)
    degree = check_optional_int("degree", degree)
    on_threshold = check_choice("on_threshold", on_threshold, ON_THRESHOLD)
    method = check_choice("method", method, METHODS)
    max_degree = check_int("max_degree", max_degree, 1)
    if centre_queries not in _CENTRE:
        raise InvalidInputError(f"centre_queries must be one of {_CENTRE}, got {centre_queries!r}")
    return Search(problem, rtol, atol, method, threads, max_degree, centre_queries).run(degree, on_threshold)


class Search:
    """One call's state (internal; `a_posteriori` runs its reference through it): the certificate, the time model, the tolerance, the pilots run."""

    def __init__(self, problem, rtol, atol, method, threads, max_degree, centre_queries, cert=None):
        self.problem, self.rtol, self.atol = problem, rtol, atol
        self.method, self.threads, self.max_degree = method, threads, max_degree
        self.proj = cert_mod.projections(problem)
        self.cert = (adaptive.certify_adaptive(problem, self.proj, centre_queries=centre_queries)
                     if cert is None else cert)  # `a_posteriori` reuses a result's certificate
        self.keys = sorted(self.cert.K_general)
        self.rates = timing.load_rates()
        self.modules = "".join(problem.adapted)
        self.exact_seconds = self.seconds(None)

    # -- the time model ------------------------------------------------------------------------
    def seconds(self, degree) -> float:
        c = self.cert
        path = "exact" if degree is None else "approx"
        return timing.predict_seconds(self.rates, path, c.L, c.L_kv, c.d, self.modules, N=c.N, degree=degree)

    def cost(self, degree) -> dict:
        c = self.cert
        exact_flops = float(costs.exact_flops(c.L, c.L_kv, c.d, self.modules, N=c.N))
        out = {"approx_seconds": None, "exact_seconds": self.exact_seconds, "ratio": None, "approx_flops": None,
               "exact_flops": exact_flops, "rates": self.rates.source}
        if degree is not None:
            out["approx_seconds"] = self.seconds(degree)
            out["ratio"] = out["approx_seconds"] / self.exact_seconds
            out["approx_flops"] = float(costs.approx_flops(c.L, c.L_kv, c.d, degree, self.modules, N=c.N))
        return out

    def cheaper_degrees(self) -> list:
        out = []
        for g in range(1, self.max_degree + 1):
            if not timing.faster_than_exact(self.seconds(g), self.exact_seconds):
                break
            out.append(g)
        return out

    # -- the certificate -----------------------------------------------------------------------
    def rows(self, degree) -> int:
        return chunk_rows(self.problem, feature_rank(self.problem.d, degree))

    def bound(self, degree):
        return self.cert.bound_and_floor(degree, self.method, chunk_rows=self.rows(degree))

    def tol(self, lower) -> dict:
        return {k: self.atol + self.rtol * lower[k] for k in self.keys}

    def meets(self, bound, t) -> bool:
        return all(bound[k] <= t[k] for k in self.keys)

    def first_meeting(self, t, degrees):
        """The smallest degree in `degrees` whose bound meets t (the exact-arithmetic part screens)."""
        for g in degrees:
            if any(v > t[k] for k, v in self.cert.approximation_max(g, self.method).items()):
                continue
            if self.meets(self.bound(g)[0], t):
                return g
        return None

    def upper(self, degree):
        """{key: an upper bound on max |g|}: the floor's magnitudes at `degree` plus its bound."""
        bound, _ = self.bound(degree)
        mag = self.cert.magnitudes(degree, self.method, chunk_rows=self.rows(degree))
        if mag is None or not all(math.isfinite(v) for v in bound.values()):
            return None
        return {k: float(np.max(mag[k])) + bound[k] for k in self.keys}

    # -- running the kernel --------------------------------------------------------------------
    def memory_refusal(self, degree) -> str:
        """Why `degree` may not run for lack of memory ("" when it may: `MEMORY_FRACTION`)."""
        k = feature_rank(self.problem.d, degree)
        need = 2 * chunked_bytes(self.problem, k, self.modules, rows=self.rows(degree), threads=self.threads)
        avail = available_memory()
        if avail is None or need <= MEMORY_FRACTION * avail:
            return ""
        return (f"degree {degree} (rank {k}) would need about {need / 2**30:.3g} GiB, more than "
                f"{MEMORY_FRACTION:g} of the {avail / 2**30:.3g} GiB available")

    def run_degree(self, degree, *, uncertified=False):
        """(grads, loss, bound, floor) at `degree`, or (None, why) when the plan or the result refuses.
        `uncertified` (a forced degree): run a plan the certificate cannot bound anyway, with an
        infinite bound (never a finite one) when its result is finite."""
        too_big = self.memory_refusal(degree)
        if too_big:
            return None, too_big
        plan = self.cert.feature_plan(degree, self.method, chunk_rows=self.rows(degree))
        if not plan.overflow_free and not (uncertified and plan.runnable):
            return None, plan.reason
        if not plan.overflow_free:
            loss, dW = plan_weight_gradients(self.problem, plan, self.modules, chunk_rows=self.rows(degree),
                                             threads=self.threads)
            grads = lora_factor_gradients(self.problem, dW)
            if not all(bool(np.all(np.isfinite(_host(v)))) for v in grads.values()):
                return None, f"{plan.reason}, and its result is not finite"
            inf = {k: math.inf for k in self.keys}
            return (grads, loss, inf, dict(inf)), plan.reason
        loss, dW = plan_weight_gradients(self.problem, plan, self.modules, chunk_rows=self.rows(degree),
                                         threads=self.threads)
        grads = lora_factor_gradients(self.problem, dW)
        if not all(bool(np.all(np.isfinite(_host(v)))) for v in grads.values()):
            return None, f"the approximate path returned non-finite gradients at degree {degree}"
        bound, floor = self.bound(degree)
        return (grads, loss, bound, floor), ""

    def maxima(self, grads) -> dict:
        return {k: float(np.max(np.abs(_host(grads[k])))) for k in self.keys}

    def lower_of(self, grads, bound, maxima=None) -> dict:
        maxima = self.maxima(grads) if maxima is None else maxima
        return {k: max(0.0, maxima[k] - bound[k]) for k in self.keys}

    # -- the search ----------------------------------------------------------------------------
    def run(self, degree, on_threshold) -> ApproxResult:
        self.on_threshold = on_threshold
        zero = {k: 0.0 for k in self.keys}
        if degree is not None:
            return self._given(degree, zero)
        cheap = self.cheaper_degrees()
        if not cheap:
            return self._decline(f"L = {self.cert.L} is too small to pay off: no degree is predicted faster "
                                 "than the exact path on this machine (by more than the time model's tie band, "
                                 f"{timing.TIE:.0%})", zero, (), cause="size")
        hi = self.upper(cheap[-1])
        if hi is not None and self.first_meeting(self.tol(hi), cheap) is None:
            return self._decline(self._why_none(self.tol(hi), cheap, upper=True), zero, ())
        lower, pilots, spent = dict(zero), [], 0.0
        start = cheap[0]
        if hi is not None:
            for g0 in cheap:
                if all(self.cert.approximation_max(g0, self.method)[k] <= PILOT_START * hi[k] for k in self.keys):
                    start = g0
                    break
        todo, final = [g for g in cheap if g >= start], None
        while todo:
            gp = todo.pop(0)
            c = self.seconds(gp)
            if pilots and gp != final and spent + c > PILOT_BUDGET * self.exact_seconds:
                break
            out, _ = self.run_degree(gp)
            if out is None:
                break
            spent += c
            pilots.append(gp)
            grads, loss, bound, floor = out
            gmax = self.maxima(grads)
            lower = {k: max(lower[k], v) for k, v in self.lower_of(grads, bound, gmax).items()}
            if self.meets(bound, self.tol(lower)):
                return self._approx(gp, out, lower, tuple(pilots[:-1]))
            if all(bound[k] <= 0.5 * gmax[k] for k in self.keys):
                break
            if final is None:
                # a pilot's values estimate max|g| long before its bound can certify it: the next run
                # is the degree that would meet the tolerance were max|g| 3/4 of that estimate, as the
                # final (outside the pilot budget: it is what the final costs; it certifies itself)
                final = self.first_meeting(self.tol({k: JUMP_MARGIN * gmax[k] for k in self.keys}), todo)
                if final is not None:
                    todo = [g for g in todo if g >= final]
        t = self.tol(lower)
        g = self.first_meeting(t, [g for g in cheap if g not in pilots])
        if g is None:
            return self._decline(self._why_none(t, cheap, upper=False, lower=lower, pilots=pilots), lower,
                                 tuple(pilots))
        out, why = self.run_degree(g)
        if out is None:
            return self._decline(why, lower, tuple(pilots), cause="overflow")
        lower = {k: max(lower[k], v) for k, v in self.lower_of(out[0], out[2]).items()}
        return self._approx(g, out, lower, tuple(pilots))

    def _given(self, degree, zero) -> ApproxResult:
        out, why = self.run_degree(degree, uncertified=self.on_threshold == "force")
        if out is None:
            return self._decline(why, zero, (), cause="overflow", forceable=False)
        lower = self.lower_of(out[0], out[2])
        if self.meets(out[2], self.tol(lower)) or self.on_threshold == "force":
            return self._approx(degree, out, lower, (), reason=why)
        worst = max(self.keys, key=lambda k: out[2][k] / max(self.tol(lower)[k], 1e-300))
        return self._decline(f"degree={degree} certifies {out[2][worst]:.3g} for {worst}, above its tolerance "
                             f"{self.tol(lower)[worst]:.3g}", lower, (), forceable=False)

    def _decline(self, reason, lower, pilots, *, cause="threshold", forceable=True) -> ApproxResult:
        if self.on_threshold == "raise":
            raise AboveThresholdError(reason + ". " + _HELP[cause])
        if self.on_threshold == "force" and forceable:
            return self._force(reason, lower, pilots)
        if self.on_threshold == "force":
            raise AboveThresholdError(f"on_threshold='force' at degree given: {reason}")
        return self._exact(reason, lower, pilots)

    def _force(self, reason, lower, pilots) -> ApproxResult:
        """The approximate path whatever it costs: the pilot ladder over every degree, a degree run
        only when its exact-arithmetic bound could still meet the tolerance the pilots certify."""
        lower, pilots = dict(lower), list(pilots)
        # no tolerance can exceed atol + rtol * (an upper bound of max|g|): the floor's magnitudes plus
        # a bound, or max|g~| + bound of a run; a degree whose exact-arithmetic part exceeds it is skipped
        hi = None
        for g in range(1, self.max_degree + 1):
            t = self.tol(lower)
            amax = self.cert.approximation_max(g, self.method)
            if any(t[k] > 0 and v > t[k] for k, v in amax.items()):
                continue
            if hi is not None and any(v > self.atol + self.rtol * hi[k] for k, v in amax.items()):
                continue
            too_big = self.memory_refusal(g)
            if too_big:  # every higher degree needs more
                raise AboveThresholdError(f"on_threshold='force': no degree <= {g - 1} certifies the "
                                          f"tolerance ({reason}), and {too_big}")
            out, _ = self.run_degree(g)
            if out is None:
                continue
            lower = {k: max(lower[k], v) for k, v in self.lower_of(out[0], out[2]).items()}
            if self.meets(out[2], self.tol(lower)):
                return self._approx(g, out, lower, tuple(pilots))
            run_hi = {k: float(np.max(np.abs(_host(out[0][k])))) + out[2][k] for k in self.keys}
            if all(math.isfinite(v) for v in run_hi.values()):
                hi = run_hi if hi is None else {k: min(hi[k], run_hi[k]) for k in self.keys}
            pilots.append(g)
        raise AboveThresholdError(f"on_threshold='force': no degree <= {self.max_degree} certifies the "
                                  f"tolerance ({reason}); pass degree= to force one")

    def _why_none(self, t, degrees, *, upper, lower=None, pilots=()) -> str:
        """The real cause: the floor alone, a zero lower bound, or norms above the threshold."""
        g = degrees[-1]
        bound, floor = self.bound(g)
        worst = max(self.keys, key=lambda k: bound[k] / t[k] if t[k] > 0 else math.inf)
        R = self.cert.logit_bound
        if lower is not None and lower[worst] == 0.0 and t[worst] == 0.0:
            return (f"above the threshold for L = {self.cert.L}: the pilots the budget allows (degrees "
                    f"{list(pilots) or 'none'}, <= {PILOT_BUDGET:g} x the exact path's predicted time) certify "
                    f"bounds no smaller than the gradients they bound ({bound[worst]:.3g} for {worst} at g = {g}), "
                    f"so no lower bound on max |{worst}| above 0 and no relative tolerance is certified; the widest "
                    f"row interval is [-{R:.3g}, {R:.3g}] (an atol > 0 may still be met)")
        head = (f"the largest degree predicted faster than the exact path, g = {g}, certifies {bound[worst]:.3g} "
                f"for {worst} against a tolerance of {t[worst]:.3g}"
                + (" (even against the certified upper bound of |g|)" if upper else ""))
        if floor[worst] > t[worst]:
            return f"below the rounding floor: {head}; its rounding floor alone is {floor[worst]:.3g} ({self.cert.dtype})"
        return (f"above the threshold for L = {self.cert.L}: {head}; the widest row interval is [-{R:.3g}, {R:.3g}] "
                "and the polynomial's error grows like R^(g+1)")

    # -- results -------------------------------------------------------------------------------
    def _approx(self, degree, out, lower, pilots, reason="") -> ApproxResult:
        grads, loss, bound, floor = out
        cps = self.cert.class_polys(degree, self.method)
        methods = sorted({cp.poly.method for cp in cps if cp.poly is not None})
        t = self.tol(lower)
        return ApproxResult(
            grads=grads, bound=bound, floor=floor, lower=lower, tolerance=t, allclose=self.meets(bound, t),
            path="approx", reason=reason, degree=degree, rank=feature_rank(self.problem.d, degree),
            paper_rank=paper_rank_bound(self.problem.d, degree),
            delta=max(float(cp.poly.rel_error) for cp in cps), method="+".join(methods),
            logit_bound=self.cert.logit_bound, classes=len(cps), pilots=pilots, cost=self.cost(degree),
            loss=loss, norms=threshold_report(self.problem, proj=self.proj), rtol=self.rtol, atol=self.atol,
            certificate=self.cert)

    def run_exact(self):
        """(grads, loss, bound) of the exact path, its bound the rounding floor (and underflow)."""
        loss, dW = weight_gradients(self.problem, self.modules, threads=self.threads)
        return lora_factor_gradients(self.problem, dW), loss, self.cert.exact_bound(self.problem, self.proj)

    def _exact(self, reason, lower, pilots) -> ApproxResult:
        grads, loss, bound = self.run_exact()
        lower = {k: max(lower.get(k, 0.0), v) for k, v in self.lower_of(grads, bound).items()}
        t = self.tol(lower)
        return ApproxResult(
            grads=grads, bound=bound, floor=dict(bound), lower=lower, tolerance=t, allclose=self.meets(bound, t),
            path="exact", reason=reason, degree=None, rank=None, paper_rank=None, delta=None, method=None,
            logit_bound=self.cert.logit_bound, classes=int(self.cert.geo.class_radius.shape[0]), pilots=pilots,
            cost=self.cost(None), loss=loss, norms=threshold_report(self.problem, proj=self.proj),
            rtol=self.rtol, atol=self.atol, certificate=self.cert)


_HELP = {
    "threshold": ("Use on_threshold='exact' (the default) for the exact path, a larger rtol/atol, or reduce the "
                  "norms ||X W_Q||, ||X' W_K|| (e.g. pre-LN, smaller beta)"),
    "size": "The exact path is the right one at this size (on_threshold='exact', the default)",
    "overflow": ("The balanced features would overflow (or did): use float64, or on_threshold='exact' "
                 "(the default)"),
}


def _host(v):
    return np.asarray(_xp.to_numpy(v), dtype=np.float64)
