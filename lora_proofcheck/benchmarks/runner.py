"""`run_benchmark(config)`: every method at every L on identical instances, one process each.

Instances are `LoRAProblem.random(L, d, r, adapt="QKV", logit_bound=1.0, seed)`: every worker
rebuilds the same one from the seed. Sizes run smallest first, so each measurement predicts the
next one's time and memory; a method whose prediction passes the per-call time limit, the whole
run's budget or the memory budget is skipped at that size *with the reason recorded* (and so are
its larger sizes). Errors are max |g - g_exact| against the exact path's gradients at the same L.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from .._lib.envinfo import collect
from .._lib.version import __version__
from ..errors import InvalidInputError, InvalidTypeError
from ..gradients import costs
from . import analysis
from .worker import EXACT_METHODS, TORCH, approx_name, degree_name, rtol_name

__all__ = ["BACKENDS", "GEMM_MAX_L", "PRIOR_BYTES_PER_LOGIT", "QUADRATIC", "SCHEMA_VERSION", "BenchConfig",
           "run_benchmark"]

#: 2: approx-rtol methods (path taken, forced comparison), per-key errors, contractions, planner cells and
#: the targets table in the summary; version 1 files stay readable (`analysis.summarize` reads both)
SCHEMA_VERSION = 2
BACKENDS = ("numpy", "cupy")
# A priori working sets (bytes per logit, float64) before a size is measured: the dense kernel's
# comes from the cost model (`costs.exact_bytes`); PyTorch autograd measured ~4 (saved softmax, its
# gradient, temporaries), budgeted as 5.
PRIOR_BYTES_PER_LOGIT = {TORCH: 5 * 8}
QUADRATIC = (*EXACT_METHODS, TORCH)
GEMM_MAX_L = 65536


def _memory_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@dataclass(frozen=True)
class BenchConfig:
    """What to run. Sizes are L_min * 2^i <= L_max; budgets bound the wall time and memory."""

    L_min: int = 1024
    L_max: int = 131072
    L_list: tuple | None = None           # explicit sizes instead of the doubling sweep
    repeats: int = 3
    eps: tuple = (1e-3, 1e-6)
    rtol: tuple = (1e-3,)                 # certified relative tolerances (approx-rtol<RTOL>, on_threshold="exact")
    degrees: tuple = ()                   # forced-degree runs of the approximate path (kernel cost)
    threads: int | None = None
    backend: str = "numpy"
    d: int = 8
    r: int = 4
    seed: int = 0
    logit_bound: float = 1.0
    adapt: str = "QKV"
    methods: tuple | None = None          # None: all available
    max_seconds: float = 300.0            # one call predicted longer than this is skipped
    budget_seconds: float = 1200.0        # the whole run
    max_memory_bytes: int | None = None   # default: 80 % of MemAvailable at start
    fit_min_L: int = 4096                 # exponents are fitted over L >= this
    gemm_square: int = 2048               # n of the square reference GEMM
    contraction_degrees: tuple = ()       # degrees whose in-pass contraction rate is measured (d as above)
    contraction_L: int = 16384            # ... at this L
    torch_max_L: int | None = None        # PyTorch runs up to this L (beyond: extrapolated in the targets)
    progress: bool = True

    def __post_init__(self):
        def positive_int(name, value):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")

        for name in ("L_min", "L_max", "repeats", "d", "r", "fit_min_L", "gemm_square", "contraction_L"):
            positive_int(name, getattr(self, name))
        if self.L_min > self.L_max:
            raise InvalidInputError(f"L_min ({self.L_min}) must not exceed L_max ({self.L_max})")
        if self.L_min < 2:
            raise InvalidInputError(f"L_min must be at least 2, got {self.L_min}")
        if self.L_list is not None:
            if not isinstance(self.L_list, tuple) or not self.L_list:
                raise InvalidTypeError("L_list must be a non-empty tuple of sizes")
            for L in self.L_list:
                positive_int("L_list values", L)
                if L < 2:
                    raise InvalidInputError(f"L_list values must be at least 2, got {L}")
        if self.threads is not None:
            positive_int("threads", self.threads)
        if self.backend not in BACKENDS:
            raise InvalidInputError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not isinstance(self.eps, tuple) or not self.eps:
            raise InvalidTypeError("eps must be a non-empty tuple of floats")
        for e in self.eps:
            if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 < e < 1:
                raise InvalidInputError(f"eps values must lie in (0, 1), got {e!r}")
        if not isinstance(self.rtol, tuple):
            raise InvalidTypeError("rtol must be a tuple of floats")
        for e in self.rtol:
            if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 < e < 1:
                raise InvalidInputError(f"rtol values must lie in (0, 1), got {e!r}")
        if not isinstance(self.contraction_degrees, tuple):
            raise InvalidTypeError("contraction_degrees must be a tuple of ints")
        for g in self.contraction_degrees:
            if isinstance(g, bool) or not isinstance(g, int) or g < 1:
                raise InvalidInputError(f"contraction_degrees must be integers >= 1, got {g!r}")
        if self.contraction_degrees and self.backend != "numpy":
            raise InvalidInputError("contraction_degrees: the contraction rate is measured on backend 'numpy' only")
        if self.torch_max_L is not None:
            positive_int("torch_max_L", self.torch_max_L)
        if not isinstance(self.degrees, tuple):
            raise InvalidTypeError("degrees must be a tuple of ints")
        for g in self.degrees:
            if isinstance(g, bool) or not isinstance(g, int) or g < 0:
                raise InvalidInputError(f"degrees must be integers >= 0, got {g!r}")
        for name in ("max_seconds", "budget_seconds", "logit_bound"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v):
                raise InvalidInputError(f"{name} must be a positive number, got {v!r}")
        if self.max_memory_bytes is not None:
            positive_int("max_memory_bytes", self.max_memory_bytes)
        if self.methods is not None:
            unknown = [m for m in self.methods if m not in self.all_methods()]
            if unknown:
                raise InvalidInputError(f"methods {unknown} unknown; choose from {list(self.all_methods())}")

    def sizes(self) -> list[int]:
        if self.L_list is not None:
            return sorted(set(self.L_list))
        out, L = [], self.L_min
        while L <= self.L_max:
            out.append(L)
            L *= 2
        return out

    def all_methods(self) -> tuple:
        return (*EXACT_METHODS, *(approx_name(e) for e in self.eps), *(rtol_name(e) for e in self.rtol),
                *(degree_name(g) for g in self.degrees), TORCH)

    def chosen_methods(self) -> tuple:
        return self.all_methods() if self.methods is None else tuple(self.methods)


def _log(config, msg):
    if config.progress:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _spawn(spec: dict, config: BenchConfig, timeout: float) -> dict:
    """Run one worker; its stderr (per-run progress) goes straight to ours."""
    env = dict(os.environ)
    if config.threads:  # before the child's BLAS / OpenMP start, on top of threadpoolctl inside
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(config.threads)
    try:
        proc = subprocess.run([sys.executable, "-m", "lora_proofcheck.benchmarks"],
                              input=json.dumps(spec), capture_output=False, stdout=subprocess.PIPE,
                              text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"status": "skipped", "reason": f"time budget: the worker passed its {timeout:.0f} s limit"}
    if proc.returncode != 0:
        killed = " (killed, likely out of memory)" if proc.returncode in (-9, 137) else ""
        return {"status": "failed", "reason": f"worker exited with code {proc.returncode}{killed}"}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"status": "failed", "reason": f"worker wrote no result: {proc.stdout[-200:]!r}"}


def _method_available(method: str) -> str | None:
    """None when the method can run here, else why not."""
    if method == TORCH and importlib.util.find_spec("torch") is None:
        return "not available: torch is not importable"
    return None


def _device_memory_budget(config: BenchConfig) -> int | None:
    """80 % of the GPU's free memory for CuPy runs (None otherwise)."""
    if config.backend != "cupy":
        return None
    import cupy  # noqa: PLC0415 - only for --backend cupy

    free, _total = cupy.cuda.runtime.memGetInfo()
    return int(0.8 * free)


