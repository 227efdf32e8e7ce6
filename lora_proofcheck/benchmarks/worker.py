"""One measurement in a fresh process: `python -m lora_proofcheck.benchmarks < spec.json`.

A fresh process per (method, L) makes the peak-memory figure honest: the kernel's high-water mark
is not hidden by an earlier, larger run, nor inflated by another method's imports. Memory method:
after imports and instance construction the Linux peak-RSS counter is reset (/proc/self/clear_refs
"5"); after the timed calls getrusage's ru_maxrss is the peak resident set of the whole process
during them (interpreter, libraries and inputs included, reported separately as the baseline).
Without clear_refs the figure is the process's lifetime peak, and says so. CuPy runs add the
memory pool's size, which only grows while the pool is not freed: the device high-water mark.

The spec and the answer are single JSON objects on stdin and stdout.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from .. import testing
from .._lib import xp as _xp
from .._lib.blocks import worker_threads
from ..certification import adaptive
from ..certification import certificate as cert_mod
from ..errors import ProofcheckError
from ..gradients import exact_path, lowrank_path, timing
from ..gradients.a_posteriori import a_posteriori_bound
from ..gradients.approx import approx_gradients
from ..kernels.features import feature_rank
from ..problem import LoRAProblem

__all__ = ["EXACT_METHODS", "TORCH", "approx_name", "degree_name", "main", "measure_contractions", "measure_gemm",
           "measure_method", "rtol_name"]

EXACT_METHODS = ("exact-dense", "exact-blocked")
TORCH = "torch-autograd"


def approx_name(eps: float) -> str:
    """The approximate path asked for a certified max-abs error eps (it picks the degree)."""
    return f"approx-eps{eps:.0e}"


def rtol_name(rtol: float) -> str:
    """The approximate path asked for a certified relative tolerance rtol (atol = 0) with
    on_threshold="exact": what a user calls; it takes the exact path when that is predicted faster
    or the tolerance cannot be certified, and records which path it took."""
    return f"approx-rtol{rtol:.0e}"


def degree_name(degree: int) -> str:
    """The approximate path run at a forced polynomial degree (on_threshold="force"): what its
    kernel costs at that rank, whatever the certificate concludes; its bound is that degree's."""
    return f"approx-g{degree}"


def _rss_now() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak() -> str:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return "peak RSS of the timed calls (clear_refs reset, then getrusage ru_maxrss)"
    except OSError:
        return "peak RSS over the process lifetime (getrusage ru_maxrss; clear_refs unavailable)"


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _limit_threads(threads):
    """Hold the BLAS to `threads` for the life of this process; report the thread counts in force."""
    keep = threadpool_limits(limits=threads, user_api="blas") if threads else None
    blas = [i.get("num_threads") for i in threadpool_info() if i.get("user_api") == "blas"]
    return keep, {"blas": blas}


def _host_grads(grads) -> dict:
    return {k: np.asarray(_xp.to_numpy(v), dtype=np.float64).tolist() for k, v in grads.items()}


def _prepare(spec):
    """(call, info): `call()` computes the gradients once and returns (grads, extra facts)."""
    method = spec["method"]
    xp = None if method == TORCH else spec["backend"]
    p = LoRAProblem.random(spec["L"], spec["d"], spec["r"], adapt=spec["adapt"],
                           logit_bound=spec["logit_bound"], seed=spec["seed"], xp=xp)
    info = {}
    if method == "exact-dense":
        return (lambda: (exact_path.exact_gradients(p, block_rows=None), {})), info
    if method == "exact-blocked":
        rows = exact_path.blocked_rows(p)
        info["block_rows"] = rows
        info["workers"] = worker_threads(p.xp, spec["threads"]) if rows < p.L else 1
        return (lambda: (exact_path.exact_gradients(p, block_rows=rows, threads=spec["threads"]), {})), info
    if method == TORCH:
        import torch  # noqa: PLC0415 - the baseline's framework, loaded only for its own runs

        if spec["threads"]:
            torch.set_num_threads(spec["threads"])
        info["torch_threads"] = torch.get_num_threads()
        return (lambda: (testing.torch_gradients(p)[1], {})), info
    if method.startswith("approx-"):
        timing.work_counts("approx", 2, 2, p.d, "".join(p.adapted), degree=1)  # the time model's formulas
        if method.startswith("approx-rtol"):  # certified relative tolerance, falls back to the exact path
            kwargs = {"rtol": spec["rtol"], "atol": 0.0, "on_threshold": "exact", "threads": spec["threads"]}
        elif spec.get("degree") is None:  # on_threshold="raise": above the threshold it declines (recorded)
            kwargs = {"rtol": 0.0, "atol": spec["eps"], "on_threshold": "raise", "threads": spec["threads"]}
        else:
            kwargs = {"degree": spec["degree"], "on_threshold": "force", "threads": spec["threads"]}

        last = {}

        def call():
            res = last["res"] = approx_gradients(p, **kwargs)
            return res.grads, _approx_facts(res)
        if method.startswith("approx-rtol"):
            info["_after"] = lambda extra: {"forced": _forced_comparison(p, spec, extra),
                                            **_posteriori(p, last["res"], spec)}
        return call, info
    raise ValueError(f"unknown method {method!r}")


