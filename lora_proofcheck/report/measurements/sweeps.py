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
"""

from __future__ import annotations

import math

import numpy as np

from ..._lib.xp import to_host64
from ...certification.polynomial import MAX_RADIUS, certified_rel_error, min_degree
from ...gradients import costs
from ...gradients.approx import approx_gradients
from ...gradients.exact_path import exact_gradients
from ...kernels.features import feature_rank
from ...problem import LoRAProblem
from ...sweeps.engine import Cell, run_sweep
from ..config import namespace_of

__all__ = ["ADAPTED", "frontier", "frontier_cell", "frontier_cells", "measured_sweep", "rule_label", "sweep_cell",
           "sweep_cells"]

ADAPTED = "QV"  # the partial case of Thm 3.1 / Thm 4.1


def _rules(sizes):
    return [("fixed", d) for d in sizes["frontier_d"]] + [("log", c) for c in sizes["frontier_c"]]


def _d_of(rule, log2L: int) -> int:
    kind, value = rule
    return int(value) if kind == "fixed" else max(1, math.ceil(value * log2L))


def rule_label(rule) -> str:
    kind, value = rule
    return f"d = {value}" if kind == "fixed" else f"d = ⌈{value:g}·log2 L⌉"


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


def frontier_cells(sizes: dict) -> list[Cell]:
    """One engine cell per (d rule, eps kind, log2 L), in the report's order (exact arithmetic: the
    cells use no seed)."""
    return [Cell(("frontier", kind, value, eps_kind, log2L),
                 {"kind": kind, "value": value, "eps_kind": eps_kind, "log2L": log2L, "ts": list(sizes["frontier_t"])})
            for kind, value in _rules(sizes) for eps_kind in ("1/L", "1/L^2") for log2L in sizes["frontier_log2L"]]


def frontier_cell(*, kind: str, value, eps_kind: str, log2L: int, ts: list, seed: int) -> dict:
    """The frontier point of one (d rule, eps kind, L) and its cost cells over the t grid."""
    del seed  # exact arithmetic
    rule = (kind, value)
    L = 2**log2L
    d = _d_of(rule, log2L)
    eps = 1.0 / L if eps_kind == "1/L" else 1.0 / L**2
    lnL = math.log(L)
    g_max = costs.largest_cheaper_degree(L, L, d, ADAPTED)
    exact = float(costs.exact_flops(L, L, d, ADAPTED))
    R_star = None if g_max is None else _crossing_radius(g_max, eps)
    t_star = None if R_star is None else math.sqrt(R_star / lnL)
    point = {
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
    cells = []
    for t in ts:
        R = t * t * lnL
        g = min_degree(R, eps, max_degree=(g_max or 0) + 1) if R <= MAX_RADIUS else None
        cheaper = g is not None and g_max is not None and g <= g_max
        ratio = None if g is None else costs.approx_flops(L, L, d, g, ADAPTED) / exact
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
    return {"point": point, "cells": cells}


def frontier(ctx, progress=None, runner=None) -> dict:
    """The frontier curves (one per d rule and eps kind) and every cost cell, in the config's order;
    cells on `runner` (serial when None)."""
    cells = frontier_cells(ctx.config.sizes)
    step = None if progress is None else (
        lambda key, _: progress.step(f"frontier {rule_label(key[1:3])}, eps={key[3]}, L=2^{key[4]}"))
    out = run_sweep(frontier_cell, cells, base_seed=ctx.config.seed, runner=runner, progress=False, on_result=step)
    curves, flat = [], []
    for kind, value in _rules(ctx.config.sizes):
        for eps_kind in ("1/L", "1/L^2"):
            mine = [out[c.key] for c in cells if c.key[1:4] == (kind, value, eps_kind)]
            flat += [row for m in mine for row in m["cells"]]
            curves.append(
                {
                    "rule": rule_label((kind, value)),
                    "kind": kind,
                    "value": value,
                    "eps": eps_kind,
                    "points": [m["point"] for m in mine],
                }
            )
    return {
        "curves": curves,
        "cells": flat,
        "modules": ADAPTED,
        "definition": "t = Γ/√ln L with logits bounded by R = Γ² = t² ln L; eps = relative error of exp "
        "(Lemma 3.3), exact arithmetic; cost = costs.lowrank_flops + feature_flops vs "
        "costs.exact_flops (Q,V adapted)",
    }


def sweep_cells(sizes: dict, backend: str = "numpy") -> list[Cell]:
    """One engine cell per (L, x), in the report's order; its key names the seed stream "sweep/{L}/{x}"."""
    g, d = sizes["sweep_degree"], sizes["sweep_d"]
    return [Cell(("sweep", L, x), {"L": L, "x": x, "degree": g, "d": d, "backend": backend})
            for L in sizes["sweep_L"] for x in sizes["sweep_x"]]


def sweep_cell(*, L: int, x: float, degree: int, d: int, backend: str, seed: int) -> dict:
    """The approximate path's relative error at a fixed degree on one instance with R = x² ln L."""
    R = x * x * math.log(L)
    p = LoRAProblem.random(L, d, 2, adapt="QV", logit_bound=R, seed=seed, xp=namespace_of(backend))
    ref = {k: to_host64(v) for k, v in exact_gradients(p).items()}
    res = approx_gradients(p, degree=degree, on_threshold="force")
    scale = max(float(np.max(np.abs(v))) for v in ref.values())
    err = max(float(np.max(np.abs(to_host64(res.grads[k]) - ref[k]))) for k in ref)
    return {
        "L": L,
        "x": x,
        "R": R,
        "degree": degree,
        "rank": res.rank,
        "d": d,
        "rel_error": err / scale,
        "bound_rel": max(res.bound.values()) / scale,
        "delta": res.delta,
        "finite": bool(np.isfinite(err)),
    }


def measured_sweep(ctx, progress=None, runner=None) -> dict:
    """The measured rows in the config's order (L, then x); cells on `runner` (serial when None)."""
    sizes = ctx.config.sizes
    g, d = sizes["sweep_degree"], sizes["sweep_d"]
    cells = sweep_cells(sizes, ctx.config.backend)
    step = None if progress is None else (lambda key, _: progress.step(f"sweep L={key[1]} x={key[2]}"))
    out = run_sweep(sweep_cell, cells, base_seed=ctx.config.seed, runner=runner, progress=False, on_result=step)
    return {
        "rows": [out[c.key] for c in cells],
        "degree": g,
        "d": d,
        "rank": feature_rank(d, g),
        "definition": "x = √(R / ln L), R = Cauchy-Schwarz logit bound; relative max error of the "
        "approximate gradients at a fixed degree against the exact path",
    }
