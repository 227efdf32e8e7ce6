"""The versioned JSON schemas (package data) of report.json (`report.schema.json`) and of the audit files
the report reads back (`audit.schema.json`, written by `lora-proofcheck audit`), and validation."""

from __future__ import annotations

import json
from importlib import resources

__all__ = ["AUDIT_SCHEMA_FILE", "SCHEMA_FILE", "VOLATILE_KEYS", "VOLATILE_MEASUREMENTS", "audit_schema",
           "comparable", "schema", "validate", "validate_audit"]

SCHEMA_FILE = "report.schema.json"
AUDIT_SCHEMA_FILE = "audit.schema.json"


def schema(name: str = SCHEMA_FILE) -> dict:
    return json.loads(resources.files(__package__).joinpath(name).read_text(encoding="utf-8"))


def audit_schema() -> dict:
    return schema(AUDIT_SCHEMA_FILE)


def validate(report: dict, *, name: str = SCHEMA_FILE) -> None:
    """Raise jsonschema.ValidationError when `report` does not follow the schema (needs jsonschema)."""
    import jsonschema  # noqa: PLC0415 - a test/dev dependency

    jsonschema.Draft202012Validator(schema(name), format_checker=jsonschema.FormatChecker()).validate(report)


def validate_audit(audit: dict) -> None:
    """Raise jsonschema.ValidationError when `audit` (JSON values) does not follow audit.schema.json."""
    validate(audit, name=AUDIT_SCHEMA_FILE)


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
