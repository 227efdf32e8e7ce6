"""Mutation testing of the certificate, the rounding floors, the polynomials and the features: on
demand, never in CI (each mutant is one pytest run, minutes in all).

Run from a checkout (the directory holding lora_proofcheck/ and tests/):

    python -m lora_proofcheck.testing.mutation                 # every mutant: the table and the score
    python -m lora_proofcheck.testing.mutation --list          # name, file and note of each mutant
    python -m lora_proofcheck.testing.mutation --only exact-floor-x0.01 --only v-coefficient-x0.85
    options: --repo PATH (default: the checkout this module sits in), --timeout S (per mutant),
             --no-baseline (skip the unmutated run), --json PATH (the results, machine-readable)

Each mutant is one source text replacement (its `old` text occurs exactly once in its file) made
in a copy of lora_proofcheck/, tests/ and pyproject.toml in a temporary directory: the real tree is
never written. The mutant's selected tests run there in a subprocess (`python -m pytest -x` from the
copy, so the copy's package shadows any installed one) with CI=true, i.e. the derandomized
Hypothesis profile of tests/conftest.py: a failing run kills the mutant, a passing one lets it
survive, a run past --timeout counts as killed (a hang is a detected change). First the unmutated
copy runs the union of the selected tests: if that baseline fails, no kill means anything and the
run stops with an error.

A surviving mutant needs a test that kills it or, in its `note`, the reason none can (an
equivalent mutant, or a change below what any float evaluation can show).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInputError, ProofcheckError

__all__ = ["MUTANTS", "Mutant", "apply_mutant", "copy_tree", "main", "run_mutant", "select"]

_CERT = "lora_proofcheck/certification/certificate.py"
_ROUND = "lora_proofcheck/certification/rounding.py"
_ADAPT = "lora_proofcheck/certification/adaptive.py"
_POLY = "lora_proofcheck/certification/polynomial.py"
_FEAT = "lora_proofcheck/kernels/features.py"
_POST = "lora_proofcheck/gradients/a_posteriori.py"

# the fast test subsets (seconds each under CI=true) that guard each module
T_FLOORS = ("tests/certification/test_floor_reference.py",)
T_CERT = T_FLOORS + ("tests/certification/test_certificate.py", "tests/testing/test_oracles.py",
                     "tests/testing/test_instances.py")
T_ADAPT = T_FLOORS + ("tests/certification/test_adaptive.py",)
T_POLY = ("tests/certification/test_polynomial.py",)
T_FEAT = ("tests/kernels/test_features.py",)
T_POST = ("tests/gradients/test_a_posteriori.py",)


@dataclass(frozen=True)
class Mutant:
    """One scripted change: `old` -> `new` in `path` (relative to the checkout); `tests` the pytest
    targets that must catch it; `note` why it may survive, where it does."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple
    note: str = ""


def _x(factor: str, expr: str) -> str:
    return f"{{k: {factor} * v for k, v in {expr}.items()}}"


_EXACT_FLOOR = 'self._floor([(0.0, b_row)] * len(self._rows["chunks"]), kappa_of(dprime), u, dprime)'
_LOWRANK_FLOOR = "self._floor(ab, kappa_of(dprime) - kappa_of(dlt), u, dprime)"

