"""The report's section "Where real heads sit": a recorded `lora-proofcheck audit` (its audit.json, given
as `report --audit FILE.json`, like `--bench`) carried into the report. The report never runs an audit
itself (it needs the model packages and minutes per model): without a recorded audit the section says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import InvalidInputError

__all__ = ["AUDIT_KIND", "real_heads", "recorded_audit"]

AUDIT_KIND = "lora_proofcheck.audit"
#: the audit.json major version this report reads (audit.schema.json)
AUDIT_MAJOR = "1"
#: the per-head fields the section keeps (for its figure and the ledger's checks)
POINT_KEYS = (
    "model",
    "attention",
    "L",
    "layer",
    "head",
    "head_dim",
    "logit_bound",
    "max_abs_logit",
    "frontier_R",
    "regime",
)


def real_heads(config) -> dict:
    """The section of a `ReportConfig`: the recorded audit, or why there is none."""
    if config.audit_file is None:
        return {
            "status": "not run",
            "reason": "no recorded audit given: run `lora-proofcheck audit --out DIR` and pass "
            "`lora-proofcheck report --audit DIR/audit.json`",
        }
    return recorded_audit(config.audit_file)


def recorded_audit(path, *, name: str = "audit_file") -> dict:
    """An audit.json written by `lora-proofcheck audit`, checked and condensed into the report's section;
    `name` is what errors call the argument (the CLI passes its flag)."""
    try:
        audit = json.loads(Path(path).read_text(encoding="utf-8"))
        if audit.get("kind") != AUDIT_KIND:
            raise ValueError(f"kind is {audit.get('kind')!r}, not {AUDIT_KIND!r}")
        if str(audit.get("schema_version", "")).split(".")[0] != AUDIT_MAJOR:
            raise ValueError(f"schema_version {audit.get('schema_version')!r} is not {AUDIT_MAJOR}.x")
        section = {
            "status": "ok",
            "source": f"recorded: {Path(path).name} ({audit.get('created', 'unknown date')})",
            "created": audit["created"],
            "settings": audit["settings"],
            "summary": audit["summary"],
            "models": [_model(m) for m in audit["models"]],
            "softmax_1_scope": audit["softmax_1_scope"],
            "softmax_1_comparison": audit["softmax_1_comparison"],
            "gradient_checks": audit["gradient_checks"],
            "frontier_curve": audit["frontier"]["curve"],
            "points": [{k: h[k] for k in POINT_KEYS} for h in audit["heads"]],
            "definitions": {
                k: audit["definitions"][k] for k in ("logit_bound", "max_abs_logit", "frontier_R", "regime")
            },
        }
        if not section["summary"] or not section["points"]:
            raise ValueError("it holds no head records")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInputError(
            f"{name} {str(path)!r} is not a readable audit.json of `lora-proofcheck audit` "
            f"({type(exc).__name__}: {exc})"
        ) from None
    return section


def _model(m: dict) -> dict:
    keys = (
        "name",
        "architecture",
        "n_layers",
        "n_heads",
        "n_kv_heads",
        "head_dim",
        "hidden_size",
        "biases",
        "causal",
        "position_inside_attention",
        "paper_attention",
        "sha256",
        "sha256_verified",
        "package",
        "per_L",
        "not_covered",
    )
    return {k: m[k] for k in keys if k in m} | {
        "per_L": [{k: e[k] for k in ("attention", "L", "tokens", "sanity")} for e in m["per_L"]]
    }
