"""Polynomials p ≈ exp on [-R, R] with exact rational coefficients and a CERTIFIED relative error.

    delta(p) := sup_{|x| <= R} |p(x) - e^x| / e^x = sup |h(x)|,   h(x) := p(x) e^{-x} - 1.

Two constructions, each with a short proof that locates the supremum, so that the certificate is
an interval-arithmetic enclosure of |h| at one or two points (tight: certified/true = 1 + 2^-40):

* **Taylor** p = sum_{t<=g} x^t/t!.  h'(x) = (p' - p) e^{-x} = -x^g e^{-x}/g!, so h is monotone on
  [-R, 0] and on [0, R] with h(0) = 0; hence delta = max(|h(-R)|, |h(R)|).
* **Chebyshev** p* = the interpolant of e^x at the g+1 roots x_i = R cos((2i+1)pi/(2g+2)) of
  T_{g+1}(x/R).  With w(x) = prod (x - x_i) = R^{g+1} T_{g+1}(x/R) / 2^g and the divided difference
  e[.] of exp,  e^x - p*(x) = w(x) e[x_0..x_g, x] = w(x) e^x M(x),  M(x) := e[x_0-x, .., x_g-x, 0].
  By Hermite-Genocchi, M(x) = int_simplex exp(sum_i lam_i (x_i - x)) > 0 is non-increasing in x,
  and |w| <= R^{g+1}/2^g = |w(-R)|.  So |h*(x)| = |w(x)| M(x) <= |w(-R)| M(-R) = |h*(-R)|:
  the relative error of Chebyshev interpolation of exp is attained at x = -R.
  The coefficients of p* are not rational; since the interpolation operator I is linear and
  I(x^m) = x^m for m <= g, expanding e^x = sum x^m/m! gives the exact series
      a*_t = 1/t! + sum_{m>g} R^{m-t} nu_{m,t} / m!,   nu_m := coefficients of (y^m mod T_{g+1}(y)/2^g),
  with |nu_{m,t}| <= 2 sum_j |[y^t] T_j|.  We truncate it, round to dyadic rationals, and carry the
  rigorous coefficient error eps_c >= sup e^{-x} |p - p*| into the certificate:
      delta(p) <= |h*(-R)| + eps_c <= |h(-R)| + 2 eps_c.

Everything is exact rational arithmetic except e^{+-R}, which is enclosed by mpmath interval
arithmetic at a precision doubled until the enclosure is 2^-40-relative tight.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction

import sympy as sp
from mpmath.ctx_iv import MPIntervalContext

from .._lib.validate import check_int
from ..errors import InvalidInputError, InvalidTypeError, ProofcheckError

__all__ = ["MAX_RADIUS", "METHODS", "ExpPolynomial", "aggarwal_alman_degree_shape", "certified_rel_error",
           "closed_form_rel_bound", "degree_lower_bound", "derivative_polynomial", "exp_polynomial", "min_degree",
           "uncertified_taylor"]

METHODS = ("taylor", "chebyshev")

# Below 2^-FLOOR_BITS a relative error is far beneath float64 resolution (~2^-1074): certificates
# stop refining there and round up to the smallest subnormal instead.
FLOOR_BITS = 1200
# Relative tightness every certificate reaches before it is accepted.
TIGHT_BITS = 40
# Certificates are derived up to this radius (seconds at most); beyond it no degree below
# (R - ln 3)/ln(3 + sqrt 8) ~ 143 reaches any delta <= 1/2 (see _unreachable), and the
# coefficient series needs ~e R exact-rational terms.
MAX_RADIUS = 256.0
_TOO_WIDE = "certificates are derived for radius <= MAX_RADIUS only"

_LOG_3_PLUS_SQRT8 = math.log(3.0 + math.sqrt(8.0))

# A private interval context: mpmath.iv's precision is global state shared with other modules.
_IV = MPIntervalContext()


# ----------------------------------------------------------------------------------------------
# the result type


@dataclass(frozen=True)
class ExpPolynomial:
    """p(x) = sum_t coefficients[t] x^t with sup_{|x|<=radius} |p(x) - e^x| / e^x <= rel_error."""

    method: str
    degree: int
    radius: float
    coefficients: tuple
    rel_error: float

    def coefficients_float(self) -> tuple[float, ...]:
        """Correctly rounded float64 coefficients a_0..a_g."""
        return tuple(float(_as_fraction(a)) for a in self.coefficients)

    def abs_coefficient_sum(self) -> float:
        """sum_t |a_t| R^t rounded up: the scale of float rounding in evaluating p on [-R, R]."""
        r = Fraction(self.radius)
        return _round_up(sum((abs(_as_fraction(a)) * r**t for t, a in enumerate(self.coefficients)),
                             Fraction(0)))

    def __call__(self, x):
        """Horner evaluation on Python floats or (NumPy / array-API) arrays, in x's precision."""
        coeffs = self.coefficients_float()
        if len(coeffs) == 1:
            return coeffs[0] + 0 * x  # keeps x's type, shape and dtype
        out = coeffs[-1] * x + coeffs[-2]  # Python-float scalars keep x's dtype (float32 stays)
        for a in reversed(coeffs[:-2]):
            out = out * x + a
        return out

    def as_sympy(self, x=None):
        """p as a SymPy expression in x (default symbol 'x')."""
        x = sp.Symbol("x") if x is None else x
        return sp.Add(*(a * x**t for t, a in enumerate(self.coefficients)))