MUTANTS: tuple[Mutant, ...] = (
    # -- certificate.py: the floors and the kappa-coefficients
    Mutant("exact-floor-x0.01", _CERT, f"return {_EXACT_FLOOR}", f"return {_x('0.01', _EXACT_FLOOR)}", T_CERT),
    Mutant("exact-floor-x0.5", _CERT, f"return {_EXACT_FLOOR}", f"return {_x('0.5', _EXACT_FLOOR)}", T_CERT),
    Mutant("exact-floor-depth-dropped-L", _CERT, "b_row = gamma(2 * max(self.L, self.L_kv) + self.d + 8, u)",
           "b_row = gamma(self.d + 8, u)", T_CERT),
    Mutant("exact-floor-consistent-part-dropped", _CERT,
           'return self._floor([(0.0, b_row)] * len(self._rows["chunks"]), kappa_of(dprime), u, dprime)',
           'return self._floor([(0.0, b_row)] * len(self._rows["chunks"]), 0.0, u, dprime)', T_CERT),
    Mutant("lowrank-floor-x0.01", _CERT, f"return {_LOWRANK_FLOOR}", f"return {_x('0.01', _LOWRANK_FLOOR)}",
           T_CERT),
    Mutant("lowrank-floor-depth-dropped-k", _ROUND, "return max(L, L_kv) + k + d + 2 * degree + 8",
           "return max(L, L_kv) + d + 2 * degree + 8", T_CERT),
    Mutant("lowrank-floor-rank-off-by-one", _ROUND, "k = math.comb(d + degree, degree)",
           "k = math.comb(d + degree - 1, degree)", T_CERT),
    Mutant("v-coefficient-x0.85", _CERT, '"V": batch(v_term(wx, tr(acc["V"]), L * mux, tr(w3))),',
           '"V": 0.85 * batch(v_term(wx, tr(acc["V"]), L * mux, tr(w3))),', T_CERT),
    Mutant("v-tight-coefficient-x0.85", _CERT, '"V": batch(acc["tV"])}', '"V": 0.85 * batch(acc["tV"])}', T_CERT),
    Mutant("q-coefficient-x0.5", _CERT, '"Q": beta * batch(acc["Q"] @ tr(w2)),',
           '"Q": 0.5 * beta * batch(acc["Q"] @ tr(w2)),', T_CERT),
    Mutant("k-tight-coefficient-x0.5", _CERT, '"K": beta * batch(acc["tK"])', '"K": 0.5 * beta * batch(acc["tK"])',
           T_CERT),
    Mutant("psi-term-dropped-omega-squared", _CERT, "PSI_TERM = t_ib + omega_b * (omega_b + chat_ib)",
           "PSI_TERM = t_ib + omega_b * chat_ib", T_CERT),
    Mutant("t-closed-x0.5", _CERT, "T_CLOSED = 2 * omega_b * chat_ib", "T_CLOSED = omega_b * chat_ib", T_CERT),
    Mutant("joint-max-min-for-max", _CERT, "return (hi - lo) * xp.maximum(xp.abs(lo - y), xp.abs(hi - y))",
           "return (hi - lo) * xp.minimum(xp.abs(lo - y), xp.abs(hi - y))", T_CERT),
    Mutant("chat-dropped-half-range", _CERT, "chat = xp.abs(Yb - mid3) + w3", "chat = xp.abs(Yb - mid3)", T_CERT),
    Mutant("lam-square-root", _CERT, "lam = xp.exp(Ri - Mi)", "lam = xp.exp((Ri - Mi) / 2)", T_CERT),
    Mutant("tight-phi-dropped", _CERT, "slt = math.sqrt(PHI_CAP) * sl", "slt = sl", T_CERT),
    Mutant("logit-bound-x0.5", _CERT, "R = beta * (qn + 2 * qe) * (kn + 2 * ke) * MARGIN",
           "R = 0.5 * beta * (qn + 2 * qe) * (kn + 2 * ke) * MARGIN", T_CERT),
    Mutant("kappa-denominator-dropped", _CERT, "KAPPA = delta / (1 - delta)", "KAPPA = delta", T_CERT),
    # -- rounding.py: the staged floor
    Mutant("float32-unit-roundoff-halved", _ROUND, "return 2.0**-24", "return 2.0**-25", T_CERT),
    Mutant("gamma-sign-flip", _ROUND, "return math.inf if nu >= 1.0 else nu / (1.0 - nu)",
           "return math.inf if nu >= 1.0 else nu / (1.0 + nu)", T_CERT,
           note="gamma_n = nu/(1-nu) vs nu/(1+nu): a relative change 2 n u of the floor (~1e-14 in "
                "float64, ~4e-6 in float32), far below the measured/floor gap (<= 0.11): only the "
                "documented-formula test (float32) can see it"),
    Mutant("staged-input-error-dropped", _ROUND, "eO = a * m3a + b * Omag + e3", "eO = a * m3a + b * Omag",
           T_CERT),
    Mutant("staged-v-sum-dropped", _ROUND, "err_v = Ve + g(dkv - 1) * (Vm + Ve)", "err_v = Ve", T_CERT),
    Mutant("staged-q-sum-dropped", _ROUND, "err_q = beta * (Qe + g(dq) * (Qm + Qe))", "err_q = beta * Qe",
           T_CERT),
    Mutant("staged-normaliser-b-x0.5", _CERT, "b_row = gamma(2 * max(self.L, self.L_kv) + self.d + 8, u)",
           "b_row = 0.5 * gamma(2 * max(self.L, self.L_kv) + self.d + 8, u)", T_CERT),
    Mutant("delta-cap-too-wide", _ROUND, "DELTA_CAP = 2.0**-6", "DELTA_CAP = 2.0**-2", T_CERT,
           note="not unsound: PHI_CAP = (1+DELTA_CAP)/(1-DELTA_CAP) follows the cap, so F~ <= PHI_CAP F "
                "and the tight K stay valid up to the wider cap (no measured error can exceed it); "
                "killed by specification: the documented cap 2^-6 (test_floor_reference's "
                "DOC_DELTA_CAP) fixes lam~ = PHI_CAP lam in the tight K (~20% larger under the mutant) "
                "and where coefficients_for switches to the general K"),
    # -- adaptive.py: the certificate approx_gradients uses
    Mutant("adaptive-lowrank-floor-x0.01", _ADAPT, "        return self._chained(err, mag, u, under)\n",
           f"        return {_x('0.01', 'self._chained(err, mag, u, under)')}\n", T_ADAPT),
    Mutant("adaptive-exact-floor-x0.01", _ADAPT,  # the Softmax_1 exact bound, consistent part included
           "return {k: float(np.max(v + kap * np.sum(self.K_general[k], axis=0))) for k, v in floor.items()}",
           "return {k: 0.01 * float(np.max(v + kap * np.sum(self.K_general[k], axis=0))) for k, v in floor.items()}",
           T_ADAPT),
    Mutant("adaptive-exact-staged-part-x0.01", _ADAPT, "floor = self._chained(err, mag, u, under)",
           f"floor = {_x('0.01', 'self._chained(err, mag, u, under)')}", T_ADAPT,
           note="killed by the formula check test_softmax1_exact_bound_is_the_documented_formula: "
                "no measurement reaches this part (swamped by kap K; the float32 exact path equals "
                "float64 bit for bit on repeated-row data), so its value is checked against (S1)"),
    Mutant("adaptive-depth-dropped-k", _ADAPT, '"term": max(Dq, Dkv) + Dk + (self.d - 1)',
           '"term": max(Dq, Dkv) + (self.d - 1)', T_ADAPT,
           note="killed by the formula check test_adaptive_depths_are_the_documented_formula: no "
                "measurement reaches it (the k-wide contraction's errors cancel like a random walk, "
                "<= 0.026 of the mutated floor on the aligned, dyadic instances where this part "
                "dominates), so the depth is checked against (R4)"),
    Mutant("adaptive-class-kappa-x0.5", _ADAPT, "kap = (hi - lo) / (2 * lo) * MARGIN",
           "kap = (hi - lo) / (4 * lo) * MARGIN", T_ADAPT),
    Mutant("adaptive-approximation-x0.85", _ADAPT, "total = total + cp.kappa * Kc",
           "total = total + 0.85 * cp.kappa * Kc", T_ADAPT),
    # -- polynomial.py: the certified relative error
    Mutant("taylor-checks-one-end", _POLY, "for x in (-r, r))", "for x in (r,))", T_POLY),
    Mutant("chebyshev-wrong-end", _POLY, "bound = _rel_residual(_horner(coeffs, -r), -r)[1] + 2 * eps_c",
           "bound = _rel_residual(_horner(coeffs, r), r)[1] + 2 * eps_c", T_POLY),
    Mutant("chebyshev-coefficient-error-dropped", _POLY,
           "bound = _rel_residual(_horner(coeffs, -r), -r)[1] + 2 * eps_c",
           "bound = _rel_residual(_horner(coeffs, -r), -r)[1]", T_POLY,
           note="eps_c is kept 2^-50 below |h*(-R)| by construction (`_certify`): dropping it moves the "
                "certificate by a relative 2^-49, below the 2^-40 tightness any test can check"),
    Mutant("taylor-off-by-one", _POLY, "for t in range(degree + 1))", "for t in range(degree))", T_POLY),
    Mutant("round-up-rounds-down", _POLY, "if Fraction(f) < q:", "if Fraction(f) > q:", T_POLY),
    Mutant("min-degree-strict", _POLY, "if _certify(radius, g, method).rel_error <= rel_error:",
           "if _certify(radius, g, method).rel_error < rel_error:", T_POLY,
           note="< vs <=: differs only where a certified error equals the requested one exactly, "
                "a float tie no radius/degree grid hits (equivalent in practice)"),
    Mutant("chebyshev-lower-bound-too-high", _POLY, "+ radius * (g + 1) / (g + 2) - g * math.log(2)",
           "+ radius * (g + 1) / (g + 2) - (g - 1) * math.log(2)", T_POLY),
    # -- features.py: the monomial features
    Mutant("feature-rank-off-by-one", _FEAT, "return math.comb(d + degree, degree)",
           "return math.comb(d + degree - 1, degree)", T_FEAT),
    Mutant("feature-scale-sign-flip", _FEAT, "sign = -1.0 if a < 0 else 1.0", "sign = 1.0 if a < 0 else -1.0",
           T_FEAT),
    Mutant("feature-scale-multinomial-dropped", _FEAT,
           "s = math.sqrt(float(abs(a) * math.factorial(t) / math.prod(math.factorial(c) for c in m)))",
           "s = math.sqrt(float(abs(a)))", T_FEAT),
    Mutant("feature-constant-column", _FEAT, "out[..., 0, :] = 1", "out[..., 0, :] = 0", T_FEAT),
    # -- a_posteriori.py: the triangle inequality and its rounding
    Mutant("a-posteriori-reference-bound-dropped", _POST, "min(a_priori[k], _up(diff[k] + ref_bound[k]))",
           "min(a_priori[k], _up(diff[k]))", T_POST),
    Mutant("a-posteriori-difference-rounded-to-nearest", _POST, "return _up(m * (1.0 + 2.0 * _U64))",
           "return m", T_POST),
)


