"""The certificate-violation campaign behind `lora-proofcheck stress`.

Claim under test: for every instance, the approximate gradients' max-abs error against the exact
gradients is <= the certified bound, per key, whenever that bound is finite (and, when eps is
requested, the bound is <= eps). A case is one instance (a family of `testing.instances`, L, L_kv, d, r,
N, adapted modules, self/cross, float32/float64, logit bound R, row noise) with one request:
"eps" (absolute tolerance atol = eps_rel * max|G| for eps_rel in [1e-12, 1e-1]; the smallest
certified degree, forced even when dearer than the exact path), "rtol" (the relative tolerance
rtol = eps_rel: `approx_gradients` certifies max|g| from below with its pilots; a per-key bound above
rtol * max|g_k| is a violation) or "degree" (every degree whose rank C(d+g, g) <= MAX_RANK: all
those cheaper than the exact path at these sizes and more). Softmax_1 (normalizer_offset n = 1) is
an axis of its own.

Reference, independent of the path it checks and more precise: the exact path in float64 on the
same values, its own certified rounding floor (`exact_bound`) as the allowance; where that cannot
decide a case (error + allowance > bound) the dense formulas again in long double (or mpmath),
with the allowance of `testing.oracles.allowance_for`. ratio = error / (bound + allowance), max over
keys; ratio > 1 is a violation, and then error - allowance > bound: a proven one. A non-finite
result under a finite bound, or a bound above a requested eps, is a violation too; an exception
from the certified call (other than AboveThresholdError, an honest refusal) is a finding.

Search: rounds of `round_size` cases. Round 0 explores; later rounds spend `EXPLOIT` of their
cases on mutations (R, noise, seed, sizes, tolerance/degree, modules, method: one to three at a
time, hypothesis-style) of the worst cases so far in each niche (family x dtype x request), the
rest on fresh draws. A round's cases depend only on the results of earlier rounds, sorted by key,
so the campaign is the same whatever runs it. It stops after the first round with a violation and
stores the first (by key) as a reproducible case: the full instance, the call, the result.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._lib.atomic import atomic_write_text
from .._lib.jsonable import jsonable
from .._lib.validate import check_int, check_positive, check_seed
from .._lib.version import __version__
from .._lib.xp import to_numpy
from ..certification import adaptive
from ..errors import AboveThresholdError, InvalidInputError, InvalidTypeError
from ..gradients.approx import approx_gradients
from ..gradients.exact_path import exact_gradients
from ..kernels.features import feature_rank
from ..problem import LoRAProblem
from ..testing import instances, oracles
from .engine import Cell, cell_seed, key_stream, progress_bar, runner_scope

__all__ = ["CASE_SCHEMA", "SUMMARY_KEYS", "SUMMARY_SCHEMA", "Certified", "build", "certified_call", "check_case",
           "check_instance", "check_out", "generate_round", "load_case", "load_summary", "mutate", "niche", "replay",
           "run_campaign", "write_json"]

SUMMARY_SCHEMA = "lora-proofcheck/stress-summary/1"
#: what a summary carries at least (`load_summary` checks them; per family: FAMILY_KEYS)
SUMMARY_KEYS = ("schema", "tool", "seed", "cases", "checked", "declined", "uncertified", "violations", "undecided",
                "worst_ratio", "stopped", "families", "axes", "worst", "violation", "run")
FAMILY_KEYS = ("cases", "checked", "declined", "uncertified", "violations", "worst_ratio")
CASE_SCHEMA = "lora-proofcheck/stress-case/1"
ADAPTS = ("Q", "K", "V", "QK", "QV", "KV", "QKV")
METHODS = ("auto", "taylor", "chebyshev")
DTYPES = ("float64", "float32")
MODES = ("eps", "rtol", "degree")
#: the share of cases run as Softmax_1 (normalizer_offset = 1)
SOFTMAX1_SHARE = 0.15
#: per-case cost cap: the feature rank C(d+g, g) of any degree the campaign runs
MAX_RANK = 3000
MAX_DEGREE = 30
EPS_REL = (1e-12, 1e-1)
#: float32 tolerances start where its rounding floor allows any (below, every request is declined)
EPS_REL_FLOAT32 = (1e-7, 1e-1)
R_RANGE = (0.02, 12.0)
NOISE_RANGE = (1e-4, 3.0)
L_MAX = 320
D_MAX = 8
#: share of a round's cases that mutate the worst cases so far (after round 0)
EXPLOIT = 0.5
ELITES = 4
CELL_CASES = 16
ROUND_CASES = 512
#: the high-precision reference's size limits (dense work N L L_kv d)
LONGDOUBLE_WORK = 5_000_000
MPMATH_WORK = 20_000
BINS = tuple(range(-16, 2))  # log10(ratio) histogram edges: (< -16), [-16, -15), ..., [0, 1), >= 1


# ----------------------------------------------------------------------------------------------
# the one call into the certified API


@dataclass(frozen=True)
class Certified:
    grads: dict
    bound: dict
    degree: int | None
    path: str
    method: str | None


def certified_call(problem, *, tol=None, rtol=None, degree=None, method="auto", max_rank=MAX_RANK):
    """The certified gradients for one request: an absolute tolerance `tol` or a relative `rtol`
    (the smallest certified degree, forced past the cost threshold) or a forced `degree`. Returns a
    `Certified`, or the string reason when the API declines (AboveThresholdError) or the needed
    rank exceeds max_rank.

    The campaign's only call into the certified API (degrees whose rank exceeds max_rank are never
    run: max_degree)."""
    g_cap = 0
    while g_cap < MAX_DEGREE and feature_rank(problem.d, g_cap + 1) <= max_rank:
        g_cap += 1
    try:
        if degree is None:
            if g_cap < 1:
                return f"cost: degree 1 has rank > {max_rank}"
            rel, ab = (0.0, tol) if rtol is None else (rtol, 0.0)
            res = approx_gradients(problem, rtol=rel, atol=ab, on_threshold="force", method=method,
                                   max_degree=g_cap)
        else:
            res = approx_gradients(problem, degree=degree, on_threshold="force", method=method)
    except AboveThresholdError as exc:
        return "declined: " + str(exc).split(";")[0][:200]
    return Certified(res.grads, dict(res.bound), res.degree, res.path, res.method)


# ----------------------------------------------------------------------------------------------
# one case


def degree_cap(d: int) -> int:
    """The largest degree the campaign runs at feature dimension d."""
    g = 0
    while g < MAX_DEGREE and feature_rank(d, g + 1) <= MAX_RANK:
        g += 1
    return g


def build(spec: dict) -> LoRAProblem:
    """The instance of a case spec."""
    return instances.make_problem(
        spec["family"], spec["L"], spec["d"], spec["r"], R=spec["R"], adapt=spec["adapt"], N=spec["N"],
        cross=spec["cross"], L_kv=spec["L_kv"], seed=spec["seed"], dtype=spec["dtype"], noise=spec["noise"],
        normalizer_offset=spec.get("n", 0.0))


def _host(a) -> np.ndarray:
    return np.asarray(to_numpy(a), dtype=np.float64)


def reference64(problem):
    """float64 exact gradients (host) and their certified rounding floor per key."""
    p64 = instances.upcast(problem) if problem.dtype_name != "float64" else problem
    ref = {k: _host(v) for k, v in exact_gradients(p64).items()}
    return p64, ref, adaptive.certify_adaptive(p64).exact_bound(p64)


def _precise_kind(problem) -> str | None:
    work = problem.N * problem.L * problem.L_kv * problem.d
    if oracles.LONGDOUBLE_EXTENDED and work <= LONGDOUBLE_WORK:
        return "longdouble"
    if work <= MPMATH_WORK:
        return "mpmath"
    return None


def check_instance(problem, *, mode: str, tol=None, eps_rel=None, degree=None, method="auto") -> dict:
    """Check one request on one instance (module docstring); JSON-ready result. mode "eps" takes
    an absolute `tol`, or `eps_rel` (tol = eps_rel * max |exact gradient entry|); mode "rtol" takes
    rtol = `eps_rel` (or `tol`, a stored case's rtol)."""
    p64, ref, allow = reference64(problem)
    scale = max(float(np.max(np.abs(v))) for v in ref.values())
    if mode == "eps" and tol is None:
        tol = eps_rel * scale
        if not tol > 0:
            return {"scale": scale, "tol": tol, "status": "declined", "reason": "zero gradients",
                    "violation": False, "kind": None, "ratio": None}
    rtol = (eps_rel if tol is None else tol) if mode == "rtol" else None
    if mode == "rtol":
        tol = rtol
    out = {"scale": scale, "tol": tol, "status": "checked", "violation": False, "kind": None,
           "ratio": None, "reference": "float64", "decided": None, "degree": degree, "path": None}
    try:
        res = certified_call(problem, tol=tol if mode == "eps" else None, rtol=rtol,
                             degree=degree if mode == "degree" else None, method=method)
    except Exception as exc:  # noqa: BLE001 - a crash on a valid instance is a finding, stored like a violation
        return dict(out, status="error", violation=True, kind=f"exception: {type(exc).__name__}: {exc}"[:300])
    if isinstance(res, str):
        return dict(out, status="declined", reason=res)
    out.update(degree=res.degree, path=res.path, method_used=res.method)
    bounds = res.bound
    if not all(math.isfinite(b) for b in bounds.values()):
        return dict(out, status="uncertified", bound=max(bounds.values()))
    got = {k: _host(res.grads[k]) for k in ref}
    if not all(bool(np.all(np.isfinite(g))) for g in got.values()):
        return dict(out, violation=True, kind="non-finite gradients under a finite bound",
                    bound=max(bounds.values()))
    err = {k: float(np.max(np.abs(got[k] - ref[k]))) for k in ref}
    ratio64 = {k: err[k] / (bounds[k] + allow[k]) for k in ref}
    out["ratio64"] = max(ratio64.values())
    kind_used, errs, allows = "float64", err, allow
    if any(err[k] + allow[k] > bounds[k] for k in ref):  # the float64 reference cannot decide
        kind_used = _precise_kind(problem)
        if kind_used is None:
            kind_used = "float64"
        else:
            precise = oracles.dense_reference(p64, kind_used)
            errs = oracles.max_abs_diff(res.grads, precise, kind_used)
            allows = oracles.allowance_for(kind_used, allow)
    ratios = {k: errs[k] / (bounds[k] + allows[k]) if bounds[k] + allows[k] > 0 else
              (0.0 if errs[k] == 0 else math.inf) for k in ref}
    worst = max(sorted(ratios), key=lambda k: ratios[k])
    out.update(ratio=ratios[worst], worst_key=worst, error=errs[worst], bound=bounds[worst],
               allowance=allows[worst], reference=kind_used,
               decided=all(errs[k] + allows[k] <= bounds[k] for k in ref))
    if ratios[worst] > 1.0:
        out.update(violation=True, kind=f"error above the certified bound ({worst})")
    elif mode == "eps" and max(bounds.values()) > tol:
        out.update(violation=True, kind="certified bound above the requested eps")
    elif mode == "rtol" and any(bounds[k] > rtol * (float(np.max(np.abs(ref[k]))) + allow[k]) for k in ref):
        out.update(violation=True, kind="certified bound above rtol * max|g| (the lower bound of max|g| failed)")
    return out


def check_case(spec: dict) -> dict:
    """Build the case's instance and check it; a violation carries the full instance."""
    problem = build(spec)
    result = check_instance(problem, mode=spec["mode"], eps_rel=spec["eps_rel"], degree=spec["degree"],
                            method=spec["method"])
    result["key"] = spec["key"]
    if result["violation"]:
        result["instance"] = instance_json(problem)
    return result


def stress_cell(specs: list, seed: int) -> list:
    """One engine cell: a batch of cases (each carries its own seed, derived from its key)."""
    del seed
    return [check_case(s) for s in specs]


# ----------------------------------------------------------------------------------------------
# case generation


def _loguniform(rng, lo, hi) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _draw_L(rng) -> int:
    u = rng.uniform()
    if u < 0.70:
        return round(_loguniform(rng, 2, 48))
    if u < 0.95:
        return int(rng.integers(49, 161))
    return int(rng.integers(161, L_MAX + 1))


def fresh_spec(rng, family: str, key: tuple, base_seed: int) -> dict:
    d = int(rng.choice([1, 2, 3, 4, 5, 6, 8], p=[0.12, 0.2, 0.2, 0.18, 0.1, 0.1, 0.1]))
    L = _draw_L(rng)
    cross = bool(rng.uniform() < 0.3)
    mode = str(rng.choice(MODES))
    spec = {
        "family": family, "L": L, "d": d, "r": int(rng.integers(1, 4)),
        "N": 1 if rng.uniform() < 0.7 else int(rng.integers(2, 4)),
        "cross": cross, "L_kv": round(_loguniform(rng, 2, 1.5 * L + 2)) if cross else None,
        "adapt": str(rng.choice(ADAPTS)), "R": _loguniform(rng, *R_RANGE),
        "dtype": "float32" if rng.uniform() < 0.25 else "float64",
        "noise": None if family == "gaussian" else instances.NOISE[family] * math.exp(rng.normal(0, 0.5)),
        "method": str(rng.choice(METHODS, p=[0.6, 0.2, 0.2])),
        "mode": mode, "eps_rel": None, "degree": None,
        "n": 1.0 if rng.uniform() < SOFTMAX1_SHARE else 0.0,
        "seed": cell_seed(base_seed, key), "origin": "fresh",
    }
    if mode in ("eps", "rtol"):
        lo, hi = EPS_REL_FLOAT32 if spec["dtype"] == "float32" else EPS_REL
        spec["eps_rel"] = 10.0 ** rng.uniform(math.log10(lo), math.log10(hi))
    else:
        spec["degree"] = int(rng.integers(0, degree_cap(d) + 1))
    return _clip(spec)


def _clip(spec: dict) -> dict:
    s = dict(spec)
    s["L"] = int(min(max(s["L"], 2), L_MAX))
    s["d"] = int(min(max(s["d"], 1), D_MAX))
    s["R"] = float(min(max(s["R"], R_RANGE[0]), R_RANGE[1]))
    if s["cross"]:
        s["L_kv"] = int(min(max(s["L_kv"] or s["L"], 2), int(1.5 * L_MAX)))
    else:
        s["L_kv"] = None
    if s["noise"] is not None:
        s["noise"] = float(min(max(s["noise"], NOISE_RANGE[0]), NOISE_RANGE[1]))
    if s["mode"] in ("eps", "rtol"):
        lo, hi = EPS_REL_FLOAT32 if s["dtype"] == "float32" else EPS_REL
        s["eps_rel"] = float(min(max(s["eps_rel"], lo), hi))
    else:
        s["degree"] = int(min(max(s["degree"], 0), degree_cap(s["d"])))
    return s


MUTATIONS = ("R", "noise", "seed", "L", "L_kv", "d", "request", "method", "adapt", "N", "r")


def mutate(rng, parent: dict, key: tuple, base_seed: int) -> dict:
    """A child of `parent`: one to three of MUTATIONS (hypothesis-style shrinking/expanding moves)."""
    s = {k: v for k, v in parent.items() if not k.startswith("_")}
    for op in rng.choice(MUTATIONS, size=int(rng.integers(1, 4)), replace=False):
        if op == "R":
            s["R"] *= math.exp(rng.normal(0, 0.3))
        elif op == "noise" and s["noise"] is not None:
            s["noise"] *= math.exp(rng.normal(0, 0.5))
        elif op == "seed":
            s["seed"] = cell_seed(base_seed, key)
        elif op == "L":
            s["L"] = round(s["L"] * math.exp(rng.normal(0, 0.3))) + int(rng.integers(-1, 2))
        elif op == "L_kv" and s["cross"]:
            s["L_kv"] = round(s["L_kv"] * math.exp(rng.normal(0, 0.3))) + int(rng.integers(-1, 2))
        elif op == "d":
            s["d"] += int(rng.choice([-1, 1]))
        elif op == "request":
            if s["mode"] in ("eps", "rtol"):
                s["eps_rel"] *= 10.0 ** rng.normal(0, 0.7)
            else:
                s["degree"] += int(rng.choice([-2, -1, 1, 2]))
        elif op == "method":
            s["method"] = str(rng.choice(METHODS))
        elif op == "adapt":
            s["adapt"] = str(rng.choice(ADAPTS))
        elif op == "N":
            s["N"] = int(rng.integers(1, 4))
        elif op == "r":
            s["r"] = int(rng.integers(1, 4))
    s["origin"] = f"mutant of {parent['key']}"
    return _clip(s)


def niche(spec_or_result: dict) -> tuple:
    return (spec_or_result["family"], spec_or_result["dtype"], spec_or_result["mode"])


def generate_round(r: int, n: int, elites: dict, base_seed: int) -> list:
    """The n case specs of round r (a pure function of r, n, the elites so far and the seed)."""
    rng = np.random.default_rng(cell_seed(base_seed, ("stress-round", r)))
    parents = [e for k in sorted(elites) for e in elites[k]]
    n_exploit = int(EXPLOIT * n) if (r > 0 and parents) else 0
    specs = []
    for i in range(n):
        key = ("stress", r, i)
        if i < n_exploit:
            parent = parents[int(rng.integers(len(parents)))]
            spec = mutate(rng, parent, key, base_seed)
        else:
            spec = fresh_spec(rng, instances.FAMILIES[i % len(instances.FAMILIES)], key, base_seed)
        spec["key"] = key_stream(key)
        specs.append(spec)
    return specs


# ----------------------------------------------------------------------------------------------
# the campaign


def _bin(ratio: float) -> str:
    if ratio <= 0:
        return "0"
    e = math.floor(math.log10(ratio))
    if e < BINS[0]:
        return f"<1e{BINS[0]}"
    if e >= BINS[-1]:
        return f">=1e{BINS[-1]}"
    return f"1e{e}"


class _Stats:
    def __init__(self):
        self.cases = self.checked = self.declined = self.uncertified = self.violations = 0
        self.undecided = 0
        self.worst = None
        self.hist: dict = {}
        self.reasons: dict = {}

    def add(self, spec, res):
        self.cases += 1
        status = res["status"]
        if status == "declined":
            self.declined += 1
            why = _reason_class(res.get("reason", ""))
            self.reasons[why] = self.reasons.get(why, 0) + 1
        elif status == "uncertified":
            self.uncertified += 1
        elif status in ("checked", "error"):
            self.checked += status == "checked"
        self.violations += bool(res["violation"])
        if res.get("ratio") is not None:
            b = _bin(res["ratio"])
            self.hist[b] = self.hist.get(b, 0) + 1
            self.undecided += res["decided"] is False
            if self.worst is None or res["ratio"] > self.worst["ratio"]:
                self.worst = _record(spec, res)

    def as_dict(self):
        return {"cases": self.cases, "checked": self.checked, "declined": self.declined,
                "uncertified": self.uncertified, "violations": self.violations,
                "declined_reasons": dict(sorted(self.reasons.items())),
                "undecided": self.undecided,
                "worst_ratio": None if self.worst is None else self.worst["ratio"],
                "worst": self.worst,
                "log10_ratio_histogram": dict(sorted(self.hist.items(), key=lambda kv: _bin_order(kv[0])))}


def _reason_class(reason: str) -> str:
    for cls, marker in (("cost cap", "cost:"), ("below the rounding floor", "rounding floor"),
                        ("rounding uncontrolled", "uncontrolled"), ("no degree", "no degree"),
                        ("radius", "radius"), ("zero gradients", "zero gradients")):
        if marker in reason:
            return cls
    return "other"


def _bin_order(label: str) -> float:
    if label == "0":
        return -math.inf
    if label.startswith("<"):
        return BINS[0] - 1
    if label.startswith(">="):
        return BINS[-1]
    return float(label[2:])


_RESULT_FIELDS = ("ratio", "ratio64", "error", "bound", "allowance", "worst_key", "reference", "decided",
                  "degree", "path", "method_used", "tol", "scale", "status", "kind")


def _record(spec, res) -> dict:
    """A compact JSON record of one case: its spec (enough to rebuild it) and its outcome."""
    rec = {k: spec[k] for k in spec}
    rec.update({k: res.get(k) for k in _RESULT_FIELDS})
    return rec


def run_campaign(cases: int, *, seed: int = 0, workers=None, scheduler=None, runner=None, processes=True,
                 round_size: int = ROUND_CASES, cell_size: int = CELL_CASES, time_limit: float | None = None,
                 case_out=None, progress=None) -> dict:
    """Run up to `cases` cases (module docstring); the JSON-ready summary. A violation is also
    written to `case_out` (a path) when given. `time_limit` (seconds) stops after the round that
    passes it (the summary says so)."""
    cases = check_int("cases", cases, 1)
    round_size = check_int("round_size", round_size, 1)
    cell_size = check_int("cell_size", cell_size, 1)
    seed = check_seed("seed", seed)
    time_limit = None if time_limit is None else check_positive("time_limit", time_limit)
    case_out = None if case_out is None else check_out("case_out", case_out)
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    families_stats = {f: _Stats() for f in instances.FAMILIES}
    axes = {}
    total = _Stats()
    elites: dict = {}
    top: list = []
    refs: dict = {}
    degrees: dict = {}
    tols = [math.inf, -math.inf]
    stopped = "cases done"
    violation = None
    done = rounds = 0
    with runner_scope(workers, scheduler, processes=processes, runner=runner) as r, \
            progress_bar(cases, "stress", progress, unit="case") as bar:
        runner_desc = r.description
        while done < cases:
            n = min(round_size, cases - done)
            specs = generate_round(rounds, n, elites, seed)
            by_key = {s["key"]: s for s in specs}
            cells = [Cell(("stress", rounds, c // cell_size), {"specs": specs[c:c + cell_size]})
                     for c in range(0, n, cell_size)]
            results = []
            for _key, batch in r.stream(stress_cell, cells, seed):
                results.extend(batch)
                bar.update(len(batch))
            results.sort(key=lambda x: _key_order(x["key"]))
            for res in results:
                res = _revive(res)
                spec = by_key[res["key"]]
                total.add(spec, res)
                families_stats[spec["family"]].add(spec, res)
                for axis in _axes(spec):
                    axes.setdefault(axis, _Stats()).add(spec, res)
                if res.get("ratio") is not None:
                    refs[res["reference"]] = refs.get(res["reference"], 0) + 1
                    _offer(elites, niche(spec), spec, res["ratio"])
                    top = _top(top, _record(spec, res))
                if res["status"] in ("checked", "uncertified") and res.get("degree") is not None:
                    degrees[res["degree"]] = degrees.get(res["degree"], 0) + 1
                if res.get("tol") is not None and res["status"] == "checked":
                    rel = spec["eps_rel"]
                    tols = [min(tols[0], rel), max(tols[1], rel)]
            done += n
            rounds += 1
            bad = [_revive(x) for x in results if x["violation"]]
            if total.worst is not None:
                bar.set_postfix(worst=f"{total.worst['ratio']:.3g}", refresh=False)
            if bad:
                violation = bad[0]
                stopped = "violation"
                break
            if time_limit is not None and time.perf_counter() - t0 > time_limit:
                stopped = "time limit"
                break
    seconds = time.perf_counter() - t0
    summary = {
        "schema": SUMMARY_SCHEMA,
        "tool": {"name": "lora-proofcheck", "version": __version__},
        "claim": "max |approx - exact| <= certified bound per gradient key whenever the bound is finite "
                 "(and bound <= eps when eps is requested)",
        "definition": "ratio = max over keys of |approx - reference| / (bound + reference allowance); "
                      "reference: exact path in float64 with its certified floor, long double/mpmath dense "
                      "formulas where float64 cannot decide; violation: ratio > 1",
        "seed": seed,
        "cases_requested": cases,
        "cases": total.cases,
        "checked": total.checked,
        "declined": total.declined,
        "uncertified": total.uncertified,
        "violations": total.violations,
        "undecided": total.undecided,
        "worst_ratio": total.worst["ratio"] if total.worst else None,
        "rounds": rounds,
        "stopped": stopped,
        "families": {f: s.as_dict() for f, s in families_stats.items()},
        "axes": {k: axes[k].as_dict() for k in sorted(axes)},
        "worst": top,
        "references": dict(sorted(refs.items())),
        "degrees": {str(g): degrees[g] for g in sorted(degrees)},
        "eps_rel_range": None if tols[0] == math.inf else tols,
        "mix": {"L": [2, L_MAX], "d": [1, D_MAX], "R": list(R_RANGE), "eps_rel": list(EPS_REL),
                "eps_rel_float32": list(EPS_REL_FLOAT32),
                "max_rank": MAX_RANK, "families": list(instances.FAMILIES), "float32_share": 0.25,
                "cross_share": 0.3, "batch_share": 0.3, "exploit_share": EXPLOIT, "round_cases": round_size},
        "violation": None,
        "run": {"created": created, "seconds": round(seconds, 3),
                "cases_per_second": round(total.cases / seconds, 2) if seconds else None, "runner": runner_desc},
    }
    if violation is not None:
        spec = by_key[violation["key"]]
        case = case_json(spec, violation)
        summary["violation"] = {k: v for k, v in case.items() if k != "instance"}
        if case_out is not None:
            write_json(case_out, case)
            summary["violation"]["file"] = str(case_out)
    return jsonable(summary)


_NUMERIC = ("ratio", "ratio64", "error", "bound", "allowance", "tol", "scale")


def _revive(res: dict) -> dict:
    """Cells return JSON-ready values ("inf"/"nan" for non-finite floats): numbers again."""
    if any(isinstance(res.get(k), str) for k in _NUMERIC):
        res = dict(res)
        for k in _NUMERIC:
            if isinstance(res.get(k), str):
                res[k] = float(res[k])
    return res


def _key_order(key: str) -> tuple:
    _, r, i = key.split("/")
    return int(r), int(i)


def _axes(spec) -> list:
    out = [f"dtype={spec['dtype']}", f"request={spec['mode']}", f"method={spec['method']}",
           "attention=cross" if spec["cross"] else "attention=self", "batch=N>1" if spec["N"] > 1 else "batch=N=1",
           "softmax=softmax_1" if spec.get("n") else "softmax=softmax"]
    return out


def _offer(elites: dict, k: tuple, spec: dict, ratio: float) -> None:
    group = elites.setdefault(k, [])
    group.append(dict(spec, _ratio=ratio))
    group.sort(key=lambda s: (-s["_ratio"], _key_order(s["key"])))
    del group[ELITES:]


def _top(top: list, rec: dict, n: int = 10) -> list:
    top = top + [rec]
    top.sort(key=lambda s: (-s["ratio"], _key_order(s["key"])))
    return top[:n]


# ----------------------------------------------------------------------------------------------
# reproducible cases


def instance_json(problem: LoRAProblem) -> dict:
    """The full instance: every array as nested lists (exact: float32 and float64 values round-trip
    through JSON's shortest repr), in the problem's own shapes."""
    f = lambda a: np.asarray(to_numpy(a)).astype(np.float64).tolist()  # noqa: E731
    return {"dtype": problem.dtype_name, "alpha": problem.alpha, "beta": problem.beta,
            "X": f(problem.X), "Y": f(problem.Y), "X_kv": None if problem.X_kv is None else f(problem.X_kv),
            "W": {m: f(w) for m, w in problem.W.items()}, "A": {m: f(a) for m, a in problem.A.items()},
            "B": {m: f(b) for m, b in problem.B.items()}, "normalizer_offset": problem.normalizer_offset}


def problem_from_json(inst: dict) -> LoRAProblem:
    dt = inst["dtype"]
    f = lambda a: np.asarray(a, dtype=dt)  # noqa: E731
    return LoRAProblem(f(inst["X"]), f(inst["Y"]), {m: f(w) for m, w in inst["W"].items()},
                       {m: f(a) for m, a in inst["A"].items()}, {m: f(b) for m, b in inst["B"].items()},
                       alpha=inst["alpha"], beta=inst["beta"],
                       X_kv=None if inst["X_kv"] is None else f(inst["X_kv"]),
                       normalizer_offset=inst.get("normalizer_offset", 0.0))


def case_json(spec: dict, result: dict) -> dict:
    call = {"mode": spec["mode"], "tol": result.get("tol"), "degree": spec["degree"], "method": spec["method"]}
    return {"schema": CASE_SCHEMA, "tool_version": __version__, "key": spec["key"],
            "spec": {k: v for k, v in spec.items() if not k.startswith("_")}, "call": call,
            "result": {k: v for k, v in result.items() if k != "instance"}, "instance": result["instance"],
            "reproduce": "lora-proofcheck stress --replay FILE"}


def load_case(path, *, name: str = "case") -> tuple[LoRAProblem, dict, dict]:
    """(problem, call, stored case) of a case written by the campaign; `name` is what errors call
    the argument (the CLI passes its flag)."""
    path = Path(path)
    try:
        case = json.loads(path.read_text(encoding="utf-8"))
        if case.get("schema") != CASE_SCHEMA:
            raise ValueError(f"schema {case.get('schema')!r} is not {CASE_SCHEMA!r}")
        problem = problem_from_json(case["instance"])
        call = case["call"]
        if call["mode"] not in MODES:
            raise ValueError(f"call mode {call['mode']!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"{name} {str(path)!r} is not a readable stress case ({exc})") from None
    return problem, call, case


def load_summary(path, *, name: str = "summary") -> dict:
    """A summary written by `lora-proofcheck stress --out`, checked for the fields the report
    reads; `name` is what errors call the argument (the CLI passes its flag)."""
    try:
        summary = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(summary, dict) or summary.get("schema") != SUMMARY_SCHEMA:
            got = summary.get("schema") if isinstance(summary, dict) else type(summary).__name__
            raise ValueError(f"schema {got!r} is not {SUMMARY_SCHEMA!r}")
        missing = [k for k in SUMMARY_KEYS if k not in summary]
        missing += [f"families.{f}.{k}" for f, fam in summary["families"].items() for k in FAMILY_KEYS
                    if k not in fam]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInputError(f"{name} {str(path)!r} is not a readable stress summary ({exc})") from None
    return summary


def replay(path, *, name: str = "case") -> dict:
    """Re-check a stored case on its stored instance and call; the fresh result."""
    problem, call, _ = load_case(path, name=name)
    return check_instance(problem, mode=call["mode"], tol=call["tol"], degree=call["degree"],
                          method=call["method"])


def check_out(name: str, path) -> Path:
    """A file path whose directory exists (`name` is what errors call the argument)."""
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidTypeError(f"{name} must be a path, got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        raise InvalidInputError(f"{name} {str(path)!r} is a directory; give a file name")
    parent = path.resolve().parent
    if not parent.is_dir():
        raise InvalidInputError(f"{name} {str(path)!r}: directory {str(parent)!r} does not exist")
    return path


def write_json(path, data) -> None:
    """Write atomically (a temporary sibling renamed into place)."""
    atomic_write_text(path, json.dumps(jsonable(data), indent=1, allow_nan=False) + "\n")