# ----------------------------------------------------------------------------------------------
# input checks


def _check_radius(radius, *, certify: bool = True) -> float:
    if isinstance(radius, bool):
        raise InvalidTypeError(f"radius must be a real number, got {type(radius).__name__}")
    try:
        value = float(radius)
    except (TypeError, ValueError):
        raise InvalidTypeError(f"radius must be a real number, got {type(radius).__name__}") from None
    if math.isnan(value) or value < 0 or math.isinf(value):
        raise InvalidInputError(f"radius must be a finite number >= 0, got {radius!r}")
    if certify and value > MAX_RADIUS:
        raise InvalidInputError(f"radius={radius!r} exceeds {MAX_RADIUS}: {_TOO_WIDE}")
    return value + 0.0  # -0.0 -> 0.0, one cache key


def _check_rel_error(rel_error) -> float:
    try:
        value = float(rel_error)
    except (TypeError, ValueError):
        raise InvalidTypeError(f"rel_error must be a real number, got {type(rel_error).__name__}") from None
    if not 0.0 < value < 1.0:  # also rejects NaN
        raise InvalidInputError(f"rel_error must lie in (0, 1), got {rel_error!r}")
    return value


def _check_method(method, allowed=METHODS + ("auto",)) -> str:
    if method not in allowed:
        raise InvalidInputError(f"method must be one of {allowed}, got {method!r}")
    return method


# ----------------------------------------------------------------------------------------------
# exact helpers


def _as_fraction(a) -> Fraction:
    if isinstance(a, Fraction):
        return a
    return Fraction(int(a.p), int(a.q))  # sympy.Rational


def _round_up(q: Fraction) -> float:
    """Smallest float >= q (q >= 0)."""
    if q == 0:
        return 0.0
    try:
        f = float(q)  # int/int true division: correctly rounded
    except OverflowError:
        return math.inf
    if Fraction(f) < q:
        f = math.nextafter(f, math.inf)
    return f


def _mpf_to_fraction(t) -> Fraction:
    sign, man, exp, bc = t
    if man == 0:
        if exp != 0:  # mpmath encodes inf / nan as man == 0 with a special exponent
            raise ProofcheckError("interval enclosure overflowed")
        return Fraction(0)
    value = Fraction(man) * (Fraction(2) ** exp)
    return -value if sign else value


def _enclose(q: Fraction):
    return _IV.mpf(q.numerator) / _IV.mpf(q.denominator)


