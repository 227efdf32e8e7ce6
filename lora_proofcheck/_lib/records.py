"""The result of one check, shared by the ledger, the errata and the writers."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field

# roles: a "claim" check tests the statement (corrected where an erratum applies); a "literal"
# check tests the paper's printed form, so its failure is an erratum, not a refutation; a "timing"
# check reports wall-clock evidence next to the claim but never decides its verdict (timings vary
# between runs, verdicts must not).
ROLES = ("claim", "literal", "timing")


@dataclass
class Outcome:
    """holds: True / False, or None when the check could not run (status says why)."""

    name: str
    role: str
    holds: bool | None
    measured: str
    data: dict = field(default_factory=dict)
    seconds: float = 0.0
    status: str = "ran"  # "ran" | "skipped" | "error"
    required: bool = True

    def as_dict(self) -> dict:
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
    """Raised by a check that cannot run here (a missing optional stage, a mode that omits it)."""


def run_check(name: str, role: str, fn, ctx, *, required: bool = True) -> Outcome:
    """Run fn(ctx) -> (holds, measured, data); exceptions become status "error", Skip "skipped"."""
    t0 = time.perf_counter()
    try:
        holds, measured, data = fn(ctx)
    except Skip as exc:
        return Outcome(name, role, None, f"skipped: {exc}", {}, time.perf_counter() - t0, "skipped", required)
    except Exception as exc:  # noqa: BLE001 - a crashing check is reported, never hidden
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return Outcome(name, role, None, f"error: {tb}", {}, time.perf_counter() - t0, "error", required)
    return Outcome(name, role, bool(holds), measured, data, time.perf_counter() - t0, "ran", required)
