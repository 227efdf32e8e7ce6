"""The one check-result record: a proof, a `lora-proofcheck check` row and a ledger check are all an
`Outcome`.

Roles (the ledger's): a "claim" check tests the statement (corrected where an erratum applies); a
"literal" check tests the paper's printed form, so its failure is an erratum, not a refutation; a
"timing" check reports wall-clock evidence next to the claim but never decides its verdict
(timings vary between runs, verdicts must not); an "evidence" check reports a measurement that bears
on a claim the toolkit cannot test itself (what it measures is stated with it) and never decides the
verdict either.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field

__all__ = ["ROLES", "Outcome", "Skip", "run_check", "timed"]

ROLES = ("claim", "literal", "timing", "evidence")


@dataclass
class Outcome:
    """holds: True / False, or None when the check could not run (`status` says why).

    name      what is checked, short
    measured  the figure or result, one line
    detail    the statement checked or the setting it ran in
    paper     where the paper states it (proofs and ledger checks)
    size      the sizes a symbolic proof ran at
    """

    name: str
    holds: bool | None
    measured: str = ""
    detail: str = ""
    paper: str = ""
    size: str = ""
    role: str = "claim"
    data: dict = field(default_factory=dict)
    seconds: float = 0.0
    status: str = "ran"  # "ran" | "skipped" | "error"
    required: bool = True

    def as_dict(self) -> dict:
        """The ledger's JSON form."""
        return {
            "name": self.name,
            "role": self.role,
            "holds": self.holds,
            "status": self.status,
            "required": self.required,
            "measured": self.measured,
            "data": self.data,
            "seconds": round(self.seconds, 3),
        }


class Skip(Exception):
    """Raised by a check that cannot run here (a mode that omits what it needs)."""


def timed(name: str, fn, **fields) -> Outcome:
    """Run fn() -> (holds, measured) or (holds, measured, data) and time it; exceptions propagate."""
    t0 = time.perf_counter()
    holds, measured, *data = fn()
    return Outcome(name, bool(holds), measured, data=data[0] if data else {},
                   seconds=time.perf_counter() - t0, **fields)


def run_check(name: str, role: str, fn, ctx, *, required: bool = True) -> Outcome:
    """Run fn(ctx) -> (holds, measured, data); exceptions become status "error", Skip "skipped"."""
    t0 = time.perf_counter()
    try:
        holds, measured, data = fn(ctx)
    except Skip as exc:
        return Outcome(name, None, f"skipped: {exc}", role=role, seconds=time.perf_counter() - t0,
                       status="skipped", required=required)
    except Exception as exc:  # noqa: BLE001 - a crashing check is reported, never hidden
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return Outcome(name, None, f"error: {tb}", role=role, seconds=time.perf_counter() - t0,
                       status="error", required=required)
    return Outcome(name, bool(holds), measured, role=role, data=data, seconds=time.perf_counter() - t0,
                   required=required)