def _approx_facts(res) -> dict:
    bounds = {k: float(v) for k, v in res.bound.items()}
    cost = {k: res.cost[k] for k in ("approx_seconds", "exact_seconds", "ratio", "rates")}
    return {"bounds": bounds, "bound": max(bounds.values()), "degree": res.degree, "rank": res.rank,
            "path": res.path, "path_reason": res.reason, "pilots": list(res.pilots), "predicted": cost}


#: the a posteriori companion runs at L <= this (its reference, degree g + POSTERIORI_STEP, costs more)
POSTERIORI_MAX_L = 16384
POSTERIORI_STEP = 3


def _posteriori(p, res, spec) -> dict:
    """Untimed: `a_posteriori_bound` of the call's result against degree g + POSTERIORI_STEP (the
    runner adds the per-key errors; analysis reports bound / error next to the a priori one)."""
    if res.path != "approx" or p.L > POSTERIORI_MAX_L:
        return {}
    post = a_posteriori_bound(p, res, reference=res.degree + POSTERIORI_STEP, threads=spec["threads"])
    return {"a_posteriori": {"reference": post.reference, "reason": post.reason, "seconds": post.seconds,
                             "bounds": {k: float(v) for k, v in post.bound.items()}}}


def _forced_comparison(p, spec, extra) -> dict:
    """The approximate path forced at the degree the rtol call chose, timed like the call itself:
    what the exact path is measured against to say which path was faster (the planner's check).

    When the call took the exact path, the degree is the smallest one the forced search certifies
    at this rtol (`on_threshold="force"`, untimed); when none does, the approximate path is no
    option at this tolerance and nothing is timed."""
    degree, how = extra.get("degree"), "the degree the call chose"
    if degree is None:
        try:
            degree = approx_gradients(p, rtol=spec["rtol"], atol=0.0, on_threshold="force",
                                      threads=spec["threads"]).degree
            how = "the smallest degree certifying rtol (on_threshold='force', its search untimed)"
        except ProofcheckError as exc:
            return {"degree": None, "reason": f"{type(exc).__name__}: {str(exc)[:300]}"}
    times = []
    start = time.perf_counter()
    for _ in range(spec["repeats"]):
        t0 = time.perf_counter()
        res = approx_gradients(p, rtol=spec["rtol"], atol=0.0, degree=degree, on_threshold="force",
                               threads=spec["threads"])
        _sync(res.grads)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start + times[-1] > spec["max_seconds"]:
            break
    return {"degree": degree, "how": how, "times_s": times, "median_s": float(np.median(times)),
            "bound": max(float(v) for v in res.bound.values())}


def _sync(grads):
    for v in grads.values():
        _xp.synchronize(v)


def _device_pool(backend):
    if backend != "cupy":
        return None
    import cupy  # noqa: PLC0415 - only for --backend cupy

    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    return pool


def measure_method(spec) -> dict:
    """Time `spec["repeats"]` calls (fewer if `max_seconds` runs out) and read the peak memory."""
    keep, threads_info = _limit_threads(spec["threads"])
    call, info = _prepare(spec)
    pool = _device_pool(spec["backend"]) if spec["method"] != TORCH else None
    baseline = _rss_now()
    memory_method = _reset_peak()
    times, grads, extra = [], None, {}
    start = time.perf_counter()
    for i in range(spec["repeats"]):
        t0 = time.perf_counter()
        grads, extra = call()
        _sync(grads)
        times.append(time.perf_counter() - t0)
        if spec.get("progress", True):
            print(f"[bench]   {spec['method']} L={spec['L']} run {i + 1}/{spec['repeats']}: {times[-1]:.4g} s",
                  file=sys.stderr, flush=True)
        if time.perf_counter() - start + times[-1] > spec["max_seconds"]:
            break  # one more run would overrun the measurement's budget
    peak = _peak_rss()
    after = info.pop("_after", None)
    if after is not None:  # untimed companions (their memory is not in the peak above)
        info.update(after(extra))
    out = {
        "times_s": times, "peak_rss_bytes": peak, "baseline_rss_bytes": baseline,
        "memory_method": memory_method, "grads": _host_grads(grads), "threads": threads_info, **info, **extra,
    }
    if pool is not None:
        out["device_peak_bytes"] = int(pool.total_bytes())
    del keep
    return out


