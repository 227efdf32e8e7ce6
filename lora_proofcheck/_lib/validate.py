"""Argument checks shared by every public entry point: each error names the argument."""

from __future__ import annotations

import math
import operator
from numbers import Real

from .errors import InvalidInputError, InvalidTypeError


def check_int(name: str, value, minimum: int = 0) -> int:
    """An integer (not a bool) >= minimum."""
    if isinstance(value, bool):
        raise InvalidTypeError(f"{name} must be an integer, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise InvalidTypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if value < minimum:
        raise InvalidInputError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_real(name: str, value) -> float:
    """A finite real number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidTypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidInputError(f"{name} must be finite, got {value}")
    return value


def check_positive(name: str, value) -> float:
    """A finite real number > 0."""
    value = check_real(name, value)
    if not value > 0:
        raise InvalidInputError(f"{name} must be a finite number > 0, got {value!r}")
    return value
