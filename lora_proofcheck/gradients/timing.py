"""A time model of both gradient paths, calibrated on the machine it runs on.

Flop counts alone misjudge the choice: the exact path's L x L_kv exponentials and elementwise passes
run far below GEMM rate, while the low-rank path is four GEMMs over the features. So each path's
time is modelled as a sum of work counts read off the cost model (`costs`), each at its own rate:

    exact    N L L_kv b  elementwise ops per logit (exp, shift, divide, products: b from the formula)
             exact GEMM flops (the L L_kv d terms and the projections)
             one call (fixed overhead)
    low-rank GEMM flops at rank k (the k-proportional terms of the formula) at a per-flop time
             tau (1 + k0 / k): narrow GEMMs (small k) run below the wide ones' rate
             feature entries N (L + L_kv) k
             row work N (L + L_kv) d^2 (the elementwise chain, the certificate's passes)
             one call (thread pool, chunk set-up; the certificate is paid before the choice)

`calibration.calibrate()` times both paths on a small grid (a few seconds), fits the rates by
non-negative least squares on relative errors, and `save_rates` caches them per machine (CPU, BLAS,
threads, NumPy): `lora-proofcheck plan --calibrate`. Without a cache the defaults below
(measured on the 2-core development machine, a typical x86 server core with OpenBLAS) apply.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import sympy as sp

from .._lib.atomic import atomic_write_text
from .._lib.envinfo import blas, cpu
from .._lib.validate import check_int, check_modules
from .._lib.version import __version__
from ..derivations import decomposition, lowrank_chain
from ..errors import InvalidInputError
from . import costs

__all__ = ["DEFAULT_RATES", "TERMS", "TIE", "MachineRates", "cache_path", "faster_than_exact", "load_rates", "machine_key",
           "predict_seconds", "save_rates", "work_counts"]

#: the work counts of each path, in the order of `MachineRates.seconds`
TERMS = {
    "exact": ("logit_elementwise", "exact_gemm", "exact_call"),
    "approx": ("lowrank_gemm", "lowrank_gemm_narrow", "features", "rows", "approx_call"),
}


@dataclass(frozen=True)
class MachineRates:
    """Seconds per unit of each work count (`TERMS`), and where they come from."""

    seconds: dict
    source: str = "defaults (2-core development machine)"
    machine: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


# Measured on the development machine (AMD EPYC, 2 cores, OpenBLAS 0.3.31) by `calibrate()`
# (`lora-proofcheck plan --calibrate`, 2026-12-02, the machine otherwise quiet; the grid from L = 128,
# the low-rank path's per-degree plan and bound included, so the per-call constants are measured):
# the non-negative fit may set a term to 0. With the earlier defaults the exact path was predicted
# 2-4x slower than it ran; see the README's benchmark section for predictions against measured times.
DEFAULT_RATES = MachineRates(seconds={
    "logit_elementwise": 4.2e-10, "exact_gemm": 1.72e-11, "exact_call": 0.000103,
    "lowrank_gemm": 1.34e-11, "lowrank_gemm_narrow": 2.23e-09, "features": 2.62e-09, "rows": 0,
    "approx_call": 0.003,
})


def _counts_formulas(modules: str):
    L, L_kv, d, k = decomposition.L, decomposition.L_kv, decomposition.d, lowrank_chain.k
    outs = ("loss",) + tuple(decomposition.WEIGHT_GRADIENTS[m] for m in modules)
    fe = sp.expand(costs.flops_formula(decomposition.build(), outs))
    per_logit = sp.expand(fe.coeff(L * L_kv))        # a d + b
    b = per_logit.subs(d, 0)
    exact = {"logit_elementwise": L * L_kv * b, "exact_gemm": sp.expand(fe - L * L_kv * b)}
    fl = sp.expand(costs.flops_formula(lowrank_chain.build(modules), outs))
    gemm = sp.expand(fl.coeff(k))                    # flops per unit of rank
    approx = {"lowrank_gemm": k * gemm, "lowrank_gemm_narrow": gemm,
              "rows": sp.expand(fl - k * gemm) + (L + L_kv) * d**2}
    return exact, approx


_FORMULAS: dict = {}


def work_counts(path: str, L, L_kv, d, modules, N=1, degree=None) -> dict:
    """The work counts (`TERMS[path]`) of one call of `path` ("exact" or "approx" at `degree`)."""
    L, L_kv, d, N = (check_int(n, v, 1) for n, v in (("L", L), ("L_kv", L_kv), ("d", d), ("N", N)))
    modules = check_modules(modules)
    if modules not in _FORMULAS:  # lambdified once: a sympy subs per call cost ~1 ms (15 ms a search)
        args = (decomposition.L, decomposition.L_kv, decomposition.d, lowrank_chain.k)
        _FORMULAS[modules] = tuple({name: sp.lambdify(args, f, "math") for name, f in part.items()}
                                   for part in _counts_formulas(modules))
    exact, approx = _FORMULAS[modules]
    if path == "exact":
        out = {name: N * float(f(L, L_kv, d, 0)) for name, f in exact.items()}
        out["exact_call"] = 1.0
        return out
    if path != "approx":
        raise InvalidInputError(f"path must be 'exact' or 'approx', got {path!r}")
    degree = check_int("degree", degree, 0)
    k = math.comb(d + degree, degree)
    out = {name: N * float(f(L, L_kv, d, k)) for name, f in approx.items()}
    out["features"] = N * float((L + L_kv) * k)
    out["approx_call"] = 1.0
    return out


#: a predicted time counts as faster than the exact path's only below (1 - TIE) of it: the model's
#: predictions are off by ~10 % on the benchmark's cells (issue 10: 0.975 predicted against 1.08
#: measured at L = 2^13), and inside that band the exact path wins the tie, being exact; the certified
#: search also spends its pilots before its final degree
TIE = 0.1


def faster_than_exact(approx_seconds: float, exact_seconds: float) -> bool:
    """Whether a predicted approximate time beats the predicted exact time by more than the tie band."""
    return approx_seconds < (1.0 - TIE) * exact_seconds


def predict_seconds(rates: MachineRates, path: str, L, L_kv, d, modules, N=1, degree=None) -> float:
    """Predicted seconds of one call of `path` under `rates`."""
    counts = work_counts(path, L, L_kv, d, modules, N=N, degree=degree)
    return float(sum(rates.seconds[name] * value for name, value in counts.items()))


# ----------------------------------------------------------------------------------------------
# the machine's own rates


def machine_key() -> dict:
    """What the rates depend on: CPU, cores, BLAS (library, version, threads), NumPy, this package."""
    # sorted: with two BLAS libraries loaded (NumPy's and SciPy's OpenBLAS) their order follows the
    # import order, which differs between processes; unsorted, a calibrated cache was silently missed
    return {"cpu": cpu().get("model", ""), "cores": cpu().get("cores"),
            "blas": sorted((str(b.get("internal_api")), str(b.get("version")), b.get("num_threads") or 0)
                           for b in blas()),
            "numpy": np.__version__, "lora_proofcheck": __version__}


def cache_path() -> Path:
    """Where calibrated rates are cached: $LORA_PROOFCHECK_CACHE, else $XDG_CACHE_HOME (or ~/.cache)
    /lora_proofcheck; one file per machine key."""
    root = os.environ.get("LORA_PROOFCHECK_CACHE")
    if root is None:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lora_proofcheck"
    digest = hashlib.sha256(json.dumps(machine_key(), sort_keys=True).encode()).hexdigest()[:16]
    return Path(root) / f"rates-{digest}.json"


def load_rates() -> MachineRates:
    """This machine's calibrated rates when cached, else `DEFAULT_RATES`."""
    path = cache_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        seconds = {name: float(data["seconds"][name]) for terms in TERMS.values() for name in terms}
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_RATES
    return MachineRates(seconds=seconds, source=f"calibrated ({path})", machine=data.get("machine", {}))


def save_rates(rates: MachineRates) -> Path:
    """Cache `rates` for this machine (atomically); returns the file written."""
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(rates.as_dict(), indent=1) + "\n")
    return path
