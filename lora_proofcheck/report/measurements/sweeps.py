"""Phase-transition evidence (Thm 4.1): an analytic cost frontier and a measured error sweep.

(a) Frontier, exact arithmetic. Logits bounded by R = Γ² (AS23's normalisation, E6), written
    R = t² ln L with t = Γ/√ln L. The smallest degree g whose certified relative error of exp on
    [-R, R] is <= eps (Lemma 3.3's ε; eps = 1/L and 1/L²) gives the rank k = C(d+g, g) and the
    predicted flops of the low-rank chain (`costs`); the frontier t*(L) is where that stops being
    cheaper than the exact path (the largest cheaper degree certifies eps exactly at R = t*² ln L).
    With d = ⌈c log2 L⌉, t* settling to a constant is the √log L threshold; with fixed d it grows.
(b) Measured: at a fixed degree (rank budget), the approximate gradients' relative error against
    the exact path as x = √(R / ln L) grows, for several L. A blow-up at a fixed x for all L is the
    threshold seen in data.
(c) Timing of the exact and approximate paths against L, for the log-log plot when the benchmark
    stage is not run (tiny mode).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..derivations.polynomial import MAX_RADIUS, certified_rel_error, min_degree
from ..kernels.features import feature_rank
from ..problem import LoRAProblem
from .context import optional_module

MODULES = "QV"  # the partial case of Thm 3.1 / Thm 4.1


def _rules(sizes):
    return [("fixed", d) for d in sizes["frontier_d"]] + [("log", c) for c in sizes["frontier_c"]]


def _d_of(rule, log2L: int) -> int:
    kind, value = rule
    return int(value) if kind == "fixed" else max(1, math.ceil(value * log2L))


def rule_label(rule) -> str:
    kind, value = rule
    return f"d = {value}" if kind == "fixed" else f"d = ⌈{value:g}·log2 L⌉"


def _costs(L, d, degree, costs):
    k = feature_rank(d, degree)
    return float(costs.lowrank_flops(L, L, d, k, MODULES) + costs.feature_flops(L, L, d, degree))


def largest_cheaper_degree(L, d, costs, limit=400):
    exact = float(costs.exact_flops(L, L, d, MODULES))
    g = None
    for cand in range(limit + 1):
        if _costs(L, d, cand, costs) >= exact:
            break
        g = cand
    return g, exact


def _crossing_radius(g: int, eps: float, tol: float = 1e-3) -> float:
    """Largest R with certified_rel_error(R, g) <= eps (monotone in R), by bisection."""
    lo, hi = 0.0, 1.0
    while hi < MAX_RADIUS and certified_rel_error(hi, g, "auto") <= eps:
        lo, hi = hi, min(2 * hi, MAX_RADIUS)
    if certified_rel_error(hi, g, "auto") <= eps:
        return hi
    while hi - lo > tol * max(hi, 1e-3):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if certified_rel_error(mid, g, "auto") <= eps else (lo, mid)
    return lo


def frontier(ctx, progress=None) -> dict:
    costs = optional_module("costs")
    sizes = ctx.config.sizes
    curves, cells = [], []
    for rule in _rules(sizes):
        for eps_kind in ("1/L", "1/L^2"):
            points = []
            for log2L in sizes["frontier_log2L"]:
                L = 2**log2L
                d = _d_of(rule, log2L)
                eps = 1.0 / L if eps_kind == "1/L" else 1.0 / L**2
                lnL = math.log(L)
                g_max, exact = largest_cheaper_degree(L, d, costs)
                R_star = None if g_max is None else _crossing_radius(g_max, eps)
                t_star = None if R_star is None else math.sqrt(R_star / lnL)
                points.append(
                    {
                        "log2L": log2L,
                        "L": L,
                        "d": d,
                        "eps": eps,
                        "g_max": g_max,
                        "k_max": None if g_max is None else feature_rank(d, g_max),
                        "R_star": R_star,
                        "t_star": t_star,
                        "exact_flops": exact,
                    }
                )
                for t in sizes["frontier_t"]:
                    R = t * t * lnL
                    g = min_degree(R, eps, max_degree=(g_max or 0) + 1) if R <= MAX_RADIUS else None
                    cheaper = g is not None and g_max is not None and g <= g_max
                    ratio = None if g is None else _costs(L, d, g, costs) / exact
                    cells.append(
                        {
                            "rule": rule_label(rule),
                            "eps": eps_kind,
                            "log2L": log2L,
                            "d": d,
                            "t": t,
                            "R": R,
                            "degree": g,
                            "rank": None if g is None else feature_rank(d, g),
                            "cost_ratio": ratio,
                            "cheaper": cheaper,
                            "exact_flops": exact,
                        }
                    )
            curves.append(
                {
                    "rule": rule_label(rule),
                    "kind": rule[0],
                    "value": rule[1],
                    "eps": eps_kind,
                    "points": points,
                }
            )
            if progress is not None:
                progress.step(f"frontier {rule_label(rule)}, eps={eps_kind}")
    return {
        "curves": curves,
        "cells": cells,
        "modules": MODULES,
        "definition": "t = Γ/√ln L with logits bounded by R = Γ² = t² ln L; eps = relative error of exp "
        "(Lemma 3.3), exact arithmetic; cost = costs.lowrank_flops + feature_flops vs "
        "costs.exact_flops (Q,V adapted)",
    }


def measured_sweep(ctx, progress=None) -> dict:
    approx = optional_module("approx")
    from ..exact import exact_gradients  # noqa: PLC0415

    sizes = ctx.config.sizes
    g, d = sizes["sweep_degree"], sizes["sweep_d"]
    xp = ctx.config.xp()
    rows = []
    for L in sizes["sweep_L"]:
        for x in sizes["sweep_x"]:
            R = x * x * math.log(L)
            p = LoRAProblem.random(
                L, d, 2, adapt="QV", logit_bound=R, seed=ctx.config.seed_for(f"sweep/{L}/{x}"), xp=xp
            )
            ref = {k: np.asarray(_host(v)) for k, v in exact_gradients(p).items()}
            res = approx.approx_gradients(p, eps=1e300, degree=g, on_threshold="force")
            scale = max(float(np.max(np.abs(v))) for v in ref.values())
            err = max(float(np.max(np.abs(_host(res.grads[k]) - ref[k]))) for k in ref)
            rows.append(
                {
                    "L": L,
                    "x": x,
                    "R": R,
                    "degree": g,
                    "rank": res.rank,
                    "d": d,
                    "rel_error": err / scale,
                    "bound_rel": max(res.bound.values()) / scale,
                    "delta": res.delta,
                    "finite": bool(np.isfinite(err)),
                }
            )
        if progress is not None:
            progress.step(f"sweep L={L}")
    return {
        "rows": rows,
        "degree": g,
        "d": d,
        "rank": feature_rank(d, g),
        "definition": "x = √(R / ln L), R = Cauchy-Schwarz logit bound; relative max error of the "
        "approximate gradients at a fixed degree against the exact path",
    }


def _host(a):
    from .._xp import to_numpy  # noqa: PLC0415

    return np.asarray(to_numpy(a), dtype=np.float64)


def timing(ctx) -> dict:
    """Best of 3 in-process timings against L: the exact path over `timing_L`, the approximate path at a
    fixed degree (rank budget) over `timing_L` and two more doublings (it is cheap)."""
    approx = optional_module("approx")
    from ..exact import exact_gradients  # noqa: PLC0415

    sizes = list(ctx.config.sizes["timing_L"])
    rows = []
    for L in sizes + [sizes[-1] * 2, sizes[-1] * 4]:
        p = LoRAProblem.random(L, 4, 2, adapt="QV", logit_bound=1.0, seed=ctx.config.seed_for(f"timing/{L}"))
        methods = [
            (
                "approx (degree 4)",
                lambda p=p: approx.approx_gradients(p, eps=1e300, degree=4, on_threshold="force"),
            )
        ]
        if L in sizes:
            methods.insert(0, ("exact", lambda p=p: exact_gradients(p)))
        for method, fn in methods:
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            rows.append({"method": method, "L": L, "median_s": float(np.median(times)), "best_s": min(times)})
    fits = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = [(r["L"], r["best_s"]) for r in rows if r["method"] == method]
        if len(pts) >= 2:
            slope, _ = np.polyfit(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]), 1)
            fits[method] = float(slope)
    return {
        "rows": rows,
        "slopes": fits,
        "d": 4,
        "source": "in-process best of 3 calls (slopes fitted to the best times), Q,V adapted, d = 4, "
        "logit bound 1, approx forced at degree 4 (rank 70)",
    }
