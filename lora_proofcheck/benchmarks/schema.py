"""JSON Schemas of `lora-proofcheck bench --out` (what `run_benchmark` returns) and of
`lora-proofcheck bench --peers --out` (what `peers.run_peers` returns, with its summary).

Bench results: schema_version 2 adds the approx-rtol methods' facts (path taken, its reason,
pilots, the time model's prediction, the forced comparison), per-key errors and the contraction
measurements; version 1 files (none of these) still validate and summarize."""

from __future__ import annotations

__all__ = ["CONTRACTIONS", "ENTRY", "FIT", "GEMM", "PEERS_SCHEMA", "PEER_ROW", "RESULT_SCHEMA", "SCHEMA_VERSIONS"]

#: bench result versions this package reads (the runner writes the last)
SCHEMA_VERSIONS = (1, 2)

_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_POS = {"type": "number", "exclusiveMinimum": 0}

_OK = {
    "properties": {"status": {"const": "ok"}},
    "required": ["times_s", "median_s", "repeats_done", "peak_rss_bytes", "baseline_rss_bytes",
                 "memory_method", "flops", "gflops", "max_abs_error", "error_reference"],
}
_NOT_OK = {
    "properties": {"status": {"enum": ["skipped", "failed"]}, "reason": {"type": "string", "minLength": 1}},
    "required": ["reason"],
}

ENTRY = {
    "type": "object",
    "required": ["method", "L", "status"],
    "properties": {
        "method": {"type": "string"},
        "L": {"type": "integer", "minimum": 1},
        "status": {"enum": ["ok", "skipped", "failed"]},
        "times_s": {"type": "array", "items": _POS, "minItems": 1},
        "median_s": _POS,
        "repeats_done": {"type": "integer", "minimum": 1},
        "peak_rss_bytes": {"type": "integer", "minimum": 0},
        "baseline_rss_bytes": {"type": "integer", "minimum": 0},
        "device_peak_bytes": {"type": "integer", "minimum": 0},
        "flops": _NUM_OR_NULL,
        "gflops": _NUM_OR_NULL,
        "max_abs_error": _NUM_OR_NULL,
        "grad_max_abs": _NUM,
        "error_reference": {"type": "string"},
        "bound": _NUM,
        "bounds": {"type": "object", "additionalProperties": _NUM},
        "bound_holds": {"type": "boolean"},
        "errors": {"type": "object", "additionalProperties": _NUM},
        "path": {"enum": ["approx", "exact"]},
        "path_reason": {"type": "string"},
        "pilots": {"type": "array", "items": {"type": "integer"}},
        "predicted": {"type": "object", "properties": {"approx_seconds": _NUM_OR_NULL, "exact_seconds": _NUM,
                                                        "ratio": _NUM_OR_NULL, "rates": {"type": "string"}}},
        "forced": {"type": "object", "required": ["degree"],
                   "properties": {"degree": {"type": ["integer", "null"], "minimum": 0},
                                  "times_s": {"type": "array", "items": _POS, "minItems": 1},
                                  "median_s": _POS, "bound": _NUM, "how": {"type": "string"},
                                  "reason": {"type": "string"}}},
        "a_posteriori": {"type": "object", "required": ["reference", "bounds"],
                         "properties": {"reference": {"type": ["integer", "string", "null"]},
                                        "reason": {"type": "string"}, "seconds": _NUM,
                                        "bounds": {"type": "object", "additionalProperties": _NUM}}},
        "degree": {"type": ["integer", "null"], "minimum": 0},
        "rank": {"type": ["integer", "null"], "minimum": 1},
        "block_rows": {"type": "integer", "minimum": 1},
    },
    "if": {"properties": {"status": {"const": "ok"}}},
    "then": _OK,
    "else": _NOT_OK,
}

GEMM = {
    "type": "object",
    "required": ["name", "shape", "status"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 3, "maxItems": 3},
        "status": {"enum": ["ok", "skipped", "failed"]},
        "gflops_best": _POS,
        "gflops_median": _POS,
        "times_s": {"type": "array", "items": _POS},
    },
}

