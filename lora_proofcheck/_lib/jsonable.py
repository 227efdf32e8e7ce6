"""The one conversion of results into plain JSON values (reports, benchmarks, audits, sweeps)."""

from __future__ import annotations

import math

__all__ = ["jsonable"]


def jsonable(value):
    """Plain JSON values: tuples -> lists, NumPy scalars and arrays -> Python, non-finite floats ->
    strings.

    >>> jsonable({"a": (1.0, float("inf")), 2: None})
    {'a': [1.0, 'inf'], '2': None}
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and getattr(value, "ndim", 0) > 0:  # an array: nested lists
        return jsonable(value.tolist())
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value
