"""The low-rank path: loss and weight gradients through the generated fused low-rank kernels.

Features U1, U2 with U1 U2^T = p(Q K^T) (Q = beta X W_Q, K = X' W_K, p ≈ exp) feed the chain of
`derivations/lowrank_chain.py`; it returns the loss of the approximate softmax
F~ = diag(U1 U2^T 1)^-1 U1 U2^T and EXACTLY the gradient formulas of the exact path evaluated at F~
(the plug-in gradient, proved in `derivations/lowrank_proofs.py`; not the derivative of the
approximate loss) in O(N L k d^2) time.
How close that is to the exact gradient is the certificate's business (`certification/certificate.py`):
it holds when every logit lies in [-R, R], R the polynomial's radius.

The chain runs as its three generated row passes (key moments, query pass, key pass), each over
row chunks whose features are built, used by two GEMMs and dropped: the L x k features never
exist whole, so memory is O(workers N chunk k + N L d^2) and a chunk's features stay in cache
while its GEMMs read them (measured at L = 16384, d = 8, g = 5: 3x faster than whole arrays).
"""

from __future__ import annotations

import array_api_compat
import numpy as np

from .._lib import xp as _xp
from .._lib.blocks import LOWRANK_CHUNKS, chunk_runner, recycle_block_memory, worker_threads
from .._lib.validate import check_modules
from ..certification.polynomial import ExpPolynomial
from ..errors import InvalidInputError, InvalidTypeError
from ..kernels import _generated_lowrank as gen
from ..kernels.features import check_feature_inputs, feature_maps, feature_rank, plan_features, side_features
from ..problem import LoRAProblem, check_problem
from . import costs

__all__ = ["chunk_rows", "lowrank_weight_gradients", "plan_feature_functions", "plan_weight_gradients",
           "problem_features"]


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


def chunk_rows(problem: LoRAProblem, k: int, rows="auto") -> int:
    """Rows per chunk: "auto" (`_lib.blocks.LOWRANK_CHUNKS` bytes of features per chunk) or an int."""
    if rows == "auto":
        itemsize = 4 if problem.dtype_name == "float32" else 8
        return LOWRANK_CHUNKS.rows(itemsize * problem.N * k)
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise InvalidInputError(f"chunk_rows must be 'auto' or a positive int, got {rows!r}")
    return rows


_rows_per_chunk = chunk_rows  # for the functions whose chunk_rows argument shadows it


