"""Symmetric monomial feature maps of a polynomial kernel p(<q, k>), array-API generic.

With p(s) = sum_t a_t s^t and the multinomial expansion s^t = sum_{|m|=t} (t!/m!) q^m k^m,

    U1[i, m] = sqrt(|a_t| t!/m!) q_i^m,   U2[j, m] = sign(a_t) sqrt(|a_t| t!/m!) k_j^m   (t = |m|)

gives (U1 U2^T)[i, j] = p(<q_i, k_j>) exactly in exact arithmetic, with rank k = C(d+g, g)
(one column per multi-index, not d^t per degree as tensor powers would).  The sign of a_t sits on
the key side, so Chebyshev polynomials (coefficients of both signs) work unchanged.
"""

from __future__ import annotations

import functools
import itertools
import math
from fractions import Fraction

import array_api_compat

from .. import _xp
from ..derivations.polynomial import ExpPolynomial
from ..errors import InvalidInputError, InvalidTypeError
from .._validate import check_int


@functools.lru_cache(maxsize=256)
def _plan(d: int, degree: int):
    """Per degree t: the sorted index tuples (i_1 <= .. <= i_t) in lexicographic order, and for each
    the position of its parent (i_1..i_{t-1}) among degree t-1 and its last coordinate i_t."""
    levels = [[()]]
    steps = [((), ())]
    for t in range(1, degree + 1):
        position = {combo: n for n, combo in enumerate(levels[-1])}
        combos = list(itertools.combinations_with_replacement(range(d), t))
        steps.append((tuple(position[c[:-1]] for c in combos), tuple(c[-1] for c in combos)))
        levels.append(combos)
    return tuple(tuple(level) for level in levels), tuple(steps)


def monomial_exponents(d: int, degree: int) -> list[tuple[int, ...]]:
    """All multi-indices m in N^d with |m| <= degree: graded, lexicographic in the sorted index
    tuples within a degree.  This is the column order of `feature_maps`."""
    d = check_int("d", d, 1)
    degree = check_int("degree", degree, 0)
    levels, _ = _plan(d, degree)
    out = []
    for level in levels:
        for combo in level:
            m = [0] * d
            for i in combo:
                m[i] += 1
            out.append(tuple(m))
    return out


def feature_rank(d: int, degree: int) -> int:
    """Number of monomials of degree <= g in d variables: C(d+g, g)."""
    d = check_int("d", d, 1)
    degree = check_int("degree", degree, 0)
    return math.comb(d + degree, degree)


def paper_rank_bound(d: int, degree: int) -> int:
    """The rank bound C(2(g+d), 2g) of Alman-Song's low-rank lemma, as quoted by the paper."""
    d = check_int("d", d, 1)
    degree = check_int("degree", degree, 0)
    return math.comb(2 * (degree + d), 2 * degree)


@functools.lru_cache(maxsize=256)
def _scales(d: int, poly: ExpPolynomial):
    """Per degree t: (left, right) float scales of its monomial columns."""
    levels, _ = _plan(d, poly.degree)
    out = []
    for t, (level, a) in enumerate(zip(levels, poly.coefficients)):
        a = Fraction(a) if isinstance(a, (int, Fraction)) else Fraction(int(a.p), int(a.q))  # sympy
        sign = -1.0 if a < 0 else 1.0
        left, right = [], []
        for combo in level:
            weight = abs(a) * math.factorial(t)
            for count in _counts(combo):
                weight /= math.factorial(count)
            s = math.sqrt(float(weight))
            left.append(s)
            right.append(sign * s)
        out.append((tuple(left), tuple(right)))
    return tuple(out)


def _counts(combo):
    return [len(list(group)) for _, group in itertools.groupby(combo)]


