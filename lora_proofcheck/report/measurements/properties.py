"""The approximate path's promise on a deterministic grid: measured error <= certified bound.

Grid: adapted modules x self/cross x L x logit bound R x accuracy. Each accuracy is relative to
the instance's largest exact gradient entry (eps = eps_rel max|G|); the smallest degree certifying
it is forced even where it costs more than the exact path (the promise is about accuracy). A few
fixed degrees per instance add points over many magnitudes for the error-vs-bound plot. The
reference is the exact float64 path; its own rounding floor (`Certificate.exact_bound`) is the
allowance added to the bound.
"""

from __future__ import annotations

import numpy as np

from ..._lib.xp import to_host64
from ...certification import certificate as cert_mod
from ...errors import AboveThresholdError
from ...gradients.approx import approx_gradients
from ...gradients.exact_path import exact_gradients
from ...problem import LoRAProblem
from ...sweeps.engine import Cell, run_sweep
from ..config import namespace_of

__all__ = ["FIXED_DEGREES", "property_cell", "property_cells", "property_grid"]

FIXED_DEGREES = (2, 4, 6)


def _case(name: str):
    adapt, _, kind = name.partition("-")
    return adapt, kind == "cross"


def property_cells(sizes: dict, backend: str = "numpy") -> list[Cell]:
    """One engine cell per (case, L, R), in the report's order; its key names the seed stream
    "property/{case}/{L}/{R}"."""
    return [Cell(("property", case, L, R), {"case": case, "L": L, "R": R, "eps_rels": list(sizes["property_eps"]),
                                            "degrees": list(FIXED_DEGREES), "backend": backend})
            for case in sizes["property_cases"] for L in sizes["property_L"] for R in sizes["property_R"]]


def property_cell(*, case: str, L: int, R: float, eps_rels: list, degrees: list, backend: str, seed: int) -> list:
    """The grid's rows of one instance: one per accuracy, then one per fixed degree."""
    adapt, cross = _case(case)
    p = LoRAProblem.random(L, 4, 2, adapt=adapt, logit_bound=R, cross=cross, L_kv=(3 * L) // 4 if cross else None,
                           seed=seed, xp=namespace_of(backend))
    ref = {k: to_host64(v) for k, v in exact_gradients(p).items()}
    allowance = cert_mod.certify(p).exact_bound()
    scale = max(float(np.max(np.abs(v))) for v in ref.values())
    base = {"case": case, "adapt": adapt, "cross": cross, "L": L, "d": 4, "R": R, "seed": seed}
    rows = [_one(p, ref, allowance, base, eps_rel=e, scale=scale) for e in eps_rels]
    rows += [_one(p, ref, allowance, base, degree=g, scale=scale) for g in degrees]
    return rows


def property_grid(ctx, progress=None, runner=None) -> dict:
    """The grid's rows in the config's order (cases x L x R) and their totals; cells on `runner`
    (serial when None)."""
    cells = property_cells(ctx.config.sizes, ctx.config.backend)
    step = None if progress is None else (lambda key, _: progress.step("properties " + "/".join(map(str, key[1:]))))
    out = run_sweep(property_cell, cells, base_seed=ctx.config.seed, runner=runner, progress=False, on_result=step)
    rows = [row for c in cells for row in out[c.key]]
    ran = [r for r in rows if r["status"] == "ok"]
    return {
        "rows": rows,
        "count": len(rows),
        "ran": len(ran),
        "violations": sum(1 for r in ran if not r["holds"]),
        "worst_ratio": max((r["ratio"] for r in ran), default=None),
        "eps_met": all(r["bound"] <= r["eps"] for r in ran if r["eps"] is not None),
    }


def _one(p, ref, allowance, base, *, eps_rel=None, degree=None, scale=1.0) -> dict:
    row = dict(base, eps_rel=eps_rel, eps=None if eps_rel is None else eps_rel * scale, forced_degree=degree)
    try:
        if degree is None:
            res = approx_gradients(p, rtol=0.0, atol=row["eps"], on_threshold="force")
        else:
            res = approx_gradients(p, degree=degree, on_threshold="force")
    except AboveThresholdError as exc:
        return dict(row, status="no certified degree", reason=str(exc).split(";")[0])
    errs = {k: float(np.max(np.abs(to_host64(res.grads[k]) - ref[k]))) for k in ref}
    ratios = {k: errs[k] / (res.bound[k] + allowance[k]) for k in ref}
    worst = max(ratios, key=ratios.get)
    return dict(
        row,
        status="ok",
        path=res.path,
        degree=res.degree,
        rank=res.rank,
        delta=res.delta,
        error=max(errs.values()),
        bound=max(res.bound.values()),
        ratio=ratios[worst],
        holds=ratios[worst] <= 1.0,
        scale=scale,
        cost_ratio=res.cost.get("ratio"),
    )
