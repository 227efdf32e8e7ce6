"""Counterexample instances as JSON package data, and the draws the searches use.

Floats are stored with Python's shortest round-trip repr, so a stored instance reloads bit for
bit; dyadic instances (entries k/4) are also exact rationals for SymPy re-checks.
"""

from __future__ import annotations

import json
import re
from importlib import resources

import numpy as np

from ...problem import MODULES, LoRAProblem

__all__ = ["DIRECTORY", "PACKAGE", "dumps", "dyadic_problem", "load", "problem_from_json", "problem_to_json",
           "stored_names"]

PACKAGE = "lora_proofcheck.report.errata"
DIRECTORY = "counterexamples"


def problem_to_json(problem: LoRAProblem) -> dict:
    """One sample of `problem` as plain lists (NumPy backend)."""
    f = lambda a: np.asarray(a, dtype=np.float64).tolist()  # noqa: E731
    first = (lambda a: a[0]) if problem.batched else (lambda a: a)
    return {
        "L": problem.L,
        "d": problem.d,
        "r": problem.r,
        "alpha": problem.alpha,
        "beta": problem.beta,
        "X": f(first(problem.X)),
        "X_kv": None if problem.X_kv is None else f(first(problem.X_kv)),
        "Y": f(first(problem.Y)),
        "W": {m: f(problem.W[m]) for m in MODULES},
        "A": {m: f(problem.A[m]) for m in problem.adapted},
        "B": {m: f(problem.B[m]) for m in problem.adapted},
        **({"normalizer_offset": problem.normalizer_offset} if problem.normalizer_offset else {}),
    }


def problem_from_json(data: dict) -> LoRAProblem:
    a = lambda v: np.asarray(v, dtype=np.float64)  # noqa: E731
    return LoRAProblem(
        a(data["X"]),
        a(data["Y"]),
        {m: a(w) for m, w in data["W"].items()},
        {m: a(v) for m, v in data["A"].items()},
        {m: a(v) for m, v in data["B"].items()},
        alpha=data["alpha"],
        beta=data["beta"],
        X_kv=None if data["X_kv"] is None else a(data["X_kv"]),
        normalizer_offset=data.get("normalizer_offset", 0.0),
    )


def dyadic_problem(
    rng, L, d, r, *, adapt="QV", alpha=2.0, beta=1.0, levels=(-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0)
):
    """An instance whose entries are small dyadic rationals (exact in float64, JSON and SymPy)."""
    pick = lambda *shape: rng.choice(levels, size=shape)  # noqa: E731
    return LoRAProblem(
        pick(L, d),
        pick(L, d),
        {m: pick(d, d) for m in MODULES},
        {m: pick(r, d) for m in adapt},
        {m: pick(d, r) for m in adapt},
        alpha=alpha,
        beta=beta,
    )


def stored_names() -> list[str]:
    folder = resources.files(PACKAGE).joinpath(DIRECTORY)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load(name: str) -> dict:
    """The stored counterexample `name` (e.g. "E1")."""
    path = resources.files(PACKAGE).joinpath(DIRECTORY, f"{name}.json")
    return json.loads(path.read_text(encoding="utf-8"))


def dumps(record: dict) -> str:
    """Indented JSON with innermost lists (matrix rows) on one line each."""
    text = json.dumps(record, indent=1, sort_keys=True, ensure_ascii=False)
    return re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"