def _prior_bytes(method: str, L: int, config: BenchConfig) -> int:
    if method == "exact-dense":
        return costs.exact_bytes(L, L, config.d, config.adapt)
    return PRIOR_BYTES_PER_LOGIT.get(method, 0) * L * L


class _Planner:
    """Predicts a measurement's time and memory from the same method's smaller sizes."""

    def __init__(self, config: BenchConfig, memory_budget: int | None, device_budget: int | None = None):
        self.config = config
        self.memory_budget = memory_budget
        self.device_budget = device_budget  # CuPy runs: the GPU's, for every method but PyTorch (CPU)
        self.done: dict = {}      # method -> [(L, seconds, extra bytes)]
        self.blocked: dict = {}   # method -> reason it stopped

    def _predict(self, method, L):
        """(seconds, extra bytes) of one call at L from the last measured size, or (None, None).

        Time scales with the local log-log slope of the last two sizes (clipped to [1, 3]; 2 for
        the quadratic methods and 1 for the others until two sizes exist); memory quadratically for
        the dense methods and linearly for the blocked and low-rank ones."""
        pts = self.done.get(method)
        if not pts:
            return None, None
        L1, t1, m1 = pts[-1]
        e_time = 2.0 if method in QUADRATIC else 1.0
        if len(pts) >= 2 and pts[-2][1] > 0 and t1 > 0:
            L0, t0, _ = pts[-2]
            e_time = min(3.0, max(1.0, math.log(t1 / t0) / math.log(L1 / L0)))
        e_mem = 2.0 if method in ("exact-dense", TORCH) else 1.0
        return t1 * (L / L1) ** e_time, m1 * (L / L1) ** e_mem

    def verdict(self, method, L, elapsed) -> str | None:
        """None to run, else the reason to skip."""
        c = self.config
        if method in self.blocked:
            return self.blocked[method]
        seconds, extra = self._predict(method, L)
        need = max(extra or 0, _prior_bytes(method, L, c))
        on_device = c.backend == "cupy" and method != TORCH
        budget = self.device_budget if on_device else self.memory_budget
        if budget is not None and need > budget:
            where = "GPU memory" if on_device else "memory"
            self.blocked[method] = (f"{where} budget: needs ~{need / 2**30:.1f} GiB > {budget / 2**30:.1f} GiB "
                                    f"at L={L} (and larger L)")
            return self.blocked[method]
        if seconds is not None and seconds > c.max_seconds:
            self.blocked[method] = (f"time budget: one call predicted {seconds:.0f} s > {c.max_seconds:g} s "
                                    f"at L={L} (and larger L)")
            return self.blocked[method]
        left = c.budget_seconds - elapsed
        if seconds is not None and seconds > left:
            return f"run budget: one call predicted {seconds:.0f} s, {max(left, 0):.0f} s of the run left"
        if left <= 0:
            return f"run budget of {c.budget_seconds:g} s spent"
        return None

    def record(self, method, L, entry):
        extra = entry.get("device_peak_bytes", max(0, entry["peak_rss_bytes"] - entry["baseline_rss_bytes"]))
        self.done.setdefault(method, []).append((L, entry["median_s"], extra))


