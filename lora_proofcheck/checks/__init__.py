"""`lora-proofcheck check`: the quick verification run, a list of named checks printed as a table.

Each check returns an `Outcome` (the package's one check-result record): the exact path's
(`exact_checks`: generated kernels current, the registry's proofs, the oracles) and the
approximate path's (`approx_checks`: certified bounds against a float64 reference, the Alman-Song
lemma, the phase transition).
"""

from __future__ import annotations

from .._lib.tables import render_table
from .approx_checks import approx_checks
from .exact_checks import exact_checks

__all__ = ["all_checks", "format_table"]


def all_checks(full: bool = False) -> list:
    """Every check, exact path first; `full` runs the proofs' full tier and larger settings."""
    return [*exact_checks(full), *approx_checks(full)]


def format_table(results) -> str:
    """The results as a plain-text table, one row per check."""
    return render_table(("check", "detail", "result", "measured", "s"),
                        [(r.name, r.detail, "PASS" if r.holds else "FAIL", r.measured, f"{r.seconds:.1f}")
                         for r in results])