def _rel_residual(value: Fraction, x: Fraction) -> tuple[Fraction, Fraction]:
    """Rigorous [lo, hi] containing |value * e^{-x} - 1|, 2^-TIGHT_BITS-relative tight
    (or hi <= 2^-FLOOR_BITS).  x must be a float-representable dyadic.

    mpmath's interval exp is not rigorous to the last bit (iv.exp(2^-126) at 128 bits is the point
    1 + 2^-126, which misses e^x = 1 + 2^-126 + 2^-253), so the enclosure of value * e^{-x} is widened
    by 8 units of the working precision, |value e^{-x}| 2^(3-prec) <= 2^(3-prec) (1 + hi): that
    covers an exp off by a few ulps, and the refinement below makes the widening negligible."""
    if x == 0:
        r = abs(value - 1)
        return r, r
    prec = 128
    while True:
        _IV.prec = prec
        r = _enclose(value) * _IV.exp(-_IV.mpf(float(x))) - 1
        a, b = (_mpf_to_fraction(t) for t in r._mpi_)
        widen = (1 + max(abs(a), abs(b))) / 2 ** (prec - 3)
        a, b = a - widen, b + widen
        hi = max(abs(a), abs(b))
        lo = Fraction(0) if a <= 0 <= b else min(abs(a), abs(b))
        if hi - lo <= hi / 2**TIGHT_BITS or hi <= Fraction(1, 2**FLOOR_BITS):
            return lo, hi
        prec *= 2
        if prec > 1 << 17:
            raise ProofcheckError("interval enclosure of the relative error did not converge")


def _horner(coeffs, x: Fraction) -> Fraction:
    out = Fraction(0)
    for a in reversed(coeffs):
        out = out * x + a
    return out


@functools.lru_cache(maxsize=None)
def chebyshev_t_coefficients(n: int) -> tuple[int, ...]:
    """Integer monomial coefficients [y^0..y^n] of T_n (T_{n+1} = 2y T_n - T_{n-1})."""
    prev, cur = [1], [0, 1]
    if n == 0:
        return (1,)
    for _ in range(n - 1):
        nxt = [0] + [2 * c for c in cur]
        for i, c in enumerate(prev):
            nxt[i] -= c
        prev, cur = cur, nxt
    return tuple(cur)


@functools.lru_cache(maxsize=None)
def taylor_coefficients(degree: int) -> tuple[Fraction, ...]:
    """1/t! for t = 0..degree."""
    return tuple(Fraction(1, math.factorial(t)) for t in range(degree + 1))


@functools.lru_cache(maxsize=256)
def _chebyshev_remainders(degree: int, count: int) -> tuple[tuple[Fraction, ...], ...]:
    """nu_m = coefficients of y^m mod (T_{g+1}(y)/2^g) for m = g+1 .. g+count: the interpolant of
    y^m at the Chebyshev roots (y^m minus a multiple of the monic node polynomial)."""
    g = degree
    monic = [Fraction(c, 2**g) for c in chebyshev_t_coefficients(g + 1)]
    r = [-c for c in monic[: g + 1]]  # y^{g+1} mod monic
    out = [tuple(r)]
    for _ in range(count - 1):
        lead = r[g]
        r = [Fraction(0)] + r[:g]  # multiply by y, drop y^{g+1} ...
        if lead:
            r = [c - lead * m for c, m in zip(r, monic)]  # ... and reduce it
        out.append(tuple(r))
    return tuple(out)