def chunked_bytes(problem: LoRAProblem, k: int, modules: str, *, rows: int | None = None, threads=None) -> int:
    """A model of the chunked path's peak bytes at rank k: every worker thread holds one chunk's
    live set (`costs.lowrank_bytes` at `rows` rows, its k-wide moments Vq / Vk included) and the
    running sums hold one more. (Checked against tracemalloc in tests/gradients.)"""
    rows = chunk_rows(problem, k) if rows is None else rows
    n = min(rows, max(problem.L, problem.L_kv))
    workers = min(worker_threads(problem.xp, threads), -(-max(problem.L, problem.L_kv) // n))
    itemsize = 4 if problem.dtype_name == "float32" else 8
    per = costs.lowrank_bytes(n, min(n, problem.L_kv), problem.d, k, modules, N=problem.N, itemsize=itemsize)
    return int((workers + 1) * per)


def lowrank_weight_gradients(problem: LoRAProblem, poly, modules: str, *, features=None, chunk_rows="auto",
                             threads=None):
    """Batch-mean loss (0-d array) of the approximate softmax and {mu: dL/dW_mu} (exact formulas at F~), for `modules`.

    Same contract as `exact_path.weight_gradients`. `features` = (U1, U2) replaces the polynomial
    features (then `poly` is not used and may be None) and runs the whole chain in one call; shapes
    (N, L, k), (N, L_kv, k) (as `problem_features` returns them), or (L, k), (L_kv, k) for an
    unbatched problem.  Otherwise the features of `poly` are built chunk by chunk (`chunk_rows`:
    "auto" or rows per chunk) on `threads` threads (None: the BLAS's thread count; see `exact_path`).
    """
    check_problem(problem)
    modules = check_modules(modules)
    if features is not None:
        if poly is not None and not isinstance(poly, ExpPolynomial):
            raise InvalidTypeError(f"poly must be an ExpPolynomial or None, got {type(poly).__name__}")
        U1, U2 = _check_features(problem, features)
        W = problem.weights()
        kernel = getattr(gen, f"lowrank_gradients_{modules}")
        out = kernel(U1, U2, problem.X3, problem.Xkv3, W["Q"], W["K"], W["V"], problem.Y3, problem.beta,
                     problem.normalizer_offset)
    else:
        if not isinstance(poly, ExpPolynomial):
            raise InvalidTypeError(f"poly must be an ExpPolynomial, got {type(poly).__name__}")
        out = _chunked_chain(problem, poly, modules, chunk_rows, threads)
    xp, n = problem.xp, problem.N
    return xp.sum(out["loss"], axis=0) / n, {m: xp.sum(out[f"dW_{m}"], axis=0) / n for m in modules}


def _chunked_chain(problem: LoRAProblem, poly, modules, rows, threads) -> dict:
    """The three row passes over chunks with the polynomial's features of beta X W_Q and X' W_K."""
    xp, W = problem.xp, problem.weights()
    Q, K = problem.beta * (problem.X3 @ W["Q"]), problem.Xkv3 @ W["K"]
    check_feature_inputs(xp, Q, K)
    rows = chunk_rows(problem, feature_rank(problem.d, poly.degree), rows)
    return _row_passes(problem, modules, rows, threads,
                       query_features=lambda q: side_features(xp, Q[:, q, :], poly, False),
                       key_features=lambda k: side_features(xp, K[:, k, :], poly, True))


def _row_passes(problem: LoRAProblem, modules, rows, threads, *, query_features, key_features) -> dict:
    """The generated row passes (key moments, query pass, key pass) over chunks of `rows` rows,
    features built per chunk by query_features(slice) / key_features(slice): per-sample loss and
    dW (summed over rows, not batch)."""
    xp, W, beta = problem.xp, problem.weights(), problem.beta
    X, Xkv, Y = problem.X3, problem.Xkv3, problem.Y3
    workers = worker_threads(xp, threads)
    if rows < max(problem.L, problem.L_kv):
        recycle_block_memory(xp)  # chunk temporaries recycled in the heap, not page-faulted in afresh

    def keys(s):  # the array API allows no out-of-bounds slice stops
        return slice(s, min(s + rows, problem.L_kv))

    def queries(s):
        return slice(s, min(s + rows, problem.L))

    def pass_(phase):
        return getattr(gen, f"lowrank_{phase}_{modules}")

    key_moments, query_pass = pass_("key_moments"), pass_("query_pass")
    with chunk_runner(workers, max(problem.L, problem.L_kv), rows) as sums:
        Vq = sums(lambda s: key_moments(key_features(keys(s)), Xkv[:, keys(s), :], W["K"], W["V"]),
                  problem.L_kv)["Vq"]
        out = sums(lambda s: query_pass(query_features(queries(s)), Vq, X[:, queries(s), :], W["Q"],
                                        Y[:, queries(s), :], beta, problem.normalizer_offset), problem.L)
        if "K" in modules or "V" in modules:
            Vk, key_pass = out.pop("Vk"), pass_("key_pass")
            out.update(sums(lambda s: key_pass(key_features(keys(s)), Vk, Xkv[:, keys(s), :], W["V"], beta),
                            problem.L_kv))
    return out


def plan_weight_gradients(problem: LoRAProblem, plan, modules: str, *, chunk_rows="auto", threads=None):
    """Batch-mean loss and {mu: dL/dW_mu} of the row-adaptive approximate softmax.

    The same generated row passes as `lowrank_weight_gradients`, fed with the features a
    `certification.adaptive.FeaturePlan` prescribes: centred, balanced, key-weighted, with
    per-row coefficients (`certification/adaptive.py`, R1).  The generated passes take U1, U2 as
    inputs and use only U1 U2^T, so `derivations/lowrank_proofs.py` still applies:
    U1 U2^T = w_j p_{c(i)}(q'_i . k'_j) and F~ = diag(U1 U2^T 1 + n)^-1 U1 U2^T.  `chunk_rows` must
    be what the certificate's floor was given (`approx_gradients` passes the same rows to both).
    """
    check_problem(problem)
    modules = check_modules(modules)
    query_features, key_features = plan_feature_functions(problem, plan)
    rows = _rows_per_chunk(problem, feature_rank(problem.d, plan.degree), chunk_rows)
    xp, N = problem.xp, problem.N
    out = _row_passes(problem, modules, rows, threads, query_features=query_features, key_features=key_features)
    return xp.sum(out["loss"], axis=0) / N, {m: xp.sum(out[f"dW_{m}"], axis=0) / N for m in modules}


def plan_feature_functions(problem: LoRAProblem, plan):
    """(query_features, key_features): the row chunk's features U1 = query_features(slice) and
    U2 = key_features(slice) a `FeaturePlan` prescribes, as `plan_weight_gradients` feeds them to
    the row passes (also what `benchmarks` times the contractions on)."""
    xp, W, beta = problem.xp, problem.weights(), problem.beta
    dev = array_api_compat.device(problem.X3)
    host = np.float32 if problem.dtype_name == "float32" else np.float64

    def cast(a):
        return _xp.from_numpy(np.asarray(a, dtype=host), xp, device=dev)

    g = plan.degree
    s = cast(plan.s)[:, None, None]
    # (G1-G3) centre, then balance by the power of two s (exact); the order the geometry encloses
    Qc = (beta * (problem.X3 @ W["Q"]) - cast(plan.n)) / s
    Kc = (problem.Xkv3 @ W["K"] - cast(plan.m)) * s
    check_feature_inputs(xp, Qc, Kc)
    coef = cast(plan.coefficients)                                            # (C, g+1)
    cls = _xp.from_numpy(np.asarray(plan.cls, dtype=np.int64), xp, device=dev)  # (N, L)
    wts = None if plan.weights is None else cast(plan.weights)[:, None, :]   # (N, 1, L_kv)
    N = problem.N

    def query_features(q):
        c = xp.take(coef, xp.reshape(cls[:, q], (-1,)), axis=0)               # (N n, g+1)
        c = xp.permute_dims(xp.reshape(c, (N, c.shape[0] // N, g + 1)), (0, 2, 1))  # (N, g+1, n)
        return plan_features(xp, Qc[:, q, :], g, row_coefficients=c)

    def key_features(k):
        return plan_features(xp, Kc[:, k, :], g, row_weights=None if wts is None else wts[:, :, k])

    return query_features, key_features