def feature_scales(d: int, poly: ExpPolynomial) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(left, right) column scales: sqrt(|a_t| t!/m!) and sign(a_t) sqrt(|a_t| t!/m!)."""
    d = check_int("d", d, 1)
    if not isinstance(poly, ExpPolynomial):
        raise InvalidTypeError(f"poly must be an ExpPolynomial, got {type(poly).__name__}")
    per_degree = _scales(d, poly)
    return (
        tuple(s for left, _ in per_degree for s in left),
        tuple(s for _, right in per_degree for s in right),
    )


def _monomial_features(xp, X, steps, scales):
    """Scaled monomials of the rows of X, built degree by degree on whole arrays.

    Works on X^T (..., d, L) so that each gather takes whole contiguous rows (about twice as fast
    as gathering columns), and returns a transposed view of shape (..., L, k)."""
    device = array_api_compat.device(X)
    axis = X.ndim - 2
    XT = xp.matrix_transpose(X)
    prev = xp.ones(X.shape[:-2] + (1, X.shape[-2]), dtype=X.dtype, device=device)  # degree 0
    blocks = [prev * _column(xp, scales[0], X)]
    for (parents, coords), scale in zip(steps[1:], scales[1:]):
        # each degree-t monomial = its degree-(t-1) parent times its last coordinate
        parents = xp.asarray(parents, dtype=xp.int64, device=device)
        coords = xp.asarray(coords, dtype=xp.int64, device=device)
        prev = xp.take(prev, parents, axis=axis) * xp.take(XT, coords, axis=axis)
        blocks.append(prev * _column(xp, scale, X))
    out = xp.concat(blocks, axis=axis) if len(blocks) > 1 else blocks[0]
    return xp.matrix_transpose(out)


def _column(xp, values, like):
    """values as a (k, 1) column in like's dtype and device."""
    column = xp.asarray(values, dtype=like.dtype, device=array_api_compat.device(like))
    return xp.reshape(column, (len(values), 1))


def _check_arrays(xp, Q, K):
    names = {"Q": Q, "K": K}
    for name, X in names.items():
        dtype = _xp.dtype_name(xp, X.dtype)
        if dtype not in _xp.SUPPORTED_DTYPES:
            raise InvalidTypeError(f"{name} must have dtype float32 or float64, got {dtype}")
        if X.ndim < 2:
            raise InvalidInputError(f"{name} must have shape (..., L, d), got shape {tuple(X.shape)}")
    if Q.dtype != K.dtype:
        raise InvalidTypeError(
            f"Q and K must share a dtype, got Q {_xp.dtype_name(xp, Q.dtype)} "
            f"and K {_xp.dtype_name(xp, K.dtype)}"
        )
    if Q.ndim != K.ndim or Q.shape[:-2] != K.shape[:-2]:
        raise InvalidInputError(
            "Q and K must have the same leading (batch) dims, "
            f"got shapes {tuple(Q.shape)} and {tuple(K.shape)}"
        )
    if Q.shape[-1] != K.shape[-1]:
        raise InvalidInputError(f"Q and K must have the same last dim d, got {Q.shape[-1]} and {K.shape[-1]}")
    if Q.shape[-1] < 1:
        raise InvalidInputError("Q and K must have d >= 1 columns")
    for name, X in names.items():
        if not bool(xp.all(xp.isfinite(X))):
            raise InvalidInputError(f"{name} has non-finite entries")


def feature_maps(Q, K, poly: ExpPolynomial):
    """(U1, U2) of shapes (..., L, k) and (..., L_kv, k), k = C(d+g, g), with
    U1 @ U2^T = p(Q K^T) entrywise (up to rounding); same namespace, device and dtype as Q."""
    if not isinstance(poly, ExpPolynomial):
        raise InvalidTypeError(f"poly must be an ExpPolynomial, got {type(poly).__name__}")
    xp = _xp.namespace(Q=Q, K=K)
    _check_arrays(xp, Q, K)
    d = Q.shape[-1]
    _, steps = _plan(d, poly.degree)
    per_degree = _scales(d, poly)
    U1 = _monomial_features(xp, Q, steps, [left for left, _ in per_degree])
    U2 = _monomial_features(xp, K, steps, [right for _, right in per_degree])
    return U1, U2