def _spec(config, kind, **kw) -> dict:
    base = {"kind": kind, "threads": config.threads, "backend": config.backend, "progress": config.progress}
    if kind == "method":
        base.update(d=config.d, r=config.r, adapt=config.adapt, logit_bound=config.logit_bound,
                    seed=config.seed, repeats=config.repeats, max_seconds=config.max_seconds, eps=None,
                    degree=None, rtol=None)
    base.update(kw)
    return base


def _approx_args(method: str, config: BenchConfig) -> dict:
    """eps (and a forced degree) of an approximate-path method; forced degrees take the first eps."""
    if method.startswith("approx-rtol"):
        return {"rtol": float(method[len("approx-rtol"):])}
    if method.startswith("approx-eps"):
        return {"eps": float(method[len("approx-eps"):]), "degree": None}
    if method.startswith("approx-g"):
        return {"eps": config.eps[0], "degree": int(method[len("approx-g"):])}
    return {}


def _finish(entry: dict, config: BenchConfig, L: int) -> dict:
    """Median, rate from the cost model; drop the worker's raw gradients into `_grads`."""
    entry["median_s"] = float(np.median(entry["times_s"]))
    entry["repeats_done"] = len(entry["times_s"])
    priced = "exact-blocked" if entry.get("path") == "exact" else entry["method"]  # an rtol call's fallback
    flops = analysis.model_flops(priced, L, config.d, config.adapt, entry.get("rank"), entry.get("degree"))
    entry["flops"] = flops
    entry["gflops"] = None if flops is None else flops / entry["median_s"] / 1e9
    return entry