def _chebyshev_polynomial(radius: Fraction, degree: int, target: Fraction):
    """Dyadic-rational p with eps_c := e^R sum_t |a_t - a*_t| R^t <= target; returns (coeffs, eps_c)."""
    g, r = degree, radius
    if r == 0:  # all nodes collapse to 0: Hermite interpolation, i.e. Taylor
        return taylor_coefficients(g), Fraction(0)
    _IV.prec = 64
    # an upper bound on e^R (widened by 2^-56: mpmath's interval exp may miss by an ulp, see _rel_residual)
    e_r = _mpf_to_fraction(_IV.exp(_IV.mpf(float(r)))._mpi_[1]) * (1 + Fraction(1, 2**56))
    # |nu_{m,t}| <= 2 S_t, so sum_t R^t |tail_t| <= 2 (sum_t S_t) sum_{m>K} R^m/m!.
    s_total = 2 * sum(abs(c) for j in range(g + 1) for c in chebyshev_t_coefficients(j))
    # smallest K with e^R * s_total * R^{K+1}/(K+1)! / (1 - R/(K+2)) <= target/2
    k = g + 1
    term = r ** (k + 1) / math.factorial(k + 1)
    while not (k + 2 > r and e_r * s_total * term / (1 - r / (k + 2)) <= target / 2):
        k += 1
        term = term * r / (k + 1)
    tail = e_r * s_total * term / (1 - r / (k + 2))
    nus = _chebyshev_remainders(g, k - g)
    exact = list(taylor_coefficients(g))
    power = [r ** (m) / math.factorial(m) for m in range(k + 1)]
    for m, nu in zip(range(g + 1, k + 1), nus):
        for t in range(g + 1):
            if nu[t]:
                exact[t] += power[m] * nu[t] / r**t if t else power[m] * nu[t]
    # round to the dyadic grid 2^-s, keeping the rounding contribution <= target/4
    abs_powers = sum((r**t for t in range(g + 1)), Fraction(0))
    s = 0
    while e_r * abs_powers / 2 ** (s + 1) > target / 4:
        s += 8
    coeffs = tuple(Fraction(round(a * 2**s), 2**s) for a in exact)
    rounding = e_r * sum((abs(c - a) * r**t for t, (c, a) in enumerate(zip(coeffs, exact))), Fraction(0))
    return coeffs, tail + rounding


# ----------------------------------------------------------------------------------------------
# certificates


def _exp_capped(log_value: float) -> float:
    # capping keeps a lower bound a lower bound and avoids float overflow
    return math.exp(min(log_value, 700.0))


def _chebyshev_lower(radius: float, degree: int) -> float:
    """R^{g+1} e^{R(g+1)/(g+2)} / (2^g (g+1)!) <= |h*(-R)| = |w(-R)| M(-R): by Hermite-Genocchi,
    M(-R) = E[exp(sum_i lam_i y_i)]/(g+1)! over a flat Dirichlet lam, y_i = x_i + R (and 0), and Jensen
    with sum_i y_i = (g+1) R (Chebyshev roots sum to 0) gives M(-R) >= e^{R(g+1)/(g+2)}/(g+1)!."""
    if radius == 0:
        return 0.0
    g = degree
    return _exp_capped(
        (g + 1) * math.log(radius) + radius * (g + 1) / (g + 2) - g * math.log(2) - math.lgamma(g + 2)
    )


def _taylor_lower(radius: float, degree: int) -> float:
    """R^{g+1} e^{R(g+1)/(g+2)} / (g+1)! <= |h(-R)| for the Taylor polynomial: the same argument
    with all g+1 nodes at 0, where E[lam_x] = 1/(g+2)."""
    if radius == 0:
        return 0.0
    g = degree
    return _exp_capped((g + 1) * math.log(radius) + radius * (g + 1) / (g + 2) - math.lgamma(g + 2))


def _unreachable(radius: float, degree: int, rel_error: float) -> bool:
    """No degree-g polynomial has relative error <= delta on [-R, R]: |p| <= 1+delta on [-R, 0]
    forces p(R) <= (1+delta) T_g(3) <= (1+delta)(3+sqrt 8)^g, but p(R) >= (1-delta) e^R."""
    lhs = radius + math.log1p(-rel_error)
    rhs = math.log1p(rel_error) + degree * _LOG_3_PLUS_SQRT8
    return lhs > rhs + 1e-9 * (1.0 + abs(lhs))  # margin covers float rounding