def select(names=None) -> list[Mutant]:
    """The mutants named (all when `names` is empty), in table order; unknown names are an error."""
    if not names:
        return list(MUTANTS)
    known = {m.name: m for m in MUTANTS}
    missing = [n for n in names if n not in known]
    if missing:
        raise InvalidInputError(f"unknown mutant(s) {missing}; --list shows the names")
    return [known[n] for n in names]


def copy_tree(repo: Path, dest: Path) -> Path:
    """lora_proofcheck/, tests/ and pyproject.toml of `repo` under `dest` (no caches)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    for name in ("lora_proofcheck", "tests"):
        shutil.copytree(repo / name, dest / name, ignore=ignore)
    shutil.copy2(repo / "pyproject.toml", dest / "pyproject.toml")
    return dest


def apply_mutant(mutant: Mutant, root: Path) -> None:
    """Replace the mutant's text in the copy at `root` (never call it on a real checkout)."""
    path = root / mutant.path
    text = path.read_text(encoding="utf-8")
    count = text.count(mutant.old)
    if count != 1:  # a stale mutant: the source moved on, its text must be updated
        raise ProofcheckError(f"mutant {mutant.name}: its text occurs {count} times in {mutant.path}, not once")
    path.write_text(text.replace(mutant.old, mutant.new), encoding="utf-8")