def _errors(entries: list) -> None:
    """max |g - g_exact| against the exact path at the same L (blocked, else dense)."""
    by_L = {}
    for e in entries:
        by_L.setdefault(e["L"], {})[e["method"]] = e
    for row in by_L.values():
        ref = next((row[m] for m in ("exact-blocked", "exact-dense") if m in row and row[m]["status"] == "ok"),
                   None)
        for e in row.values():
            if e["status"] != "ok":
                continue
            if ref is None:
                e["max_abs_error"], e["error_reference"] = None, "none: the exact path did not run at this L"
                continue
            want = {k: np.asarray(v) for k, v in ref["_grads"].items()}
            got = {k: np.asarray(v) for k, v in e["_grads"].items()}
            errs = {k: float(np.max(np.abs(got[k] - want[k]))) for k in want}
            if not all(math.isfinite(v) for v in errs.values()):
                e["max_abs_error"], e["error_reference"] = None, "none: non-finite gradients"
                continue
            e["max_abs_error"] = max(errs.values())
            e["errors"] = errs
            if "bounds" in e:  # the certificate is per gradient: check it key by key
                e["bound_holds"] = all(errs[k] <= e["bounds"][k] for k in errs)
            e["grad_max_abs"] = max(float(np.max(np.abs(w))) for w in want.values())
            e["error_reference"] = ref["method"]
    for e in entries:
        e.pop("_grads", None)


def _gemm(config, shape, repeats, name) -> dict:
    spec = _spec(config, "gemm", shape=list(shape), repeats=repeats)
    out = _spawn(spec, config, timeout=max(60.0, config.max_seconds))
    out.update(name=name, shape=list(shape))
    if out["status"] == "ok":
        _log(config, f"GEMM {name} {shape}: {out['gflops_best']:.1f} GFLOP/s (best of {repeats})")
    return out


