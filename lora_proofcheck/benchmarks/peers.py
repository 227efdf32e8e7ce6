"""`lora-proofcheck bench --peers`: every peer method in both modes against the exact gradient.

For each instance (family, L, R) and each method setting (taylor / chebyshev degree, FAVOR+ feature
count, support basis) in each mode (plug-in, model) one row: wall time (best of `repeats`), the rank
or feature count, and the errors against the exact float64 gradient of every LoRA factor stacked:

    max_abs       max |g~ - g| (absolute)
    max_abs_rel   max |g~ - g| / max |g|
    frob_rel      ||g~ - g||_F / ||g||_F
    A_Q_max_rel   max |dA_Q~ - dA_Q| / max |dA_Q| (the issue's metric)

with the exact path's own float64 time and the exact path in float32 (its error is the noise floor).
Every row carries R (the Cauchy-Schwarz logit bound) and max |S| (computed by row blocks, never an
L x L array). FAVOR+ rows give the median over `favor_seeds` draws of the directions, with the
range of frob_rel.  Runs in this process with the BLAS and row-chunk threads held to `threads`
(default 1: on a shared machine oversubscribed BLAS threads spin).

Families: "benchmark" (LoRAProblem.random(L, d, r, adapt="QKV", logit_bound=R, seed), the `bench`
family), the adversarial families of `testing.make_problem` ("aligned", "concentrated", "residual"),
"outliers" (the benchmark family with 1 % of the rows of X scaled by 4: a few large rows, the
support basis's premise) and "real-head": a problem built from a real pretrained head, passed in by
the caller as `run_peers(..., real_head=callable)` (the command line passes the audit's
`real_head_problem`: MiniLM, layer 0, head 7; the audit room sits above this one); without one its
rows are skipped, saying why. A setting whose rank makes it cost more than `max_cost_ratio` times
the exact path (the flop model of `peer_cost_ratio`) is skipped with that reason: the real head's
problem has d = 385 (X' = [X, 1], the head's columns zero-padded to d x d), where the polynomial
ranks C(d + g, g) explode.
"""

from __future__ import annotations

import datetime
import math
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from .._lib.blocks import blas_controller
from .._lib.envinfo import collect
from .._lib.version import __version__
from .._lib.xp import to_host64
from ..errors import InvalidInputError, InvalidTypeError, ProofcheckError
from ..gradients import peers as peer_mod
from ..gradients.exact_path import exact_gradients
from ..problem import LoRAProblem
from ..testing import make_problem, with_dtype

__all__ = ["ADVERSARIAL", "FAMILIES", "PEERS_SCHEMA_VERSION", "REAL_HEAD", "PeersConfig", "errors", "instance",
           "max_abs_logit", "peer_cost_ratio", "run_peers", "settings", "summarize_peers"]

PEERS_SCHEMA_VERSION = 1
ADVERSARIAL = ("aligned", "concentrated", "residual")
REAL_HEAD = "real-head"
FAMILIES = ("benchmark", *ADVERSARIAL, "outliers", REAL_HEAD)
OUTLIER_SHARE, OUTLIER_SCALE = 0.01, 4.0