# Large caches: the row-adaptive certificate asks for every radius class (a fixed grid of radii,
# `geometry.CLASS_STEPS`) at every degree it searches, ~10^4 (radius, degree, method) triples over
# a stress campaign; each costs ~3 ms of exact rational arithmetic, a cache entry a few KB.
_CACHE_SIZE = 1 << 16


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _certify(radius: float, degree: int, method: str) -> ExpPolynomial:
    r = Fraction(radius)
    if method == "taylor":
        coeffs = taylor_coefficients(degree)
        if r == 0:
            bound = Fraction(0)
        else:
            # h is monotone on each side of 0 (see module docstring): check both ends.
            bound = max(_rel_residual(_horner(coeffs, x), x)[1] for x in (-r, r))
    else:
        floor = Fraction(1, 2**FLOOR_BITS)
        # eps_c is kept 2^-50 below the smallest possible |h*(-R)|, so it cannot spoil tightness
        target = max(Fraction(_chebyshev_lower(radius, degree)) / 2**50, floor)
        coeffs, eps_c = _chebyshev_polynomial(r, degree, target)
        if r == 0:
            bound = Fraction(0)
        else:
            # the supremum of |h*| sits at x = -R (see module docstring)
            bound = _rel_residual(_horner(coeffs, -r), -r)[1] + 2 * eps_c
    return ExpPolynomial(
        method=method,
        degree=degree,
        radius=radius,
        coefficients=tuple(sp.Rational(c.numerator, c.denominator) for c in coeffs),
        rel_error=_round_up(bound),
    )


# ----------------------------------------------------------------------------------------------
# public API


def certified_rel_error(radius, degree, method) -> float:
    """Certified upper bound on sup_{|x|<=R} |p(x) - e^x| / e^x for the degree-g polynomial of
    `method` ("taylor", "chebyshev", or "auto" = the smaller of the two)."""
    return exp_polynomial(radius, degree=degree, method=method).rel_error


def min_degree(radius, rel_error, *, method="auto", max_degree=60) -> int | None:
    """Smallest g <= max_degree whose certified relative error is <= rel_error, else None."""
    radius = _check_radius(radius, certify=False)
    rel_error = _check_rel_error(rel_error)
    method = _check_method(method)
    max_degree = check_int("max_degree", max_degree)
    _check_wide(radius, rel_error, max_degree)
    return _min_degree(radius, rel_error, method, max_degree)


def _check_wide(radius: float, rel_error: float, max_degree: int) -> None:
    """Past MAX_RADIUS a search is still answerable when growth alone rules out every degree."""
    if radius > MAX_RADIUS and not _unreachable(radius, max_degree, rel_error):
        raise InvalidInputError(
            f"radius={radius!r} exceeds {MAX_RADIUS} and max_degree={max_degree} is too high to rule "
            f"out every degree by growth alone: {_TOO_WIDE}"
        )


@functools.lru_cache(maxsize=4096)
def _min_degree(radius: float, rel_error: float, method: str, max_degree: int) -> int | None:
    if method == "auto":
        cheb = _min_degree(radius, rel_error, "chebyshev", max_degree)
        limit = max_degree if cheb is None else cheb  # ties go to Taylor
        taylor = _min_degree(radius, rel_error, "taylor", limit)
        return taylor if taylor is not None else cheb
    for g in range(max_degree + 1):
        if _ruled_out(radius, g, rel_error, method):
            continue
        if _certify(radius, g, method).rel_error <= rel_error:
            return g
    return None


def _ruled_out(radius: float, degree: int, rel_error: float, method: str) -> bool:
    """A proof that `method` at `degree` cannot certify rel_error: no polynomial at all reaches it
    (`_unreachable`), or the rigorous lower bound on the method's error exceeds it (factor-2 margin)."""
    lower = _taylor_lower if method == "taylor" else _chebyshev_lower
    return _unreachable(radius, degree, rel_error) or lower(radius, degree) > 2 * rel_error


