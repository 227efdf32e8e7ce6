"""Calibrating the time model (`timing`) on this machine: `lora-proofcheck plan --calibrate`.

Both paths are timed (best of `repeats` after a warm-up) on a small grid of sizes, degrees and head
dimensions, from L = 128 (so the per-call constants are identified) up, a few seconds in all: the
exact path's blocked kernel; for the low-rank path, what a degree costs once `approx_gradients` has
its certificate (which it builds before the choice, whichever path wins): that degree's feature
plan, its bound (rounding floor included) and the kernel. Each path's rates are the non-negative
least-squares fit of its work counts to the measured times, in relative error
(`scipy.optimize.nnls` on rows scaled by 1/time).
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy.optimize import nnls

from .._lib.validate import check_int
from ..certification.adaptive import certify_adaptive
from ..kernels.features import feature_rank
from ..problem import LoRAProblem
from .exact_path import weight_gradients
from .lowrank_path import chunk_rows, plan_weight_gradients
from .timing import TERMS, MachineRates, machine_key, predict_seconds, work_counts

__all__ = ["CALIBRATION_GRID", "calibrate"]


#: the calibration grid: (path, L, d, degree), all Q, K, V adapted, N = 1
CALIBRATION_GRID = (
    ("exact", 128, 4, None), ("exact", 512, 8, None), ("exact", 1024, 4, None), ("exact", 2048, 8, None),
    ("exact", 2048, 16, None), ("exact", 3072, 8, None),
    ("approx", 128, 4, 2), ("approx", 512, 8, 3), ("approx", 4096, 8, 2), ("approx", 4096, 8, 4),
    ("approx", 8192, 8, 5), ("approx", 4096, 8, 6), ("approx", 8192, 4, 3), ("approx", 4096, 4, 8),
)


def _time_call(fn, repeats: int) -> float:
    """Best of `repeats` timings after a warm-up; `fn` may time itself (it returns its seconds)."""
    fn()  # warm-up: caches, allocator, thread pool
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        own = fn()
        best = min(best, own if isinstance(own, float) else time.perf_counter() - t0)
    return best


def calibrate(*, repeats: int = 2, grid=CALIBRATION_GRID, threads=None) -> tuple[MachineRates, list]:
    """Time both paths on `grid` and fit the rates; returns (rates, the measurements)."""
    repeats = check_int("repeats", repeats, 1)
    rows = []
    for path, L, d, degree in grid:
        p = LoRAProblem.random(L, d, 4, adapt="QKV", logit_bound=1.0, seed=0)
        if path == "exact":
            call = lambda p=p: weight_gradients(p, "QKV", threads=threads)  # noqa: E731
        else:  # one degree's plan, bound and kernel (module docstring)
            n = chunk_rows(p, feature_rank(d, degree))

            def call(p=p, degree=degree, rows=n):
                cert = certify_adaptive(p)  # fresh: its per-degree results are cached
                t0 = time.perf_counter()
                plan = cert.feature_plan(degree, chunk_rows=rows)
                cert.bound_and_floor(degree, chunk_rows=rows)
                plan_weight_gradients(p, plan, "QKV", chunk_rows=rows, threads=threads)
                return time.perf_counter() - t0
        seconds = _time_call(call, repeats)
        rows.append({"path": path, "L": L, "d": d, "degree": degree, "seconds": seconds,
                     "counts": work_counts(path, L, L, d, "QKV", degree=degree)})
    seconds = {}
    for path, names in TERMS.items():
        sub = [r for r in rows if r["path"] == path]
        A = np.array([[r["counts"][n] / r["seconds"] for n in names] for r in sub])
        theta, _ = nnls(A, np.ones(len(sub)))  # minimise the relative errors of the fit
        seconds.update({n: float(v) for n, v in zip(names, theta)})
    rates = MachineRates(seconds=seconds, source="calibrated (this run)", machine=machine_key())
    for r in rows:
        r["predicted"] = predict_seconds(rates, r["path"], r["L"], r["L"], r["d"], "QKV", degree=r["degree"])
    return rates, rows