def _pytest(root: Path, tests, timeout: float) -> tuple[str, float, str]:
    """('passed' | 'failed' | 'timeout', seconds, output tail) of the tests run in the copy at `root`."""
    env = dict(os.environ, CI="true", PYTHONDONTWRITEBYTECODE="1")
    env.pop("HYPOTHESIS_PROFILE", None)  # the ci profile, whatever the caller's shell says
    # targets missing from this checkout (a test file not written yet) are left out, not errors
    tests = [t for t in tests if (root / t.split("::")[0]).exists()]
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start, ""
    out = (proc.stdout + proc.stderr).strip().splitlines()
    failures = [line for line in out if line.startswith(("FAILED", "ERROR"))]  # -ra's summary, anywhere
    return ("passed" if proc.returncode == 0 else "failed"), time.perf_counter() - start, "\n".join(
        failures[:1] + out[-15:])


def run_mutant(mutant: Mutant, repo: Path, timeout: float = 600.0) -> dict:
    """Apply one mutant to a fresh copy of `repo` and run its tests there: {"name", "status"
    ("killed" | "survived"), "how", "seconds", "first_failure"}."""
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as tmp:
        root = copy_tree(repo, Path(tmp))
        apply_mutant(mutant, root)
        outcome, seconds, tail = _pytest(root, mutant.tests, timeout)
    failed = [line for line in tail.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return {"name": mutant.name, "status": "survived" if outcome == "passed" else "killed", "how": outcome,
            "seconds": round(seconds, 1), "first_failure": failed[0] if failed else ""}


def _baseline(mutants, repo: Path, timeout: float) -> None:
    tests = sorted({t for m in mutants for t in m.tests})
    with tempfile.TemporaryDirectory(prefix="mutant-baseline-") as tmp:
        outcome, seconds, tail = _pytest(copy_tree(repo, Path(tmp)), tests, timeout)
    if outcome != "passed":
        raise ProofcheckError(f"the unmutated tests do not pass ({outcome}, {seconds:.0f} s):\n{tail}")
    print(f"baseline: {len(tests)} test files pass unmutated ({seconds:.0f} s)", flush=True)


def table(results: list[dict]) -> str:
    """The results as a Markdown table, survivors with their notes, and the score line."""
    notes = {m.name: m.note for m in MUTANTS}
    lines = ["| mutant | status | s | first failing test / why it survives |", "|---|---|---|---|"]
    for r in results:
        why = r["first_failure"] if r["status"] == "killed" else (notes.get(r["name"]) or "NO TEST KILLS IT")
        lines.append(f"| {r['name']} | {r['status']} ({r['how']}) | {r['seconds']} | {why} |")
    killed = sum(r["status"] == "killed" for r in results)
    lines.append(f"\nscore: {killed}/{len(results)} killed ({100.0 * killed / max(len(results), 1):.1f}%)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lora_proofcheck.testing.mutation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="run this mutant (repeatable)")
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[2],
                        help="the checkout holding lora_proofcheck/ and tests/")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per pytest run")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    mutants = select(args.only)
    if args.list:
        for m in mutants:
            print(f"{m.name:40s} {m.path}" + (f"\n    survives: {m.note}" if m.note else ""))
        return 0
    repo = args.repo.resolve()
    if not (repo / "lora_proofcheck").is_dir() or not (repo / "tests").is_dir():
        raise InvalidInputError(f"--repo {repo} holds no lora_proofcheck/ and tests/")
    if not args.no_baseline:
        _baseline(mutants, repo, args.timeout)
    results = []
    for m in mutants:
        results.append(run_mutant(m, repo, args.timeout))
        print(f"{m.name}: {results[-1]['status']} ({results[-1]['seconds']} s)", flush=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
