"""State shared by one report run: the configuration, and results computed once and reused by several
claims (proofs, errata re-checks, the property grid, the sweeps)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .._lib.records import Skip
from .config import ReportConfig

__all__ = ["Context"]


@dataclass
class Context:
    config: ReportConfig
    cache: dict = field(default_factory=dict)

    def cached(self, key: str, fn):
        """fn() once per run; an exception is cached too, so every claim that needs it sees it."""
        if key not in self.cache:
            try:
                self.cache[key] = ("ok", fn())
            except Exception as exc:  # noqa: BLE001 - re-raised to each user below
                self.cache[key] = ("error", exc)
        state, value = self.cache[key]
        if state == "error":
            raise value
        return value

    def put(self, key: str, value) -> None:
        self.cache[key] = ("ok", value)

    def put_skip(self, key: str, reason: str) -> None:
        """Record that a section could not run here (checks that need it are then skipped)."""
        self.cache[key] = ("skip", reason)

    def section(self, key: str):
        """A result a report section stored (proofs, errata, properties, frontier, sweep, benchmark)."""
        if key not in self.cache:
            raise Skip(f"section '{key}' was not run")
        state, value = self.cache[key]
        if state == "skip":
            raise Skip(value)
        if state == "error":
            raise value
        return value
