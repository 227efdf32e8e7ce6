"""Exact-path checks of `lora-proofcheck check`: the generated kernels are current, the exact proofs
hold, and the exact gradients agree with independent oracles (finite differences, PyTorch
autograd), on array-api-strict, and blocked with dense."""

from __future__ import annotations

import numpy as np

from .. import testing
from .._lib.records import Outcome, timed
from ..codegen.regen import regen
from ..derivations import registry
from ..gradients.exact_path import exact_gradients
from ..problem import LoRAProblem

__all__ = ["check_proofs", "exact_checks"]


def check_regen() -> Outcome:
    def run():
        stale, secs = regen(check=True)
        return not stale, f"{len(stale)} stale file(s), {secs:.2f} s"
    return timed("regen --check", run, detail="generated kernels match the derivations byte for byte")


def check_proofs(full: bool = False) -> list[Outcome]:
    """Every proof of the registry's "quick" tier ("full" with `full`), one row each: where it ran and
    whether that proves it for every size."""
    out = registry.run("full" if full else "quick")
    for p in out:
        scope = "every size" if p.data.get("all_sizes") else "this size only"
        p.name, p.detail = f"proof: {p.name}", f"{p.paper}; ran at {p.size or '-'}; proves {scope}"
    return out


def check_finite_differences() -> Outcome:
    def run():
        worst = 0.0
        for cross in (False, True):
            p = LoRAProblem.random(9, 4, 2, adapt="QKV", N=2, cross=cross, L_kv=7 if cross else None, seed=3)
            fd = testing.finite_difference_gradients(p)
            err = testing.max_abs_error(exact_gradients(p), fd) / testing.max_abs(fd)
            worst = max(worst, err)
        return worst < 1e-7, f"max rel. error {worst:.1e} (central differences, h=1e-6)"
    return timed("exact vs finite differences", run, detail="Q,K,V adapted; self and cross; N=2")


def check_torch() -> Outcome:
    def run():
        try:
            import torch  # noqa: F401, PLC0415 - the test-only oracle (`oracle` extra)
        except ImportError:
            return False, "torch not installed (pip install -e '.[oracle]')"
        worst = 0.0
        for cross in (False, True):
            p = LoRAProblem.random(128, 8, 4, adapt="QKV", N=2, cross=cross, L_kv=96 if cross else None, seed=4)
            _, tg = testing.torch_gradients(p)
            worst = max(worst, testing.max_abs_error(exact_gradients(p), tg) / testing.max_abs(tg))
        return worst < 1e-12, f"max rel. error {worst:.1e}"
    return timed("exact vs PyTorch autograd", run, detail="L=128, d=8, r=4, Q,K,V; self and cross")


def check_array_api_strict() -> Outcome:
    def run():
        import array_api_strict as xps  # noqa: PLC0415

        p_np = LoRAProblem.random(33, 5, 2, adapt="QKV", seed=5)
        p_st = LoRAProblem.random(33, 5, 2, adapt="QKV", seed=5, xp=xps)
        a, b = exact_gradients(p_np), exact_gradients(p_st)
        err = max(float(np.max(np.abs(a[k] - np.asarray(b[k])))) for k in a)
        return err < 1e-12, f"max abs difference {err:.1e}"
    return timed("array-api-strict", run, detail="same generated kernels on array_api_strict")


def check_blocked() -> Outcome:
    def run():
        p = LoRAProblem.random(200, 8, 2, adapt="QKV", N=2, seed=6)
        a, b = exact_gradients(p, block_rows=None), exact_gradients(p, block_rows=17)
        err = max(float(np.max(np.abs(a[k] - b[k]))) for k in a) / testing.max_abs(a)
        return err < 1e-12, f"max rel. difference {err:.1e}"
    return timed("blocked = dense exact", run, detail="row blocks of 17, L=200")


def exact_checks(full: bool = False) -> list[Outcome]:
    return [check_regen(), *check_proofs(full), check_finite_differences(), check_torch(),
            check_array_api_strict(), check_blocked()]
