"""Turning measurements into figures: cost-model rates, scaling exponents, the summary.

`summarize(result)` is what the report includes: per-method headline numbers, speedups at a
common L, the GEMM ceiling, and each performance target of issue 5 with its measured value.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InvalidInputError
from ..gradients import costs
from .worker import TORCH, approx_name

__all__ = ["MEMORY_L", "MEMORY_TARGET_BYTES", "SPEEDUP_L", "approx_gemm_shapes", "fit_all", "fit_exponent",
           "model_flops", "summarize"]

# L at which speedups and the exact-vs-PyTorch comparison are quoted (issue 5).
SPEEDUP_L = 16384
MEMORY_L = 20000
MEMORY_TARGET_BYTES = 1.5e9


def model_flops(method: str, L: int, d: int, modules: str, k=None, degree=None):
    """FLOPs of one gradient evaluation by the cost model (`gradients.costs`), None for an approximate
    run without a rank. The approximate path is priced as its kernel plus its feature maps; PyTorch
    autograd runs the exact algorithm, so it is priced as the exact kernel."""
    if method.startswith("approx-"):
        if k is None or degree is None:
            return None
        return costs.approx_flops(L, L, d, degree, modules)
    return float(costs.exact_flops(L, L, d, modules, N=1))


def approx_gemm_shapes(L: int, k: int, d: int) -> dict:
    """(m, k, n) of the GEMMs that dominate the low-rank chain (derivations/lowrank.py: four
    products of L x k by k x d^2, two with the reduction over L)."""
    return {"approx (L x k)(k x d^2)": (L, k, d * d), "approx (k x L)(L x d^2)": (k, L, d * d)}


def fit_exponent(L, seconds) -> dict:
    """Least-squares fit of log t = e log L + log c; returns {"exponent": e, "prefactor": c, ...}."""
    L = np.asarray(L, dtype=np.float64)
    t = np.asarray(seconds, dtype=np.float64)
    if L.shape != t.shape or L.ndim != 1:
        raise InvalidInputError("L and seconds must be 1-D sequences of the same length")
    if len(np.unique(L)) < 2:
        raise InvalidInputError(f"an exponent needs at least two distinct L, got {L.tolist()}")
    if not (np.all(L > 0) and np.all(t > 0) and np.all(np.isfinite(t))):
        raise InvalidInputError("L and seconds must be positive and finite")
    x, y = np.log(L), np.log(t)
    e, logc = np.polyfit(x, y, 1)
    resid = y - (e * x + logc)
    return {"exponent": float(e), "prefactor": float(math.exp(logc)), "L": L.tolist(),
            "max_log_residual": float(np.max(np.abs(resid)))}


def fit_all(entries, min_L: int) -> dict:
    """Per method, the exponent of the median time over its successful sizes L >= min_L."""
    out = {}
    for method in dict.fromkeys(e["method"] for e in entries):
        pts = sorted((e["L"], e["median_s"]) for e in entries
                     if e["method"] == method and e["status"] == "ok" and e["L"] >= min_L)
        if len({L for L, _ in pts}) < 2:
            out[method] = {"exponent": None, "reason": f"fewer than two measured sizes with L >= {min_L}"}
        else:
            out[method] = fit_exponent([p[0] for p in pts], [p[1] for p in pts])
    return out


def _ok(result, method, L=None):
    runs = [e for e in result["results"] if e["method"] == method and e["status"] == "ok"
            and (L is None or e["L"] == L)]
    return max(runs, key=lambda e: e["L"]) if runs else None


def _target(name, target, value, met, note=""):
    return {"name": name, "target": target, "value": value, "met": met, "note": note}


def _speedup(result, fast, slow, L):
    a, b = _ok(result, fast, L), _ok(result, slow, L)
    return None if a is None or b is None else b["median_s"] / a["median_s"]


def _skip_reason(result, method, L=SPEEDUP_L) -> str:
    """Why `method` did not run (at L if it was tried there), first clause only."""
    skips = [e for e in result["results"] if e["method"] == method and e["status"] != "ok"]
    if not skips:
        return "not in this run"
    e = next((e for e in skips if e["L"] == L), skips[0])
    return f"L={e['L']}: {e['reason'].split('; ')[0][:200]}"


def _approx_targets(result, a, gemm, speedups, issue) -> list:
    note = "" if issue else "(for comparison)"
    last = _ok(result, a)
    frac = None
    if last is not None and last.get("gflops") is not None and gemm.get("square"):
        frac = last["gflops"] / gemm["square"]
    where = f"at L={last['L']}" if last is not None else f"never ran: {_skip_reason(result, a)}"
    out = [_target(f"{a} FLOP rate / square GEMM rate", ">= 0.5", frac, None if frac is None else frac >= 0.5,
                   f"{where} {note}".strip())]
    e = result["fits"].get(a, {}).get("exponent")
    out.append(_target(f"{a} time exponent (L >= {result['config']['fit_min_L']})", "<= 1.1", e,
                       None if e is None else e <= 1.1, note))
    s = speedups.get(f"{a} over {TORCH}")
    out.append(_target(f"{a} speedup over {TORCH} at L={SPEEDUP_L}", ">= 50", s, None if s is None else s >= 50,
                       note))
    return out


def summarize(result: dict) -> dict:
    """Headline figures and the issue-5 targets (met: True / False / None when not measured)."""
    methods = list(dict.fromkeys(e["method"] for e in result["results"]))
    gemm = {g["name"]: g.get("gflops_best") for g in result["gemm"] if g.get("status") == "ok"}
    per_method = {}
    for m in methods:
        last = _ok(result, m)
        fit = result["fits"].get(m, {})
        errs = [e for e in result["results"] if e["method"] == m and e.get("max_abs_error") is not None]
        per_method[m] = None if last is None else {
            "largest_L": last["L"], "median_s": last["median_s"], "gflops": last.get("gflops"),
            "peak_rss_bytes": last.get("peak_rss_bytes"), "exponent": fit.get("exponent"),
            "max_abs_error": max((e["max_abs_error"] for e in errs), default=None),
            "bound_holds": all(e["bound_holds"] for e in errs) if errs and "bound_holds" in errs[0] else None,
            "rank": last.get("rank"), "degree": last.get("degree"),
        }
    approx = [m for m in methods if m.startswith("approx-")]
    speedups = {f"{fast} over {slow}": _speedup(result, fast, slow, SPEEDUP_L)
                for fast, slow in [*((a, TORCH) for a in approx), *((a, "exact-blocked") for a in approx),
                                   ("exact-blocked", TORCH)]}
    targets = []
    # issue 5 sets the targets for eps = 1e-3; every other approximate method gets the same rows
    # for comparison (a forced degree measures the kernel whatever the certificate says)
    a3 = approx_name(1e-3)
    for a in [a3, *(m for m in approx if m != a3)]:  # the issue's rows even when not measured
        targets += _approx_targets(result, a, gemm, speedups, issue=a == a3)
    s = speedups[f"exact-blocked over {TORCH}"]
    targets.append(_target(f"exact-blocked speed vs {TORCH} at L={SPEEDUP_L} (t_torch / t_blocked)", ">= 1",
                           s, None if s is None else s >= 1))
    big = _ok(result, "exact-blocked", 2**17)
    targets.append(_target("exact-blocked runs at L=2^17, d=8", "runs", None if big is None else big["median_s"],
                           None if big is None else True))
    mem = _ok(result, "exact-blocked", MEMORY_L)
    targets.append(_target(f"exact-blocked peak RSS at L={MEMORY_L}", "<= 1.5e9 bytes",
                           None if mem is None else mem["peak_rss_bytes"],
                           None if mem is None else mem["peak_rss_bytes"] <= MEMORY_TARGET_BYTES))
    skipped = [f"{e['method']} at L={e['L']}: {e['reason']}" for e in result["results"] if e["status"] != "ok"]
    return {"gemm_gflops": gemm, "methods": per_method, "speedups_at_L": SPEEDUP_L, "speedups": speedups,
            "targets": targets, "not_run": skipped}