def run_benchmark(config: BenchConfig) -> dict:
    """Run the sweep; returns the JSON-ready result (schema: `schema.RESULT_SCHEMA`)."""
    if not isinstance(config, BenchConfig):
        raise InvalidTypeError(f"config must be a BenchConfig, got {type(config).__name__}")
    start = time.perf_counter()
    available = _memory_available()
    budget = config.max_memory_bytes or (int(0.8 * available) if available else None)
    device_budget = _device_memory_budget(config)
    planner = _Planner(config, budget, device_budget)
    n = config.gemm_square
    gemms = [_gemm(config, (n, n, n), max(3, config.repeats), "square")]
    entries = []
    for L in config.sizes():
        for method in config.chosen_methods():
            base = {"method": method, "L": L}
            reason = (_method_available(method) or _beyond_torch_max(config, method, L)
                      or planner.verdict(method, L, time.perf_counter() - start))
            if reason is not None:
                entries.append({**base, "status": "skipped", "reason": reason})
                _log(config, f"L={L} {method}: skipped ({reason})")
                continue
            spec = _spec(config, "method", method=method, L=L, **_approx_args(method, config))
            left = config.budget_seconds - (time.perf_counter() - start)
            timeout = max(30.0, min(left, config.max_seconds * 1.5) + 60.0)
            _log(config, f"L={L} {method}: running")
            out = _spawn(spec, config, timeout)
            entry = {**base, **out}
            if entry["status"] == "ok":
                entry["_grads"] = entry.pop("grads")
                _finish(entry, config, L)
                planner.record(method, L, entry)
                took = "" if "forced" not in entry else (
                    f", path {entry['path']} (degree {entry['degree']}; forced at degree "
                    f"{entry['forced'].get('degree')}: {_seconds(entry['forced'].get('median_s'))})")
                _log(config, f"L={L} {method}: median {entry['median_s']:.4g} s of {entry['repeats_done']}, "
                             f"peak RSS {entry['peak_rss_bytes'] / 2**20:.0f} MiB{took}")
            else:
                _log(config, f"L={L} {method}: {entry['status']} ({entry['reason']})")
                if entry["status"] == "failed" or not entry["reason"].startswith("AboveThresholdError"):
                    # out of time or memory, or broken: larger sizes would fare no better. (A method
                    # declining an instance, e.g. above the threshold, is asked again at the next L.)
                    planner.blocked.setdefault(method, f"{entry['reason']} (at L={L})")
            entries.append(entry)
    _errors(entries)
    gemms += _dominant_gemms(config, entries)
    contractions = [_contractions(config, g) for g in config.contraction_degrees]
    result = {
        "schema_version": SCHEMA_VERSION,
        "tool_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "memory_budget_bytes": budget,
        "device_memory_budget_bytes": device_budget,
        "machine": collect(),
        "memory_method": next((e["memory_method"] for e in entries if "memory_method" in e), None),
        "gemm": gemms,
        "contractions": contractions,
        "results": entries,
        "fits": analysis.fit_all(entries, config.fit_min_L),
        "wall_seconds": time.perf_counter() - start,
    }
    return result


def _seconds(value) -> str:
    return "not run" if value is None else f"{value:.4g} s"


def _beyond_torch_max(config, method, L) -> str | None:
    if method == TORCH and config.torch_max_L is not None and L > config.torch_max_L:
        return (f"torch_max_L: PyTorch is measured up to L={config.torch_max_L} only (the targets table "
                "extrapolates it x4 per doubling)")
    return None


def _contractions(config, degree) -> dict:
    """The low-rank path's contraction rate at `degree` (`worker.measure_contractions`)."""
    spec = _spec(config, "method", L=config.contraction_L, degree=degree, repeats=max(3, config.repeats))
    spec["kind"] = "contractions"
    out = _spawn(spec, config, timeout=max(60.0, config.max_seconds))
    out.update(degree=degree, L=config.contraction_L)
    if out["status"] == "ok":
        _log(config, f"contractions g={degree} L={config.contraction_L}: {out['gflops']:.1f} GFLOP/s "
                     f"({out['share']:.0%} of the passes' time)")
    else:
        _log(config, f"contractions g={degree}: {out['status']} ({out['reason']})")
    return out


def _dominant_gemms(config, entries) -> list:
    """The approximate path's dominant GEMM shapes at the largest L it ran (capped at GEMM_MAX_L:
    the rate no longer depends on L there), at the rank of the first eps (else first forced degree)."""
    names = [approx_name(config.eps[0]), *(degree_name(g) for g in config.degrees)]
    runs = []
    for name in names:
        runs = [e for e in entries if e["status"] == "ok" and e["method"] == name]
        if runs:
            break
    if not runs:
        return []
    last = max(runs, key=lambda e: e["L"])
    L = min(last["L"], GEMM_MAX_L)
    return [_gemm(config, shape, max(3, config.repeats), name)
            for name, shape in analysis.approx_gemm_shapes(L, last["rank"], config.d).items()]
