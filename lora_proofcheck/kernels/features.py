"""Symmetric monomial feature maps of a polynomial kernel p(<q, k>), array-API generic.

With p(s) = sum_t a_t s^t and the multinomial expansion s^t = sum_{|m|=t} (t!/m!) q^m k^m,

    U1[i, m] = sqrt(|a_t| t!/m!) q_i^m,   U2[j, m] = sign(a_t) sqrt(|a_t| t!/m!) k_j^m   (t = |m|)

gives (U1 U2^T)[i, j] = p(<q_i, k_j>) exactly in exact arithmetic, with rank k = C(d+g, g)
(one column per multi-index, not d^t per degree as tensor powers would).  The sign of a_t sits on
the key side, so Chebyshev polynomials (coefficients of both signs) work unchanged.

Column order ("colex"): graded by degree t; within degree t, grouped by the largest variable i
of the monomial, i = 0..d-1, and group i is (the degree-(t-1) monomials over variables 0..i,
in their own order) times x_i.  Since degree t-1 is itself grouped by largest variable, those
monomials are the PREFIX of length C(i+t-1, t-1) of the degree-(t-1) block, so every block is
`prev[:m] * x_i` on contiguous rows of the (..., k, L) layout: no gathers; each entry is written
once by the recurrence and scaled once in place (NumPy / CuPy), then returned transposed (..., L, k).

The vector-Jacobian product (`monomial_vjp`, for the model gradient of `gradients/peers.py`) runs
the recurrence's blocks backwards, highest degree first: with g = scale ∘ G^T (the upstream
gradient dl/dU, as (..., k, L)),

    g[src:src+m] += g[dst:dst+m] * x_i,      g[1 + i] += sum_u g[dst + u] * mono[src + u],

and dl/dx_i = g[1 + i] at the end (degree-1 rows are x itself).  A level reads only its own degree's
gradients and writes lower degrees', so its blocks may go in any order; O(k L) work and memory.
Checked exact on symbols with free column scales (tests/kernels/test_features.py).
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import array_api_compat

from .._lib import xp as _xp
from .._lib.validate import check_int
from ..errors import InvalidInputError, InvalidTypeError

__all__ = ["check_feature_inputs", "feature_maps", "feature_rank", "feature_scales", "features_and_monomials",
           "key_features", "monomial_exponents", "monomial_vjp", "paper_rank_bound", "query_features",
           "side_features", "side_vjp"]

# ----------------------------------------------------------------------------------------------
# the colex order and its plan


@functools.lru_cache(maxsize=256)
def _exponents(d: int, degree: int) -> tuple[tuple[tuple[int, ...], ...], ...]:
    """Per degree t: its multi-indices in colex order (the module docstring's recurrence)."""
    levels = [((0,) * d,)]
    for t in range(1, degree + 1):
        prev = levels[-1]
        levels.append(tuple(
            m[:i] + (m[i] + 1,) + m[i + 1:]
            for i in range(d)
            for m in prev[: math.comb(i + t - 1, t - 1)]
        ))
    return tuple(levels)


@functools.lru_cache(maxsize=256)
def _plan(d: int, degree: int) -> tuple[tuple[tuple[int, int, int, int], ...], ...]:
    """Per degree t >= 2 and variable i: (dst, src, m, row) meaning rows [dst, dst+m) of the
    (k, L) feature array = rows [src, src+m) (the prefix of degree t-1) times row `row` (x_i).

    Degree t starts at row C(d+t-1, t-1) (the count of monomials of degree < t), and group i
    at C(i+t-1, t) further on (hockey stick: sum_{j<i} C(j+t-1, t-1) = C(i+t-1, t))."""
    return tuple(
        tuple(
            (math.comb(d + t - 1, t - 1) + math.comb(i + t - 1, t), math.comb(d + t - 2, t - 2),
             math.comb(i + t - 1, t - 1), 1 + i)
            for i in range(d)
        )
        for t in range(2, degree + 1)
    )


def monomial_exponents(d: int, degree: int) -> list[tuple[int, ...]]:
    """All multi-indices m in N^d with |m| <= degree: graded, colex within a degree (grouped by
    the largest variable; each group a prefix of the previous degree times that variable).
    This is the column order of `feature_maps`, `query_features` and `key_features`."""
    d = check_int("d", d, 1)
    degree = check_int("degree", degree, 0)
    return [m for level in _exponents(d, degree) for m in level]


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


# ----------------------------------------------------------------------------------------------
# column scales


@functools.lru_cache(maxsize=256)
def _scales(d: int, poly) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(left, right) float scales of the columns, in colex order."""
    left, right = [], []
    for t, (level, a) in enumerate(zip(_exponents(d, poly.degree), poly.coefficients)):
        a = Fraction(a) if isinstance(a, (int, Fraction)) else Fraction(int(a.p), int(a.q))  # sympy
        sign = -1.0 if a < 0 else 1.0
        for m in level:
            # exact t!/m! before the one rounding in float()
            s = math.sqrt(float(abs(a) * math.factorial(t) / math.prod(math.factorial(c) for c in m)))
            left.append(s)
            right.append(sign * s)
    return tuple(left), tuple(right)


def feature_scales(d: int, poly) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(left, right) column scales sqrt(|a_t| t!/m!) and sign(a_t) sqrt(|a_t| t!/m!), in the
    colex order of `monomial_exponents`."""
    d = check_int("d", d, 1)
    _check_poly(poly)
    return _scales(d, poly)


@functools.lru_cache(maxsize=64)
def _cached_column(xp, d: int, poly, key: bool, dtype, device):
    values = _scales(d, poly)[1 if key else 0]
    return xp.reshape(xp.asarray(values, dtype=dtype, device=device), (len(values), 1))


def _scale_column(xp, X, poly, key: bool):
    """The (k, 1) scale column for X's d, dtype and device (cached where those are hashable)."""
    args = (xp, X.shape[-1], poly, key, X.dtype, array_api_compat.device(X))
    try:
        return _cached_column(*args)
    except TypeError:  # an unhashable device or dtype: build it uncached
        return _cached_column.__wrapped__(*args)


# ----------------------------------------------------------------------------------------------
# the recurrence, on (..., k, L) arrays


def _fill(xp, X, plan, scale, out=None):
    """NumPy / CuPy: write every block into one (..., k, L) array (`out`, or a new one) with out=."""
    d, k = X.shape[-1], scale.shape[0]
    if out is None:
        out = xp.empty(X.shape[:-2] + (k, X.shape[-2]), dtype=X.dtype, device=array_api_compat.device(X))
    out[..., 0, :] = 1
    if k > 1:
        out[..., 1:d + 1, :] = xp.matrix_transpose(X)  # degree 1; its rows are the x_i below
    for level in plan:
        for dst, src, m, row in level:
            xp.multiply(out[..., src:src + m, :], out[..., row:row + 1, :], out=out[..., dst:dst + m, :])
    xp.multiply(out, scale, out=out)  # scales last: the recurrence needs unscaled parents
    return out


def _stack(xp, X, plan, scale, out=None):
    """Any array-API namespace: the same products (so the same roundings), one concat per degree;
    `out` is ignored (the standard has no out=)."""
    XT = xp.matrix_transpose(X)
    blocks = [xp.ones(X.shape[:-2] + (1, X.shape[-2]), dtype=X.dtype, device=array_api_compat.device(X))]
    if scale.shape[0] > 1:
        blocks.append(XT)
    prev = XT
    for level in plan:
        prev = xp.concat([prev[..., :m, :] * XT[..., row - 1:row, :] for _, _, m, row in level], axis=-2)
        blocks.append(prev)
    out = xp.concat(blocks, axis=-2) if len(blocks) > 1 else blocks[0]
    return out * scale


def side_features(xp, X, poly, key: bool, out=None):
    """UNVALIDATED features of the rows of X (..., L, d) -> (..., L, k), a transposed view of a
    (..., k, L) array: right (signed) scales if `key`, else left.  For callers that validated
    once and call per chunk; `query_features` / `key_features` are the checked entry points, `check_feature_inputs`
    the checks they run.

    `out`: optional (..., k, L) array of X's dtype and device (C-contiguous for speed) to reuse
    across chunks, NumPy / CuPy only (ignored elsewhere); the result is then a view of it.  Reuse
    saves allocating and first-touching a fresh array per chunk."""
    plan = _plan(X.shape[-1], poly.degree)
    scale = _scale_column(xp, X, poly, key)
    fast = array_api_compat.is_numpy_namespace(xp) or array_api_compat.is_cupy_namespace(xp)
    return xp.matrix_transpose((_fill if fast else _stack)(xp, X, plan, scale, out))


# ----------------------------------------------------------------------------------------------
# validated entry points


def _check_array(xp, name, X):
    """dtype and (..., L, d) shape of one feature input."""
    dtype = _xp.dtype_name(xp, X.dtype)
    if dtype not in _xp.SUPPORTED_DTYPES:
        raise InvalidTypeError(f"{name} must have dtype float32 or float64, got {dtype}")
    if X.ndim < 2:
        raise InvalidInputError(f"{name} must have shape (..., L, d), got shape {tuple(X.shape)}")


def _check_finite(xp, name, X):
    if not bool(xp.all(xp.isfinite(X))):
        raise InvalidInputError(f"{name} has non-finite entries")


def check_feature_inputs(xp, Q, K):
    names = {"Q": Q, "K": K}
    for name, X in names.items():
        _check_array(xp, name, X)
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
        _check_finite(xp, name, X)


def _check_poly(poly):
    """A polynomial as `certification.polynomial` makes them (an `ExpPolynomial`): an integer `degree`
    and exact rational `coefficients` a_0..a_g. Duck-typed, so the kernels import nothing above them."""
    coefficients = getattr(poly, "coefficients", None)
    degree = getattr(poly, "degree", None)
    if not isinstance(degree, int) or not isinstance(coefficients, tuple) or len(coefficients) != degree + 1:
        raise InvalidTypeError("poly must be a polynomial with an int `degree` and a tuple of `degree + 1` "
                               f"exact `coefficients` (an ExpPolynomial), got {type(poly).__name__}")


def _checked_side(name, X, poly, key):
    _check_poly(poly)
    xp = _xp.namespace(**{name: X})
    _check_array(xp, name, X)
    if X.shape[-1] < 1:
        raise InvalidInputError(f"{name} must have d >= 1 columns")
    _check_finite(xp, name, X)
    return side_features(xp, X, poly, key)


def query_features(Q, poly):
    """U1 (..., L, k): left-scaled monomial features sqrt(|a_t| t!/m!) q^m of the rows of Q,
    columns in `monomial_exponents` order; same namespace, device and dtype as Q."""
    return _checked_side("Q", Q, poly, key=False)


def key_features(K, poly):
    """U2 (..., L_kv, k): sign-carrying features sign(a_t) sqrt(|a_t| t!/m!) k^m of the rows of K,
    so that query_features(Q) @ key_features(K)^T = p(Q K^T)."""
    return _checked_side("K", K, poly, key=True)


def feature_maps(Q, K, poly):
    """(U1, U2) of shapes (..., L, k) and (..., L_kv, k), k = C(d+g, g), with
    U1 @ U2^T = p(Q K^T) entrywise (up to rounding); same namespace, device and dtype as Q."""
    _check_poly(poly)
    check_feature_inputs(_xp.namespace(Q=Q, K=K), Q, K)  # the cross-argument checks; each side rechecks itself
    return query_features(Q, poly), key_features(K, poly)


# ----------------------------------------------------------------------------------------------
# the vector-Jacobian product (the recurrence backwards)


def _ones_column(xp, X, k):
    return xp.ones((k, 1), dtype=X.dtype, device=array_api_compat.device(X))


def _unscaled(xp, X, plan, k):
    """The unscaled monomials (..., k, L) of X (the recurrence's own layout)."""
    fast = array_api_compat.is_numpy_namespace(xp) or array_api_compat.is_cupy_namespace(xp)
    return (_fill if fast else _stack)(xp, X, plan, _ones_column(xp, X, k))


def features_and_monomials(xp, X, poly, key: bool):
    """UNVALIDATED (U (..., L, k), mono (..., k, L)): the features of `side_features` and the unscaled
    monomials `side_vjp` reuses (one recurrence per chunk instead of two)."""
    plan = _plan(X.shape[-1], poly.degree)
    scale = _scale_column(xp, X, poly, key)
    mono = _unscaled(xp, X, plan, scale.shape[0])
    return xp.matrix_transpose(mono * scale), mono


def side_vjp(xp, X, G, poly, key: bool, mono=None, scale=None):
    """UNVALIDATED dl/dX (..., L, d) of l = sum(G ∘ U), U = side_features(xp, X, poly, key), G (..., L, k).

    `mono`: the unscaled monomials (..., k, L) when the caller has them (`features_and_monomials`);
    `scale`: a (k, 1) column replacing the polynomial's column scales (the symbolic check passes free
    symbols)."""
    plan = _plan(X.shape[-1], poly.degree)
    scale = _scale_column(xp, X, poly, key) if scale is None else scale
    d, k = X.shape[-1], scale.shape[0]
    if k == 1:  # degree 0: constant features
        return xp.zeros_like(X)
    mono = _unscaled(xp, X, plan, k) if mono is None else mono
    g = xp.matrix_transpose(G) * scale  # a fresh (..., k, L) array, accumulated in place below
    fast = array_api_compat.is_numpy_namespace(xp) or array_api_compat.is_cupy_namespace(xp)
    for level in reversed(plan):
        for dst, src, m, row in level:
            gd = g[..., dst:dst + m, :]
            if fast:  # column dot products without the (m, L) temporary (2x faster than * and sum)
                g[..., row, :] += xp.einsum("...ul,...ul->...l", gd, mono[..., src:src + m, :])
            else:
                g[..., row, :] += xp.sum(gd * mono[..., src:src + m, :], axis=-2)
            g[..., src:src + m, :] += gd * mono[..., row:row + 1, :]
    return xp.matrix_transpose(g[..., 1:d + 1, :])


def monomial_vjp(X, G, poly, *, key: bool = False):
    """Vector-Jacobian product of the monomial features: dl/dX (..., L, d) for l = sum(G ∘ U),
    G = dl/dU (..., L, k), U = query_features(X, poly) (key=False) or key_features(X, poly) (key=True)."""
    _check_poly(poly)
    xp = _xp.namespace(X=X, G=G)
    _check_array(xp, "X", X)
    k = math.comb(X.shape[-1] + poly.degree, poly.degree)
    if tuple(G.shape) != tuple(X.shape[:-1]) + (k,):
        raise InvalidInputError(f"G must have shape {tuple(X.shape[:-1]) + (k,)} (X's rows, rank k), "
                                f"got {tuple(G.shape)}")
    if G.dtype != X.dtype:
        raise InvalidTypeError("X and G must share a dtype")
    _check_finite(xp, "X", X)
    _check_finite(xp, "G", G)
    return side_vjp(xp, X, G, poly, key)


# ----------------------------------------------------------------------------------------------
# row-adaptive features (derivations/adaptive.py, R1): balanced inputs, per-row coefficients, key weights


@functools.lru_cache(maxsize=64)
def _sigma_values(d: int, degree: int) -> tuple[float, ...]:
    """sigma_m = 1/sqrt(m!) per column (colex order): fl(sqrt(fl(1/m!))), two roundings."""
    return tuple(math.sqrt(float(Fraction(1, math.prod(math.factorial(c) for c in m))))
                 for level in _exponents(d, degree) for m in level)


def degree_blocks(d: int, degree: int) -> tuple[tuple[int, int], ...]:
    """[start, stop) of each degree t = 0..g in the colex column order: C(d+t-1, t-1), C(d+t, t)."""
    return tuple((math.comb(d + t - 1, t - 1) if t else 0, math.comb(d + t, t)) for t in range(degree + 1))


def plan_features(xp, Xc, degree: int, *, row_coefficients=None, row_weights=None, out=None):
    """UNVALIDATED row-adaptive features of the balanced, centred rows Xc (..., n, d) -> (..., n, k):
    sigma_m Xc^m times, per row, its degree-t coefficient (`row_coefficients` (..., g+1, n): the
    query side U1) or its weight (`row_weights` (..., 1, n): the key side U2).  Then
    U1 U2^T = w_j sum_t a_{c(i),t} (q'_i . k'_j)^t exactly in exact arithmetic (adaptive.py, R1).
    The monomials are built unscaled from the balanced inputs (the balance keeps them in range),
    so every entry is the recurrence's product times sigma_m times one row factor."""
    d = Xc.shape[-1]
    plan = _plan(d, degree)
    sig = _sigma_column(xp, d, degree, Xc.dtype, array_api_compat.device(Xc))
    fast = array_api_compat.is_numpy_namespace(xp) or array_api_compat.is_cupy_namespace(xp)
    F = (_fill if fast else _stack)(xp, Xc, plan, sig, out)                     # (..., k, n)
    if row_weights is not None:
        if fast:
            xp.multiply(F, row_weights, out=F)
        else:
            F = F * row_weights
    if row_coefficients is not None:
        blocks = degree_blocks(d, degree)
        if fast:
            for t, (a, b) in enumerate(blocks):
                xp.multiply(F[..., a:b, :], row_coefficients[..., t:t + 1, :], out=F[..., a:b, :])
        else:
            F = xp.concat([F[..., a:b, :] * row_coefficients[..., t:t + 1, :] for t, (a, b) in enumerate(blocks)],
                          axis=-2)
    return xp.matrix_transpose(F)


@functools.lru_cache(maxsize=64)
def _sigma_cached(xp, d, degree, dtype, device):
    vals = _sigma_values(d, degree)
    return xp.reshape(xp.asarray(vals, dtype=dtype, device=device), (len(vals), 1))


def _sigma_column(xp, d, degree, dtype, device):
    try:
        return _sigma_cached(xp, d, degree, dtype, device)
    except TypeError:
        return _sigma_cached.__wrapped__(xp, d, degree, dtype, device)