CONTRACTIONS = {
    "type": "object",
    "required": ["degree", "L", "status"],
    "properties": {
        "degree": {"type": "integer", "minimum": 1}, "L": {"type": "integer", "minimum": 1},
        "status": {"enum": ["ok", "skipped", "failed"]},
        "rank": {"type": "integer"}, "d": {"type": "integer"}, "chunk_rows": {"type": "integer"},
        "workers": {"type": "integer"}, "gflops": _POS, "share": _NUM, "gemm_flops": _POS,
        "runs": {"type": "array", "items": {"type": "object"}},
    },
    "if": {"properties": {"status": {"const": "ok"}}},
    "then": {"required": ["rank", "d", "chunk_rows", "workers", "gflops", "share", "runs"]},
    "else": {"required": ["reason"]},
}

FIT = {
    "type": "object",
    "required": ["exponent"],
    "properties": {"exponent": _NUM_OR_NULL, "prefactor": _NUM, "L": {"type": "array"},
                   "reason": {"type": "string"}},
}

RESULT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "lora-proofcheck bench result",
    "type": "object",
    "required": ["schema_version", "tool_version", "created", "config", "machine", "memory_method",
                 "gemm", "results", "fits", "wall_seconds"],
    "properties": {
        "schema_version": {"enum": list(SCHEMA_VERSIONS)},
        "tool_version": {"type": "string"},
        "created": {"type": "string"},
        "config": {"type": "object", "required": ["L_min", "L_max", "repeats", "eps", "threads", "backend"]},
        "contractions": {"type": "array", "items": CONTRACTIONS},
        "machine": {"type": "object"},
        "memory_method": {"type": ["string", "null"]},
        "memory_budget_bytes": {"type": ["integer", "null"]},
        "device_memory_budget_bytes": {"type": ["integer", "null"]},
        "gemm": {"type": "array", "items": GEMM, "minItems": 1},
        "results": {"type": "array", "items": ENTRY, "minItems": 1},
        "fits": {"type": "object", "additionalProperties": FIT},
        "summary": {"type": "object"},
        "wall_seconds": _NUM,
    },
}


_ERRORS = ("max_abs", "max_abs_rel", "frob_rel")
PEER_ROW = {
    "type": "object",
    "required": ["family", "L", "target_R", "method", "mode", "status"],
    "properties": {
        "family": {"type": "string"},
        "L": {"type": "integer", "minimum": 1},
        "target_R": _NUM_OR_NULL,
        "method": {"type": "string"},
        "param": {"type": ["integer", "null"]},
        "mode": {"enum": ["plugin", "model", "exact", None]},
        "status": {"enum": ["ok", "skipped", "failed"]},
        "R": _NUM, "max_abs_S": _NUM, "d": {"type": "integer"}, "r": {"type": "integer"},
        "rank": {"type": ["integer", "null"]},
        "seconds": _POS, "times_s": {"type": "array", "items": _POS, "minItems": 1}, "speedup": _POS,
        **{k: {"type": "number", "minimum": 0} for k in (*_ERRORS, "A_Q_max_rel", "frob_rel_min", "frob_rel_max")},
        "seeds": {"type": "integer", "minimum": 2},
        "reason": {"type": "string", "minLength": 1},
    },
    "allOf": [
        {"if": {"properties": {"status": {"const": "ok"}}},
         "then": {"required": ["R", "max_abs_S", "rank", "seconds", "times_s", *_ERRORS]},
         "else": {"required": ["reason"]}},
    ],
}

PEERS_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "lora-proofcheck bench --peers result",
    "type": "object",
    "required": ["schema_version", "kind", "tool_version", "created", "config", "machine", "rows", "summary",
                 "wall_seconds"],
    "properties": {
        "schema_version": {"const": 1},
        "kind": {"const": "peers"},
        "tool_version": {"type": "string"},
        "created": {"type": "string"},
        "config": {"type": "object", "required": ["sizes", "logit_bounds", "families", "d", "r", "seed", "threads"]},
        "machine": {"type": "object"},
        "rows": {"type": "array", "items": PEER_ROW, "minItems": 1},
        "summary": {"type": "object", "required": ["instances"],
                    "properties": {"instances": {"type": "array", "items": {
                        "type": "object", "required": ["family", "L", "target_R", "status"]}}}},
        "wall_seconds": _NUM,
    },
}
