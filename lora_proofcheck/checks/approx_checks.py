"""Approximate-path checks of `lora-proofcheck check` (after the exact-path checks).

Each compares the certified approximate gradients with an independent float64 exact reference,
reporting measured/bound; the Alman-Song lemma on adversarial perturbations; and the phase
transition (above the threshold the largest cheaper rank misses eps, and the API says so).
"""

from __future__ import annotations

import math

import numpy as np

from .._lib import xp as _xp
from .._lib.records import Outcome, timed
from ..certification import adaptive
from ..certification import certificate as cert_mod
from ..errors import AboveThresholdError
from ..gradients.approx import approx_gradients
from ..gradients.exact_path import exact_gradients
from ..gradients.planner import largest_cheaper_degree
from ..problem import LoRAProblem
from ..testing import aligned_problem, make_problem, upcast

__all__ = ["approx_checks", "reference"]


def _max_ratio(result, reference: dict, allowance: dict) -> float:
    return max(float(np.max(np.abs(np.asarray(_xp.to_numpy(result.grads[k]), np.float64) - reference[k])))
               / (result.bound[k] + allowance[k]) for k in reference)


def reference(problem):
    """Exact float64 gradients (host) and their own certified rounding floor (the reference's allowance)."""
    p64 = upcast(problem)
    ref = {k: np.asarray(_xp.to_numpy(v), np.float64) for k, v in exact_gradients(p64).items()}
    return ref, adaptive.certify_adaptive(p64).exact_bound(p64)


def check_within_bound(full: bool = False) -> list[Outcome]:
    """rtol/atol-driven settings (the certified numpy.allclose of `approx_gradients`, forced onto the
    approximate path) and one degree-driven float32 setting."""
    rand = LoRAProblem.random
    settings = [  # (name, problem builder, rtol, degree)
        ("Q,V self, float64", lambda: rand(256, 2, 2, adapt="QV", logit_bound=1.0, seed=11), 1e-6, None),
        ("Q,K,V cross N=2, float64",
         lambda: rand(192, 3, 2, adapt="QKV", N=2, cross=True, L_kv=160, logit_bound=0.5, seed=12),
         1e-4, None),
        ("Q,V aligned (adversarial), float64",
         lambda: aligned_problem(128, 3, 2, 1.0, seed=13, adapt="QV"), 1e-5, None),
        ("Q,K,V Softmax_1 (n = 1), float64",
         lambda: rand(192, 3, 2, adapt="QKV", logit_bound=1.0, seed=16, normalizer_offset=1.0), 1e-4, None),
        ("Q,K,V self, float32, degree 4",
         lambda: rand(256, 2, 2, adapt="QKV", logit_bound=0.5, seed=14, dtype="float32"), None, 4),
    ]
    if full:
        settings.append(("Q,K,V self L=512 d=4, float64",
                         lambda: rand(512, 4, 4, adapt="QKV", logit_bound=1.0, seed=15), 1e-3, None))
    out = []
    for name, build, rtol, degree in settings:
        def run(build=build, rtol=rtol, degree=degree):
            problem = build()
            ref, allowance = reference(problem)
            if degree is None:
                res = approx_gradients(problem, rtol=rtol, on_threshold="force")
            else:
                res = approx_gradients(problem, degree=degree, on_threshold="force")
            ratio = _max_ratio(res, ref, allowance)
            holds = all(float(np.max(np.abs(np.asarray(_xp.to_numpy(res.grads[k]), np.float64) - ref[k])))
                        <= res.tolerance[k] + allowance[k] * (1 + res.rtol) for k in ref)
            ok = ratio <= 1.0 and (degree is not None or (res.allclose and holds))
            return ok, (f"measured/bound {ratio:.2e}; g={res.degree} k={res.rank}, bound "
                        f"{max(res.bound.values()):.2e}" + (f", certified allclose at rtol {rtol:g}"
                                                              if degree is None else ""))
        out.append(timed(f"approx within bound: {name}", run, detail="certified max-abs error vs float64 exact"))
    return out


def check_alman_song() -> Outcome:
    def run():
        rng = np.random.default_rng(21)
        worst = 0.0
        for trial in range(200):
            L, L_kv = rng.integers(1, 20), rng.integers(2, 40)
            dlt = 10.0 ** rng.uniform(-9, math.log10(0.5))
            A = np.exp(rng.uniform(-8, 8, (L, L_kv)))
            V = rng.standard_normal((L_kv, 3))
            sign = np.sign(V[:, trial % 3] - np.median(V[:, trial % 3]))   # adversarial pattern
            At = A * (1 + dlt * sign)
            err = np.abs(At @ V / At.sum(1, keepdims=True) - A @ V / A.sum(1, keepdims=True)).max()
            worst = max(worst, err / (2 * dlt * np.abs(V).max()))
        return worst <= 1.0 + 1e-9, f"max err / (2 delta ||V||_max) = {worst:.3f} over 200 adversarial cases"
    return timed("Alman-Song lemma", run, detail="relative delta on A => softmax-average error <= 2 delta ||V||_max")


def check_phase_transition() -> Outcome:
    def run():
        problem = make_problem("edge", 1024, 4, 2, R=12.0, seed=31, adapt="QV")
        ref, _ = reference(problem)
        try:
            approx_gradients(problem, rtol=1e-3, on_threshold="raise")
            return False, "no AboveThresholdError at edge R=12, L=1024"
        except AboveThresholdError:
            pass
        fallback = approx_gradients(problem, rtol=1e-3)
        if fallback.path != "exact" or not fallback.reason:
            return False, "the default did not fall back to the exact path with a reason"
        g = largest_cheaper_degree(cert_mod.certify(problem))
        if g is None:
            return False, "no cheaper degree at all"
        plan_ok = adaptive.certify_adaptive(problem).feature_plan
        g = max((h for h in range(1, g + 1) if plan_ok(h).overflow_free), default=None)
        if g is None:
            return False, "no certifiable degree below the largest cheaper one"
        res = approx_gradients(problem, degree=g, on_threshold="force")
        gmax = {k: float(np.max(np.abs(v))) for k, v in ref.items()}
        miss = max(float(np.max(np.abs(np.asarray(_xp.to_numpy(res.grads[k])) - ref[k]))) / gmax[k] for k in ref)
        return miss > 1e-3, (f"edge R=12, L=1024: largest cheaper rank k={res.rank} (g={g}) errs {miss:.2e} x max|g| "
                             "> rtol 1e-3; the default returns the exact path")
    return timed("phase transition", run,
                 detail="above the threshold the ranks cheaper than exact miss rtol; API falls back / raises")


def approx_checks(full: bool = False) -> list[Outcome]:
    return [*check_within_bound(full), check_alman_song(), check_phase_transition()]
