"""Degree selection: the smallest polynomial degree whose certified bound meets a tolerance.

Only certification is decided here (is the bound small enough?); whether that degree is worth
running against the exact path is the planner's question (`gradients.planner`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._lib.validate import check_positive
from ..errors import InvalidInputError
from . import polynomial
from .certificate import Certificate
from .polynomial import MAX_RADIUS, ExpPolynomial

__all__ = ["MAX_DEGREE", "DegreeChoice", "polynomial_at", "select_degree"]

#: degrees searched at most (the polynomial module's default)
MAX_DEGREE = 60


def polynomial_at(R: float, degree: int, method: str = "auto") -> ExpPolynomial | None:
    """The certified polynomial of `degree` on [-R, R], or None past the radius certificates are
    derived for (`polynomial.MAX_RADIUS`)."""
    if R > MAX_RADIUS:
        return None
    return polynomial.exp_polynomial(R, degree=degree, method=method)


@dataclass(frozen=True)
class DegreeChoice:
    """The outcome of `select_degree`: the polynomial (None when no degree qualifies), its bound
    and floor per key, and the reason when none."""

    poly: ExpPolynomial | None
    bound: dict | None
    floor: dict | None
    reason: str


def select_degree(cert: Certificate, eps: float, *, method: str = "auto",
                  max_degree: int = MAX_DEGREE) -> DegreeChoice:
    """The smallest degree whose certified bound (approximation + rounding) is <= eps everywhere.

    A lower bound first: the floor is >= 0, so delta must be <= required_delta(eps), and
    `polynomial.min_degree` skips every smaller degree with a proof. Upwards from there each
    degree is certified in turn; the search stops once the rounding floor alone exceeds eps (it
    grows with the degree through the features' magnitude sum and rank), which can only report
    "unreachable", never a wrong bound."""
    eps = check_positive("eps", eps)
    R = cert.logit_bound
    need = min(cert.required_delta(eps), 0.999)
    if need <= 0.0:
        return DegreeChoice(None, None, None, f"eps={eps:.3g} is below the float rounding floor alone")
    try:
        g0 = polynomial.min_degree(R, need, method=method, max_degree=max_degree)
    except InvalidInputError:  # a radius beyond what certificates are derived for
        g0 = None
    if g0 is None:
        return DegreeChoice(None, None, None, f"no degree <= {max_degree} reaches the needed relative error "
                                              f"delta <= {need:.3g} of exp on [-{R:.4g}, {R:.4g}]")
    for g in range(g0, max_degree + 1):
        poly = polynomial.exp_polynomial(R, degree=g, method=method)
        bound, floor = cert.bound_and_floor(poly)
        if max(bound.values()) <= eps:
            return DegreeChoice(poly, bound, floor, "")
        worst = max(floor.values())
        if math.isinf(worst):
            return DegreeChoice(None, None, None, f"float rounding is uncontrolled at R = {R:.4g} in "
                                                  f"{cert.dtype}: the features' magnitudes A(R) e^R exceed "
                                                  "1/(2 gamma_n)")
        if worst > eps:
            return DegreeChoice(None, None, None, f"eps={eps:.3g} is below the float rounding floor "
                                                  f"({worst:.3g} at degree {g}, {cert.dtype})")
    return DegreeChoice(None, None, None, f"no degree <= {max_degree} certifies eps={eps:.3g}")
