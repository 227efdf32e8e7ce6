"""Timing of the exact and approximate paths against L, in process: the log-log plot's points when
no benchmark runs (the internal tiny mode) and beside the benchmark's otherwise."""

from __future__ import annotations

import time

import numpy as np

from ...gradients.approx import approx_gradients
from ...gradients.exact_path import exact_gradients
from ...problem import LoRAProblem

__all__ = ["timing"]


def timing(ctx) -> dict:
    """Best of 3 in-process timings against L: the exact path over `timing_L`, the approximate path at a
    fixed degree (rank budget) over `timing_L` and two more doublings (it is cheap)."""
    sizes = list(ctx.config.sizes["timing_L"])
    rows = []
    for L in sizes + [sizes[-1] * 2, sizes[-1] * 4]:
        p = LoRAProblem.random(L, 4, 2, adapt="QV", logit_bound=1.0, seed=ctx.config.seed_for(f"timing/{L}"))
        methods = [
            (
                "approx (degree 4)",
                lambda p=p: approx_gradients(p, degree=4, on_threshold="force"),
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
