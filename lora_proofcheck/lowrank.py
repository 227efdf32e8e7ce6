"""The low-rank path: loss and weight gradients through the generated chained low-rank kernels.

Features U1, U2 with U1 U2^T = p(Q K^T) (Q = beta X W_Q, K = X' W_K, p ≈ exp) feed the chain of
`derivations/lowrank.py`; it returns EXACTLY the loss and gradients of the approximate softmax
F~ = diag(U1 U2^T 1)^-1 U1 U2^T (proved in `derivations/lowrank_proofs.py`) in O(N L k d^2) time
and O(N (L + L_kv) k + N L d^2) memory: no L x L_kv array is ever formed.  How close that is to
the exact gradient is the certificate's business (`derivations/certificate.py`): it holds when
every logit lies in [-R, R], R the polynomial's radius.
"""

from __future__ import annotations

from . import _xp
from .derivations.polynomial import ExpPolynomial
from .errors import InvalidInputError, InvalidTypeError
from .kernels import _generated_lowrank as gen
from .kernels.features import feature_maps
from .problem import MODULES, LoRAProblem


def check_modules(modules) -> str:
    """`modules` as the canonical subset string of "QKV" (e.g. "VQ" -> "QV")."""
    if not isinstance(modules, str):
        raise InvalidTypeError(f"modules must be a string over 'Q', 'K', 'V', got {type(modules).__name__}")
    if not modules or any(m not in MODULES for m in modules) or len(set(modules)) != len(modules):
        raise InvalidInputError(
            f"modules must be a non-empty string of distinct 'Q', 'K', 'V', got {modules!r}")
    return "".join(m for m in MODULES if m in modules)


def _check_features(problem: LoRAProblem, features):
    if not isinstance(features, (tuple, list)) or len(features) != 2:
        raise InvalidTypeError("features must be a pair (U1, U2) of arrays")
    U1, U2 = features
    xp = _xp.namespace(U1=U1, U2=U2, X=problem.X3)  # mixed libraries raise, naming the arrays
    for name, U in (("U1", U1), ("U2", U2)):
        if U.dtype != problem.dtype:
            raise InvalidTypeError(f"{name} has dtype {_xp.dtype_name(xp, U.dtype)}, the problem "
                                   f"{problem.dtype_name}")
    # an unbatched problem takes (L, k) features, or the (1, L, k) ones `problem_features` returns
    lead = (problem.N,) if problem.batched or U1.ndim == 3 else ()
    if U1.ndim != len(lead) + 2 or U2.ndim != len(lead) + 2:
        raise InvalidInputError(f"U1 and U2 must have shapes {lead + ('L', 'k')} and {lead + ('L_kv', 'k')}, "
                                f"got {tuple(U1.shape)} and {tuple(U2.shape)}")
    k = U1.shape[-1]
    if tuple(U1.shape) != lead + (problem.L, k) or k < 1:
        raise InvalidInputError(f"U1 must have shape {lead + (problem.L, 'k')}, got {tuple(U1.shape)}")
    if tuple(U2.shape) != lead + (problem.L_kv, k):
        raise InvalidInputError(f"U2 must have shape {lead + (problem.L_kv, k)} (same rank k as U1), "
                                f"got {tuple(U2.shape)}")
    for name, U in (("U1", U1), ("U2", U2)):
        if not bool(xp.all(xp.isfinite(U))):
            raise InvalidInputError(f"{name} contains NaN or infinite entries")
    if not lead:
        U1, U2 = U1[None, ...], U2[None, ...]
    return U1, U2


def problem_features(problem: LoRAProblem, poly: ExpPolynomial):
    """(U1, U2) of shapes (N, L, k), (N, L_kv, k): monomial features of beta X W_Q and X' W_K."""
    if not isinstance(poly, ExpPolynomial):
        raise InvalidTypeError(f"poly must be an ExpPolynomial, got {type(poly).__name__}")
    W = problem.weights()
    return feature_maps(problem.beta * (problem.X3 @ W["Q"]), problem.Xkv3 @ W["K"], poly)


def lowrank_weight_gradients(problem: LoRAProblem, poly, modules: str, *, features=None):
    """Batch-mean loss (0-d array) and {mu: dL/dW_mu} of the approximate softmax, for `modules`.

    Same contract as `exact.weight_gradients`. `features` = (U1, U2) replaces the polynomial
    features (then `poly` is not used and may be None); shapes (N, L, k), (N, L_kv, k) (as
    `problem_features` returns them), or (L, k), (L_kv, k) for an unbatched problem.
    """
    if not isinstance(problem, LoRAProblem):
        raise InvalidTypeError(f"problem must be a LoRAProblem, got {type(problem).__name__}")
    modules = check_modules(modules)
    if features is None:
        U1, U2 = problem_features(problem, poly)
    else:
        if poly is not None and not isinstance(poly, ExpPolynomial):
            raise InvalidTypeError(f"poly must be an ExpPolynomial or None, got {type(poly).__name__}")
        U1, U2 = _check_features(problem, features)
    W = problem.weights()
    kernel = getattr(gen, f"lowrank_gradients_{modules}")
    out = kernel(U1, U2, problem.X3, problem.Xkv3, W["Q"], W["K"], W["V"], problem.Y3, problem.beta)
    xp, n = problem.xp, problem.N
    return xp.sum(out["loss"], axis=0) / n, {m: xp.sum(out[f"dW_{m}"], axis=0) / n for m in modules}