@dataclass(frozen=True)
class PeersConfig:
    """What `run_peers` measures: every family at every L (and R, except the real head, whose R is
    its own), every method setting in both modes."""

    sizes: tuple = (512, 2048)
    logit_bounds: tuple = (1.3, 4.8)
    families: tuple = FAMILIES
    taylor_degrees: tuple = (1, 2, 3)
    chebyshev_degrees: tuple = (2, 3, 4)
    favor_features: tuple = (64, 256, 1024)
    support_degrees: tuple = (3,)
    favor_seeds: int = 3
    support_max_share: float = 0.25   # the support basis's exact part is quadratic: skip above this share
    max_cost_ratio: float = 1000.0    # skip a setting predicted to cost more than this x the exact path
    real_head_sizes: tuple = (128,)   # L of the real head (its R is its own)
    d: int = 8
    r: int = 4
    seed: int = 0
    repeats: int = 3
    repeat_max_L: int = 2048          # above it one timed call (the exact path is already seconds)
    threads: int = 1
    progress: bool = True

    def __post_init__(self):
        def ints(name, values, minimum):
            if not isinstance(values, tuple) or not values:
                raise InvalidTypeError(f"{name} must be a non-empty tuple")
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                    raise InvalidInputError(f"{name} must hold integers >= {minimum}, got {v!r}")

        ints("sizes", self.sizes, 2)
        ints("taylor_degrees", self.taylor_degrees, 0)
        ints("chebyshev_degrees", self.chebyshev_degrees, 0)
        ints("favor_features", self.favor_features, 1)
        ints("support_degrees", self.support_degrees, 0)
        ints("real_head_sizes", self.real_head_sizes, 2)
        ratio = self.max_cost_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not (ratio > 0 and math.isfinite(ratio)):
            raise InvalidInputError(f"max_cost_ratio must be a positive number, got {ratio!r}")
        if not isinstance(self.logit_bounds, tuple) or not self.logit_bounds:
            raise InvalidTypeError("logit_bounds must be a non-empty tuple")
        for R in self.logit_bounds:
            if isinstance(R, bool) or not isinstance(R, (int, float)) or not (R > 0 and math.isfinite(R)):
                raise InvalidInputError(f"logit_bounds must hold positive numbers, got {R!r}")
        if not isinstance(self.families, tuple) or not self.families:
            raise InvalidTypeError("families must be a non-empty tuple")
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise InvalidInputError(f"families {unknown} unknown; choose from {list(FAMILIES)}")
        for name in ("favor_seeds", "d", "r", "repeats", "repeat_max_L", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InvalidInputError(f"seed must be an integer >= 0, got {self.seed!r}")
        share = self.support_max_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
            raise InvalidInputError(f"support_max_share must lie in (0, 1], got {share!r}")


def settings(config: PeersConfig) -> list:
    """(method, keyword arguments, parameter) of every method setting, in table order."""
    return ([("taylor", {"degree": g}, g) for g in config.taylor_degrees]
            + [("chebyshev", {"degree": g}, g) for g in config.chebyshev_degrees]
            + [("favor+", {"features": m}, m) for m in config.favor_features]
            + [("support-basis", {"degree": g}, g) for g in config.support_degrees])


def peer_cost_ratio(problem: LoRAProblem, rank: int) -> float:
    """Predicted flops of one peer gradient over the exact path's: the plug-in chain's four GEMMs,
    2 (L + L_kv) k (d^2 + 2d + 1) (`lowrank_chain`; route (a) is cheaper), against the exact kernels'
    about 14 L L_kv d (the convention of `gradients/costs.py`'s comparison)."""
    d, L, L_kv = problem.d, problem.L, problem.L_kv
    return 2 * (L + L_kv) * rank * (d * d + 2 * d + 1) / (14 * L * L_kv * d)


def instance(family: str, L: int, R: float | None, config: PeersConfig, real_head=None) -> LoRAProblem:
    """The problem of one row group (float64)."""
    d, r, seed = config.d, config.r, config.seed
    if family == "benchmark":
        return LoRAProblem.random(L, d, r, adapt="QKV", logit_bound=R, seed=seed)
    if family in ADVERSARIAL:
        return make_problem(family, L, d, r, R=R, adapt="QKV", seed=seed)
    if family == "outliers":
        p = LoRAProblem.random(L, d, r, adapt="QKV", logit_bound=R, seed=seed)
        X = np.array(p.X, dtype=np.float64)
        rng = np.random.default_rng(seed + 1)
        X[rng.choice(L, max(1, int(OUTLIER_SHARE * L)), replace=False)] *= OUTLIER_SCALE
        return LoRAProblem(X, p.Y, p.W, p.A, p.B, alpha=p.alpha, beta=p.beta)
    problem = real_head(L=L, seed=seed)
    if not isinstance(problem, LoRAProblem):
        raise InvalidTypeError(f"real_head_problem must return a LoRAProblem, got {type(problem).__name__}")
    return problem


def max_abs_logit(problem: LoRAProblem, rows: int = 512) -> float:
    """max |S_ij| over the batch, by blocks of query rows (never an L x L array)."""
    W = problem.weights()
    C1, C2 = problem.beta * (problem.X3 @ W["Q"]), problem.Xkv3 @ W["K"]
    C2T = problem.xp.matrix_transpose(C2)
    return max(float(np.max(np.abs(to_host64(C1[:, i:min(i + rows, problem.L), :] @ C2T))))
               for i in range(0, problem.L, rows))


def errors(got: dict, ref: dict) -> dict:
    """The row's error figures of `got` against the exact float64 `ref` (host float64 dicts)."""
    scale = max(float(np.max(np.abs(v))) for v in ref.values())
    diff = max(float(np.max(np.abs(got[k] - ref[k]))) for k in ref)
    num = math.sqrt(sum(float(np.sum((got[k] - ref[k]) ** 2)) for k in ref))
    den = math.sqrt(sum(float(np.sum(ref[k] ** 2)) for k in ref))
    out = {"max_abs": diff, "max_abs_rel": diff / scale, "frob_rel": num / den}
    if "A_Q" in ref:
        out["A_Q_max_rel"] = float(np.max(np.abs(got["A_Q"] - ref["A_Q"])) / np.max(np.abs(ref["A_Q"])))
    if not all(math.isfinite(v) for v in out.values()):
        raise ProofcheckError("non-finite gradient error")
    return out


def _host(g: dict) -> dict:
    return {k: to_host64(v) for k, v in g.items()}


def _timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def _log(config, msg):
    if config.progress:
        print(f"[bench --peers] {msg}", file=sys.stderr, flush=True)


def _groups(config: PeersConfig):
    for family in config.families:
        for L in (config.real_head_sizes if family == REAL_HEAD else config.sizes):
            for R in ((None,) if family == REAL_HEAD else config.logit_bounds):
                yield family, L, R


def run_peers(config: PeersConfig, log=None, real_head=None) -> dict:
    """Every row (schema: `schema.PEERS_SCHEMA`); `log(row)` is called after each (the CLI prints it).
    `real_head(L=, seed=)` returns the real head's LoRAProblem (None: its rows are skipped)."""
    if not isinstance(config, PeersConfig):
        raise InvalidTypeError(f"config must be a PeersConfig, got {type(config).__name__}")
    start = time.perf_counter()
    rows = []

    def emit(row):
        rows.append(row)
        if log is not None:
            log(row)

    with blas_controller().limit(limits=config.threads, user_api="blas"):
        for family, L, R in _groups(config):
            base = {"family": family, "L": L, "target_R": R}
            if family == REAL_HEAD and real_head is None:
                emit({**base, "method": "all", "mode": None, "status": "skipped",
                      "reason": "no real head was given (run_peers(..., real_head=...); the command line "
                                "passes lora_proofcheck.audit.real_head_problem)"})
                continue
            try:
                problem = instance(family, L, R, config, real_head)
            except (ProofcheckError, TypeError, ValueError, OSError, ImportError) as exc:
                emit({**base, "method": "all", "mode": None, "status": "failed",
                      "reason": f"instance: {type(exc).__name__}: {exc}"})
                continue
            _log(config, f"{family} L={L} R={R}: {problem!r}")
            _instance_rows(problem, base, config, emit)
    return {
        "schema_version": PEERS_SCHEMA_VERSION,
        "kind": "peers",
        "tool_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "machine": collect(),
        "rows": rows,
        "wall_seconds": time.perf_counter() - start,
    }


def _instance_rows(problem, base, config, emit):
    threads = config.threads
    repeats = config.repeats if problem.L <= config.repeat_max_L else 1
    base = {**base, "d": problem.d, "r": problem.r, "N": problem.N, "L_kv": problem.L_kv,
            "R": peer_mod.cauchy_schwarz_radius(problem), "max_abs_S": max_abs_logit(problem)}
    times, ref = _timed(lambda: _host(exact_gradients(problem, threads=threads)), repeats)
    emit({**base, "method": "exact-float64", "param": None, "mode": "exact", "rank": None, "status": "ok",
          "seconds": min(times), "times_s": times, **errors(ref, ref)})
    exact_seconds = min(times)
    p32 = with_dtype(problem, "float32")
    times, g32 = _timed(lambda: _host(exact_gradients(p32, threads=threads)), repeats)
    emit({**base, "method": "exact-float32", "param": None, "mode": "exact", "rank": None, "status": "ok",
          "seconds": min(times), "times_s": times, "speedup": exact_seconds / min(times), **errors(g32, ref)})
    for method, kw, param in settings(config):
        row = {**base, "method": method, "param": param}
        try:
            kern = peer_mod.peer_kernel(problem, method, seed=config.seed, **kw)
        except (ProofcheckError, ValueError) as exc:
            for mode in peer_mod.MODES:
                emit({**row, "mode": mode, "status": "skipped", "reason": f"{type(exc).__name__}: {exc}"})
            continue
        row["rank"] = kern.rank
        ratio = peer_cost_ratio(problem, kern.rank)
        if ratio > config.max_cost_ratio:
            for mode in peer_mod.MODES:
                emit({**row, "mode": mode, "status": "skipped",
                      "reason": f"rank {kern.rank} at d = {problem.d}: predicted {ratio:.3g}x the exact path's "
                                f"flops (> {config.max_cost_ratio:g})"})
            continue
        if method == "support-basis":
            share = max(float(kern.rows.mean()), float(kern.cols.mean()))
            row.update(threshold=kern.threshold, large_share=share, radius=kern.poly.radius)
            if share > config.support_max_share:
                for mode in peer_mod.MODES:
                    emit({**row, "mode": mode, "status": "skipped",
                          "reason": f"{share:.0%} of the rows are large (> {config.support_max_share:.0%}): "
                                    "the exact part would be quadratic"})
                continue
        seeds = [config.seed + i for i in range(config.favor_seeds)] if method == "favor+" else [config.seed]
        for mode in peer_mod.MODES:
            emit(_method_row(problem, row, method, kw, mode, seeds, repeats, ref, exact_seconds, threads))


def _method_row(problem, row, method, kw, mode, seeds, repeats, ref, exact_seconds, threads) -> dict:
    row = {**row, "mode": mode}
    try:
        times, g = _timed(lambda: _host(peer_mod.peer_gradients(problem, method, mode=mode, seed=seeds[0],
                                                                threads=threads, **kw)), repeats)
        errs = [errors(g, ref)] + [errors(_host(peer_mod.peer_gradients(problem, method, mode=mode, seed=s,
                                                                         threads=threads, **kw)), ref)
                                   for s in seeds[1:]]
    except ProofcheckError as exc:
        return {**row, "status": "failed", "reason": str(exc)}
    out = {**row, "status": "ok", "seconds": min(times), "times_s": times, "speedup": exact_seconds / min(times),
           **{key: float(np.median([e[key] for e in errs])) for key in errs[0]}}
    if len(errs) > 1:
        out.update(seeds=len(errs), frob_rel_min=min(e["frob_rel"] for e in errs),
                   frob_rel_max=max(e["frob_rel"] for e in errs))
    return out


# ----------------------------------------------------------------------------------------------
# summary: the frontier and who wins where


def _key(row):
    return row["family"], row["L"], row["target_R"]


def summarize_peers(result: dict) -> dict:
    """Per instance (family, L, R): the exact path's time, the float32 floor, the Pareto frontier
    (rows no other row beats in both time and frob_rel), and the winner: the lowest frob_rel among
    the rows faster than the exact float64 path."""
    groups: dict = {}
    for row in result["rows"]:
        groups.setdefault(_key(row), []).append(row)
    out = []
    for (family, L, R), rows in groups.items():
        ok = [r for r in rows if r["status"] == "ok"]
        exact = next((r for r in ok if r["method"] == "exact-float64"), None)
        if exact is None:
            reason = next((r.get("reason") for r in rows if r["status"] != "ok"), "no exact row")
            out.append({"family": family, "L": L, "target_R": R, "status": "skipped", "reason": reason})
            continue
        floor = next(r for r in ok if r["method"] == "exact-float32")
        approx = [r for r in ok if r["mode"] in peer_mod.MODES]
        frontier = [r for r in approx if not any(o["seconds"] <= r["seconds"] and o["frob_rel"] < r["frob_rel"]
                                                 for o in approx if o is not r)]
        faster = [r for r in approx if r["seconds"] < exact["seconds"]]
        best = min(faster, key=lambda r: r["frob_rel"]) if faster else None
        label = lambda r: {k: r[k] for k in ("method", "param", "mode", "rank", "seconds", "frob_rel",  # noqa: E731
                                             "max_abs_rel", "speedup")}
        per_method = {}
        for r in approx:
            name = f"{r['method']} {r['mode']}"
            if name not in per_method or r["frob_rel"] < per_method[name]["frob_rel"]:
                per_method[name] = label(r)
        out.append({
            "family": family, "L": L, "target_R": R, "status": "ok", "R": exact["R"], "max_abs_S": exact["max_abs_S"],
            "exact_seconds": exact["seconds"], "float32_floor_frob_rel": floor["frob_rel"],
            "float32_floor_max_abs_rel": floor["max_abs_rel"],
            "frontier": sorted((label(r) for r in frontier), key=lambda r: r["seconds"]),
            "winner": None if best is None else label(best),
            "best_per_method": per_method,
            "skipped": [f"{r['method']} {r.get('param')} {r['mode']}: {r['reason']}" for r in rows if r["status"] != "ok"],
        })
    return {"instances": out}
