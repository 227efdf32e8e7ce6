"""Argument checks shared by every public entry point: each error names the argument.

The one place validators live; a module that needs another kind adds it here.
"""

from __future__ import annotations

import math
import operator
import warnings
from numbers import Real

from ..errors import InvalidInputError, InvalidTypeError

__all__ = ["MAX_SEED", "MODULES", "check_bool", "check_choice", "check_int", "check_modules", "check_optional_int", "check_tolerances",
           "check_positive", "check_real", "check_seed"]

#: the adaptable projections of an attention head, in canonical order
MODULES = ("Q", "K", "V")
#: the largest base seed (numpy SeedSequence entropy is unbounded; seeds are stored as int64)
MAX_SEED = 2**63 - 1


def check_int(name: str, value, minimum: int = 0) -> int:
    """An integer (not a bool) >= minimum.

    >>> check_int("L", 4096, 1)
    4096
    """
    if isinstance(value, bool):
        raise InvalidTypeError(f"{name} must be an integer, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise InvalidTypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if value < minimum:
        raise InvalidInputError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_optional_int(name: str, value, minimum: int = 0) -> int | None:
    """None, or an integer (not a bool) >= minimum."""
    return None if value is None else check_int(name, value, minimum)


def check_seed(name: str, value) -> int:
    """An integer (not a bool) in [0, 2^63 - 1].

    >>> check_seed("seed", 7)
    7
    """
    if isinstance(value, bool):
        raise InvalidTypeError(f"{name} must be an integer, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise InvalidTypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if not 0 <= value <= MAX_SEED:
        raise InvalidInputError(f"{name} must lie in [0, 2**63 - 1], got {value}")
    return value


def check_bool(name: str, value) -> bool:
    """True or False (not 0/1, not None)."""
    if not isinstance(value, bool):
        raise InvalidTypeError(f"{name} must be True or False, got {type(value).__name__}")
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


def check_choice(name: str, value, allowed):
    """One of `allowed` (compared with ==, so strings must match exactly)."""
    if not isinstance(value, str) or value not in allowed:
        raise InvalidInputError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value


def check_modules(modules, name: str = "modules") -> str:
    """A non-empty string of distinct 'Q', 'K', 'V', returned in canonical order ("VQ" -> "QV").

    >>> check_modules("VQ")
    'QV'
    """
    if not isinstance(modules, str):
        raise InvalidTypeError(f"{name} must be a string over 'Q', 'K', 'V', got {type(modules).__name__}")
    if not modules or any(m not in MODULES for m in modules) or len(set(modules)) != len(modules):
        raise InvalidInputError(f"{name} must be a non-empty string of distinct 'Q', 'K', 'V', got {modules!r}")
    return "".join(m for m in MODULES if m in modules)


def check_tolerances(rtol, atol, eps=None, *, stacklevel=3) -> tuple[float, float]:
    """(rtol, atol) validated; `eps` (deprecated) means atol=eps, rtol=0, with a DeprecationWarning."""
    if eps is not None:
        warnings.warn("eps is deprecated: it is an absolute tolerance; use atol=eps, rtol=0 "
                      "(or a relative rtol, as numpy.allclose)", DeprecationWarning, stacklevel=stacklevel)
        atol, rtol = _tolerance("eps", eps), 0.0
    rtol, atol = _tolerance("rtol", rtol), _tolerance("atol", atol)
    if rtol == 0 and atol == 0:
        raise InvalidInputError("rtol and atol are both 0: no computed gradient can be certified exact; "
                                "give rtol > 0 or atol > 0")
    return rtol, atol


def _tolerance(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidTypeError(f"{name} must be a real number >= 0, got {type(value).__name__}")
    value = float(value)
    if not (value >= 0 and math.isfinite(value)):
        raise InvalidInputError(f"{name} must be a finite number >= 0, got {value!r}")
    return value
