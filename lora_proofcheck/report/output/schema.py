"""The versioned JSON schema of report.json (`report.schema.json`, package data) and validation."""

from __future__ import annotations

import json
from importlib import resources

__all__ = ["SCHEMA_FILE", "VOLATILE_KEYS", "VOLATILE_MEASUREMENTS", "comparable", "schema", "validate"]

SCHEMA_FILE = "report.schema.json"


def schema() -> dict:
    return json.loads(resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


def validate(report: dict) -> None:
    """Raise jsonschema.ValidationError when `report` does not follow the schema (needs jsonschema)."""
    import jsonschema  # noqa: PLC0415 - a test/dev dependency

    jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker()).validate(report)


# Fields that legitimately differ between two runs with the same seed (wall-clock measurements, and
# what ran the sweeps: their content is the same whatever runs them).
VOLATILE_KEYS = frozenset({"seconds", "created", "timings", "engine"})
VOLATILE_MEASUREMENTS = ("timing", "benchmark")


def comparable(report: dict) -> dict:
    """`report` without timings and timestamps: equal for two runs with the same seed and mode."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in VOLATILE_KEYS}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    out = strip(report)
    for claim in out["claims"]:  # timing-role checks carry wall-clock figures
        claim["checks"] = [c for c in claim["checks"] if c["role"] != "timing"]
    out["measurements"] = {k: v for k, v in out["measurements"].items() if k not in VOLATILE_MEASUREMENTS}
    return out
