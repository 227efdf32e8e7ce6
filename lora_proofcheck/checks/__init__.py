"""The quick verification run behind `lora-proofcheck check`: a list of named checks.

Each check returns a `CheckResult`; the run prints them as a table. Reports reuse the same list.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from . import testing
from .exact import exact_gradients
from .problem import LoRAProblem


@dataclass(frozen=True)
class CheckResult:
    name: str
    detail: str
    passed: bool
    measured: str
    seconds: float


def _timed(name, detail, fn) -> CheckResult:
    t0 = time.perf_counter()
    passed, measured = fn()
    return CheckResult(name, detail, bool(passed), measured, time.perf_counter() - t0)


def check_regen() -> CheckResult:
    from .codegen.regen import regen  # noqa: PLC0415

    def run():
        stale, secs = regen(check=True)
        return not stale, f"{len(stale)} stale file(s), {secs:.2f} s"
    return _timed("regen --check", "generated kernels match the derivations byte for byte", run)


def check_proofs(full: bool = False) -> list:
    from .derivations import proofs  # noqa: PLC0415

    out = [proofs.prove_shift_invariance(), proofs.prove_G_is_dL_dF(), proofs.prove_p_is_dL_dS(),
           proofs.prove_rowwise_form()]
    for m in "QKV":
        out.append(proofs.prove_lora_gradients(m))
        if full:
            out.append(proofs.prove_lora_gradients(m, cross=True, L_kv=3))
    return [CheckResult(f"proof: {p.name}", f"{p.paper}; {p.size}", p.holds,
                        "exactly 0" if p.holds else "NONZERO", p.seconds) for p in out]


def check_finite_differences() -> CheckResult:
    def run():
        worst = 0.0
        for cross in (False, True):
            p = LoRAProblem.random(9, 4, 2, adapt="QKV", N=2, cross=cross, L_kv=7 if cross else None, seed=3)
            fd = testing.finite_difference_gradients(p)
            err = testing.max_abs_error(exact_gradients(p), fd) / testing.max_abs(fd)
            worst = max(worst, err)
        return worst < 1e-7, f"max rel. error {worst:.1e} (central differences, h=1e-6)"
    return _timed("exact vs finite differences", "Q,K,V adapted; self and cross; N=2", run)


def check_torch() -> CheckResult:
    def run():
        try:
            import torch  # noqa: F401, PLC0415
        except ImportError:
            return False, "torch not installed (pip install -e '.[oracle]')"
        worst = 0.0
        for cross in (False, True):
            p = LoRAProblem.random(128, 8, 4, adapt="QKV", N=2, cross=cross, L_kv=96 if cross else None, seed=4)
            _, tg = testing.torch_gradients(p)
            worst = max(worst, testing.max_abs_error(exact_gradients(p), tg) / testing.max_abs(tg))
        return worst < 1e-12, f"max rel. error {worst:.1e}"
    return _timed("exact vs PyTorch autograd", "L=128, d=8, r=4, Q,K,V; self and cross", run)


def check_array_api_strict() -> CheckResult:
    def run():
        import array_api_strict as xps  # noqa: PLC0415

        p_np = LoRAProblem.random(33, 5, 2, adapt="QKV", seed=5)
        p_st = LoRAProblem.random(33, 5, 2, adapt="QKV", seed=5, xp=xps)
        a, b = exact_gradients(p_np), exact_gradients(p_st)
        err = max(float(np.max(np.abs(a[k] - np.asarray(b[k])))) for k in a)
        return err < 1e-12, f"max abs difference {err:.1e}"
    return _timed("array-api-strict", "same generated kernels on array_api_strict", run)


def check_blocked() -> CheckResult:
    def run():
        p = LoRAProblem.random(200, 8, 2, adapt="QKV", N=2, seed=6)
        a, b = exact_gradients(p, block_rows=None), exact_gradients(p, block_rows=17)
        err = max(float(np.max(np.abs(a[k] - b[k]))) for k in a) / testing.max_abs(a)
        return err < 1e-12, f"max rel. difference {err:.1e}"
    return _timed("blocked = dense exact", "row blocks of 17, L=200", run)


def exact_checks(full: bool = False) -> list:
    return [check_regen(), *check_proofs(full), check_finite_differences(), check_torch(),
            check_array_api_strict(), check_blocked()]


def format_table(results) -> str:
    rows = [("check", "detail", "result", "measured", "s")]
    rows += [(r.name, r.detail, "PASS" if r.passed else "FAIL", r.measured, f"{r.seconds:.1f}") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    line = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
    return "\n".join([line(rows[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in rows[1:]])


def all_checks(full: bool = False) -> list:
    """Exact-path checks, then the approximate path's when that stage is installed."""
    results = exact_checks(full)
    import importlib  # noqa: PLC0415

    name = f"{__package__}.approx_checks"
    try:
        approx_checks = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
    else:
        results += approx_checks.checks(full)
    return results