def degree_lower_bound(radius, rel_error, *, method="auto") -> int:
    """The smallest degree g that the proofs `min_degree` uses to skip degrees do not rule out:
    every degree below it provably fails (for both methods when method="auto"), so
    min_degree(radius, rel_error, method=method) >= degree_lower_bound(...) whenever it finds one.

    No certificate is computed: O(g) float evaluations, usable at any radius (also past MAX_RADIUS,
    where no certified polynomial is derived). Within a few degrees of min_degree where both exist:

    >>> degree_lower_bound(8.0, 1e-2), min_degree(8.0, 1e-2)
    (18, 19)
    """
    radius = _check_radius(radius, certify=False)
    rel_error = _check_rel_error(rel_error)
    method = _check_method(method)
    methods = METHODS if method == "auto" else (method,)
    g = 0
    while all(_ruled_out(radius, g, rel_error, m) for m in methods):
        g += 1  # terminates: growth rules out only g < ~R / log(3 + sqrt 8); the lower bounds fall as R^g/g!
    return g


def exp_polynomial(radius, *, degree=None, rel_error=None, method="auto", max_degree=60) -> ExpPolynomial:
    """The certified polynomial approximation of exp on [-radius, radius].

    Give exactly one of `degree` (that degree) or `rel_error` (the smallest degree whose certified
    relative error is <= rel_error).  method="auto" takes the method with the lower degree (for a
    given degree: the smaller certified error); ties go to Taylor.
    """
    method = _check_method(method)
    if (degree is None) == (rel_error is None):
        raise InvalidInputError("give exactly one of degree / rel_error")
    radius = _check_radius(radius, certify=degree is not None)
    if degree is not None:
        degree = check_int("degree", degree)
        if method != "auto":
            return _certify(radius, degree, method)
        taylor, cheb = _certify(radius, degree, "taylor"), _certify(radius, degree, "chebyshev")
        return taylor if taylor.rel_error <= cheb.rel_error else cheb
    rel_error = _check_rel_error(rel_error)
    max_degree = check_int("max_degree", max_degree)
    _check_wide(radius, rel_error, max_degree)
    if method == "auto":
        cheb = _min_degree(radius, rel_error, "chebyshev", max_degree)
        taylor = _min_degree(radius, rel_error, "taylor", max_degree if cheb is None else cheb)
        if taylor is not None:
            return _certify(radius, taylor, "taylor")
        g, method = cheb, "chebyshev"
    else:
        g = _min_degree(radius, rel_error, method, max_degree)
    if g is None:
        raise InvalidInputError(
            f"rel_error={rel_error!r} is not reachable on [-{radius}, {radius}] with "
            f"max_degree={max_degree} (method={method!r})"
        )
    return _certify(radius, g, method)


def derivative_polynomial(poly: ExpPolynomial) -> ExpPolynomial:
    """p' with the exact rational coefficients t a_t (the derivative features of the model gradient,
    `gradients/peers.py`). rel_error = inf: no certificate is claimed for p' ≈ exp."""
    if not isinstance(poly, ExpPolynomial):
        raise InvalidTypeError(f"poly must be an ExpPolynomial, got {type(poly).__name__}")
    coeffs = tuple(t * _as_fraction(a) for t, a in enumerate(poly.coefficients))[1:] or (Fraction(0),)
    return ExpPolynomial(method=f"d/dx {poly.method}", degree=len(coeffs) - 1, radius=poly.radius,
                         coefficients=coeffs, rel_error=math.inf)


def uncertified_taylor(radius: float, degree: int) -> ExpPolynomial:
    """The degree-g Taylor polynomial of exp (its coefficients do not depend on the radius) with
    rel_error = inf: for radii past MAX_RADIUS, where no certificate is derived, but the kernel is
    still what a practitioner runs (BASED's Taylor-2)."""
    degree = check_int("degree", degree)
    return ExpPolynomial("taylor", degree, float(radius), taylor_coefficients(degree), math.inf)


# ----------------------------------------------------------------------------------------------
# classical closed forms, for reports and sanity checks


def closed_form_rel_bound(radius, degree, method) -> float:
    """Textbook bounds (looser than the certificates; float, for comparison):
    Taylor (Lagrange, relative): R^{g+1} e^R/(g+1)!   (x < 0 is the bad side: e^{xi - x} <= e^R);
    Chebyshev (interpolation remainder / e^{-R}): R^{g+1} e^{2R} / (2^g (g+1)!)."""
    radius = _check_radius(radius, certify=False)
    degree = check_int("degree", degree)
    method = _check_method(method, METHODS)
    if radius == 0:
        return 0.0
    log_core = (degree + 1) * math.log(radius) - math.lgamma(degree + 2)
    if method == "taylor":
        log_bound = log_core + radius
    else:
        log_bound = log_core - degree * math.log(2) + 2 * radius
    return math.exp(log_bound) if log_bound < 709.0 else math.inf


