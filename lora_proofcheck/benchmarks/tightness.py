"""The degree table of issue 10: measured error, certified bound before and after, and time.

On issue 10's instance (L = 2^14 by default, d = 8, X ~ N(0, 0.2^2), W*_mu, A_mu ~ N(0, 1/d),
B_mu ~ N(0, 0.04), Y ~ N(0, 1), r = 4, alpha = 8, full Q/K/V) and each forced degree g:

- before: the global certificate (`certificate.certify`, one polynomial on [-R, R] with R the
  Cauchy-Schwarz bound) and the path it certifies (`lowrank_weight_gradients` at that polynomial);
- after: `approx_gradients(problem, degree=g, on_threshold="force")` (the row-adaptive certificate:
  centred, ellipsoidal enclosure, per-row polynomials, chunked rounding floor);

each against the exact path (blocked, float64): max over keys of the max-abs error, the max over
keys of the certified bound, their ratio (per key, then the median over keys) and the wall time.
`lora-proofcheck bench --tightness` runs it; a timing is one run (ratios in one run compare).
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np

from .._lib.xp import to_host64
from ..certification import certificate as cert_mod
from ..certification.polynomial import exp_polynomial
from ..errors import InvalidInputError
from ..gradients.approx import approx_gradients
from ..gradients.exact_path import exact_gradients, lora_factor_gradients
from ..gradients.lowrank_path import lowrank_weight_gradients
from ..problem import LoRAProblem

__all__ = ["DEGREES", "degree_table", "issue_instance", "table_markdown"]

DEGREES = (4, 5, 6, 7, 8, 9)


def issue_instance(L: int = 16384, seed: int = 0) -> LoRAProblem:
    """Issue 10's instance (module docstring): LoRAProblem.random's draws, X and B rescaled."""
    d, r = 8, 4
    p = LoRAProblem.random(L, d, r, adapt="QKV", seed=seed)
    f = lambda a: to_host64(a)  # noqa: E731
    B = {m: f(b) * (0.2 * math.sqrt(d)) for m, b in p.B.items()}  # N(0, 1/d) -> N(0, 0.04)
    return LoRAProblem(f(p.X) * 0.2, f(p.Y), {m: f(w) for m, w in p.W.items()}, {m: f(a) for m, a in p.A.items()},
                       B, alpha=p.alpha, beta=p.beta)


def _err(grads, ref) -> dict:
    return {k: float(np.max(np.abs(to_host64(grads[k]) - ref[k]))) for k in ref}


def degree_table(L: int = 16384, degrees=DEGREES, *, seed: int = 0, progress=None) -> dict:
    """The table (module docstring) as JSON-ready rows, one per degree."""
    if isinstance(L, bool) or not isinstance(L, int) or L < 16:
        raise InvalidInputError(f"L must be an int >= 16, got {L!r}")
    degrees = tuple(degrees)
    if not degrees or any(isinstance(g, bool) or not isinstance(g, int) or not 1 <= g <= 30 for g in degrees):
        raise InvalidInputError(f"degrees must be ints in 1..30, got {degrees!r}")
    p = issue_instance(L, seed)
    t0 = time.perf_counter()
    ref = {k: to_host64(v) for k, v in exact_gradients(p).items()}
    exact_s = time.perf_counter() - t0
    old = cert_mod.certify(p)
    S = to_host64(p.beta * (p.X3 @ p.weights()["Q"]) @ (p.Xkv3 @ p.weights()["K"]).mT)
    scale = max(float(np.max(np.abs(v))) for v in ref.values())
    rows = []
    for g in degrees:
        if progress:
            progress(f"degree {g}")
        poly = exp_polynomial(old.logit_bound, degree=g)
        t0 = time.perf_counter()
        _, dW = lowrank_weight_gradients(p, poly, "QKV")
        before = _err(lora_factor_gradients(p, dW), ref)
        before_s = time.perf_counter() - t0
        before_bound = old.bound(poly)
        t0 = time.perf_counter()
        res = approx_gradients(p, degree=g, on_threshold="force")
        after_s = time.perf_counter() - t0
        after = _err(res.grads, ref)
        rows.append({
            "degree": g,
            "before": {"error": max(before.values()), "bound": max(before_bound.values()), "seconds": before_s,
                       "ratio_median": statistics.median(before_bound[k] / before[k] for k in ref if before[k] > 0)},
            "after": {"error": max(after.values()), "bound": max(res.bound.values()), "seconds": after_s,
                      "floor": max(res.floor.values()),
                      "ratio_median": statistics.median(res.bound[k] / after[k] for k in ref if after[k] > 0)},
        })
    return {"L": L, "d": 8, "seed": seed, "max_abs_gradient": scale, "true_max_abs_logit": float(np.max(np.abs(S))),
            "cauchy_schwarz_R": float(old.logit_bound), "exact_seconds": exact_s, "rows": rows}


def table_markdown(table: dict) -> str:
    """The table as Markdown (README / closing notes)."""
    out = [f"L = {table['L']}, d = 8, max|g| = {table['max_abs_gradient']:.3g}, true max|S| = "
           f"{table['true_max_abs_logit']:.3g}, Cauchy-Schwarz R = {table['cauchy_schwarz_R']:.3g}, exact path "
           f"{table['exact_seconds']:.2f} s", "",
           "| g | error before | bound before | bound/error before | time before (s) | error after | bound after "
           "| bound/error after | time after (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        b, a = r["before"], r["after"]
        out.append(f"| {r['degree']} | {b['error']:.2g} | {b['bound']:.2g} | {b['ratio_median']:.3g} | "
                   f"{b['seconds']:.2f} | {a['error']:.2g} | {a['bound']:.2g} | {a['ratio_median']:.3g} | "
                   f"{a['seconds']:.2f} |")
    return "\n".join(out)