def measure_gemm(spec) -> dict:
    """Best and median rate of C = A @ B with A (m x k), B (k x n) in float64 (2 m k n flops)."""
    keep, threads_info = _limit_threads(spec["threads"])
    m, k, n = spec["shape"]
    rng = np.random.default_rng(0)
    xp = _xp.resolve_namespace(spec["backend"])
    A = _xp.from_numpy(rng.standard_normal((m, k)), xp)
    B = _xp.from_numpy(rng.standard_normal((k, n)), xp)
    times = []
    for _ in range(spec["repeats"]):
        t0 = time.perf_counter()
        C = A @ B
        _xp.synchronize(C)
        times.append(time.perf_counter() - t0)
    flops = 2.0 * m * k * n
    del keep
    return {"times_s": times, "flops": flops, "gflops_best": flops / min(times) / 1e9,
            "gflops_median": flops / float(np.median(times)) / 1e9, "threads": threads_info}


class _GemmClock:
    """Times every matrix product one of whose operands is a feature chunk (`timed`): in the
    low-rank row passes exactly the four dominant contractions (key moments U2^T Z2, query pass
    U1 Vq and U1^T Z1, key pass U2 Vk), in place, on the threads that run them."""

    def __init__(self):
        self.calls = []  # (seconds, flops); list.append is atomic under the GIL

    def timed(self, U):
        return U.view(_Timed) if isinstance(U, np.ndarray) else U

    def product(self, a, b):
        a, b = np.asarray(a), np.asarray(b)
        t0 = time.perf_counter()
        out = a @ b
        self.calls.append((time.perf_counter() - t0,
                           2.0 * float(np.prod(out.shape[:-2], dtype=np.float64)) * out.shape[-2] * out.shape[-1]
                           * a.shape[-1]))
        return out


class _Timed(np.ndarray):
    clock: _GemmClock | None = None

    def __matmul__(self, other):
        return self.clock.product(self, other)

    def __rmatmul__(self, other):
        return self.clock.product(other, self)


def measure_contractions(spec) -> dict:
    """The low-rank path's dominant contractions, timed inside its own row passes at `spec["degree"]`.

    The passes run as `plan_weight_gradients` runs them (the certificate's feature plan, the same
    chunk rows and threads); each product with a feature chunk is timed on the thread that runs it.
    Rate = their flops / (their thread-seconds / worker threads): the rate the contractions achieve
    while the passes run, comparable with the square GEMM's on all threads. `share` is the part of
    the passes' wall time they take. The best of the repeats after the first (the first warms up
    the BLAS threads and the allocator) is reported; every run is recorded."""
    keep, threads_info = _limit_threads(spec["threads"])
    if spec["backend"] != "numpy":
        raise ProofcheckError("backend: the contraction rate is measured on NumPy only")
    p = LoRAProblem.random(spec["L"], spec["d"], spec["r"], adapt=spec["adapt"], logit_bound=spec["logit_bound"],
                           seed=spec["seed"])
    g = spec["degree"]
    plan = adaptive.certify_adaptive(p, cert_mod.projections(p)).feature_plan(g, "auto")
    if not plan.runnable:
        raise ProofcheckError(f"degree {g}: {plan.reason}")
    qf, kf = lowrank_path.plan_feature_functions(p, plan)
    k = feature_rank(p.d, g)
    rows = lowrank_path.chunk_rows(p, k)
    workers = min(worker_threads(p.xp, spec["threads"]), -(-p.L // rows))
    modules = "".join(p.adapted)
    clock = _GemmClock()
    _Timed.clock = clock
    runs = []
    for _ in range(spec["repeats"]):
        clock.calls = []
        t0 = time.perf_counter()
        lowrank_path._row_passes(p, modules, rows, spec["threads"], query_features=lambda q: clock.timed(qf(q)),
                                 key_features=lambda s: clock.timed(kf(s)))
        wall = time.perf_counter() - t0
        secs = sum(c[0] for c in clock.calls)
        flops = sum(c[1] for c in clock.calls)
        runs.append({"wall_s": wall, "gemm_thread_seconds": secs, "gemm_flops": flops, "calls": len(clock.calls)})
    best = min(runs[1:] or runs, key=lambda r: r["gemm_thread_seconds"])  # the first warms the BLAS up
    del keep
    return {"degree": g, "rank": k, "L": p.L, "d": p.d, "chunk_rows": rows, "workers": workers,
            "runs": runs, "gemm_flops": best["gemm_flops"], "calls": best["calls"],
            "gflops": best["gemm_flops"] / (best["gemm_thread_seconds"] / workers) / 1e9,
            "share": best["gemm_thread_seconds"] / workers / best["wall_s"], "threads": threads_info}


def main() -> int:
    spec = json.loads(sys.stdin.read())
    try:
        kinds = {"gemm": measure_gemm, "contractions": measure_contractions, "method": measure_method}
        out = kinds[spec["kind"]](spec)
        out["status"] = "ok"
    except MemoryError:
        out = {"status": "skipped", "reason": "MemoryError: the method ran out of memory at this size"}
    except ImportError as exc:
        out = {"status": "skipped", "reason": f"not available: {exc}"}
    except ProofcheckError as exc:  # e.g. AboveThresholdError: the method declines this instance
        out = {"status": "skipped", "reason": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which records it, never silently
        out = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write("\n" + json.dumps(out) + "\n")  # the last line; anything a library printed precedes it
    return 0