def aggarwal_alman_degree_shape(B, delta) -> float:
    """max(B, log(1/delta) / log(log(1/delta)/B)): the Theta-shape of the optimal degree for
    additive error delta of e^x on [0, B] (Aggarwal-Alman 2022).  For relative error on [-R, R] use
    B = 2R.  The inner log is clamped at 1 where log(1/delta)/B <= e (there the B term dominates)."""
    if isinstance(B, bool):
        raise InvalidTypeError("B must be a real number, got bool")
    B = float(B)
    if math.isnan(B) or B < 0 or math.isinf(B):
        raise InvalidInputError(f"B must be a finite number >= 0, got {B!r}")
    delta = float(delta)
    if not 0.0 < delta < 1.0:
        raise InvalidInputError(f"delta must lie in (0, 1), got {delta!r}")
    log_inv = -math.log(delta)
    if B == 0:
        return 0.0  # the limit B -> 0+ of log(1/delta)/log(log(1/delta)/B)
    return max(B, log_inv / max(1.0, math.log(log_inv / B)))


# ----------------------------------------------------------------------------------------------
# the ratio range (row-adaptive certificate): what softmax actually sees of the polynomial


def _ratio_enclosure(value: Fraction, x: Fraction) -> tuple[Fraction, Fraction]:
    """Rigorous [lo, hi] containing value * e^{-x} (x a float-representable dyadic), 2^-TIGHT_BITS
    relative tight."""
    prec = 128
    while True:
        _IV.prec = prec
        r = _enclose(value) * _IV.exp(-_IV.mpf(float(x)))
        a, b = (_mpf_to_fraction(t) for t in r._mpi_)
        if b - a <= abs(b) / 2**TIGHT_BITS:
            return a, b
        prec *= 2
        if prec > 1 << 17:
            raise ProofcheckError("interval enclosure of p(x) e^-x did not converge")


def _round_down(q: Fraction) -> float:
    """Largest float <= q (q >= 0)."""
    if q <= 0:
        return 0.0
    f = float(q)
    if Fraction(f) > q:
        f = math.nextafter(f, 0.0)
    return f


@functools.lru_cache(maxsize=_CACHE_SIZE)
def ratio_range(poly: ExpPolynomial) -> tuple[float, float]:
    """(A, B) with A <= p(x) e^{-x} <= B on [-R, R], A rounded down and B up.

    Softmax is invariant under a constant factor per row, so what a row's error depends on is the
    spread of p e^{-x} over its interval, not its distance from 1: Lemma 1 in the oscillation form
    gives ||F~_i - F_i||_1 <= (B - A) / (2 A) (see `adaptive.py`).
    Taylor: h' = -x^g e^{-x}/g! (module docstring). g odd: h rises on [-R, 0] and falls on [0, R],
    so B = p(0) e^0 = 1 and A = min over the two ends; g even: h falls, so B at -R and A at +R.
    Chebyshev: [1 - delta, 1 + delta] (its sup |h*| is at -R; its extrema inside are not located)."""
    R = Fraction(poly.radius)
    if poly.method == "chebyshev" or R == 0:
        dlt = Fraction(poly.rel_error)
        return _round_down(1 - dlt), _round_up(1 + dlt)
    coeffs = tuple(_as_fraction(a) for a in poly.coefficients)
    lo_m, hi_m = _ratio_enclosure(_horner(coeffs, -R), -R)
    lo_p, hi_p = _ratio_enclosure(_horner(coeffs, R), R)
    if poly.degree % 2 == 1:
        return _round_down(min(lo_m, lo_p)), 1.0
    return _round_down(lo_p), _round_up(hi_m)
