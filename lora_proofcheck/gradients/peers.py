"""`peer_gradients`: LoRA gradients through the approximations practitioners use, in two modes.

Two different "approximate gradients" exist for one approximate attention E~ ≈ exp(S):

* the PLUG-IN gradient (``mode="plugin"``): the exact gradient formulas evaluated at
  F~ = diag(E~ 1 + n)^-1 E~. This is what the paper's chain computes (`lowrank_path`; proved in
  `derivations/lowrank_proofs.py`).
* the MODEL gradient (``mode="model"``): the derivative of the approximate loss itself, what
  training through a linear-attention approximation computes (autograd through the approximate
  forward pass). For an entrywise kernel E~ = P(S) the softmax Jacobian carries P'(S) where the
  plug-in carries P(S); `derivations/peer_proofs.py` proves the generated kernels are this
  derivative and that the plug-in chain is not.

Both share the forward pass (the same loss) and dL/dW_V, hence dL/dA_V and dL/dB_V (proved).

Methods (the frozen approximation is `PeerKernel`, built by `peer_kernel`):

taylor          the project's monomial features of the degree-g Taylor polynomial (g = 2 is BASED's
                and JamesSand/MultiLayer's kernel 1 + s + s²/2), rank C(d+g, g)
chebyshev       the same features of the Chebyshev interpolant of exp on [-R, R], R the Cauchy-Schwarz
                bound of the logits (`cauchy_schwarz_radius`: it covers every logit)
favor+          Performer's positive orthogonal random features (`features` of them, 256 by default,
                drawn from `seed`) of the balanced q = sgn(beta) |beta|^½ C1, k = |beta|^½ C2 (q k^T = S),
                with Performer's stabilisers (row max for queries, max over all rows for keys)
support-basis   the large-entry hybrid (yinj66/support_basis), exact variant: query / key rows with a
                balanced entry above `threshold` get exact exp(S) for their whole row / column, the
                rest a degree-g (default 3) Chebyshev interpolant on [-B, B], B = max ||Q_i|| max ||K_j||
                over the small rows.  Default threshold: at most ceil(sqrt(L)) exact rows per side, so
                the exact part stays O(L^1.5 d^2)

In model mode the approximation's data-dependent choices (coefficients, radius, random directions,
large-entry masks) are frozen, as autograd sees them: they are computed outside the graph.
Dispatch: taylor / chebyshev model gradients run route (a) of `derivations/peers.py` (the low-rank
loss backward, chunked, then the monomial VJP); FAVOR+ route (a) with its generated VJP; the support
basis route (b) (the plug-in chain with features of P').

Softmax_1 (``normalizer_offset`` n > 0): both chains add n to alpha~ exactly, so taylor and chebyshev
support it in both modes.  FAVOR+'s stabilisers and the support basis's row scalings rescale rows
of E~, which n does not follow (their gradient is n r~/alpha~, proved), so those two methods refuse
n > 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._lib import xp as _xp
from .._lib.blocks import chunk_runner, recycle_block_memory, worker_threads
from .._lib.validate import check_choice, check_int, check_modules, check_optional_int, check_positive
from ..certification.polynomial import (
    MAX_RADIUS,
    ExpPolynomial,
    derivative_polynomial,
    exp_polynomial,
    uncertified_taylor,
)
from ..errors import InvalidInputError, InvalidTypeError, ProofcheckError
from ..kernels import _generated_peers as gen
from ..kernels import peer_features as pf
from ..kernels.features import (
    check_feature_inputs,
    feature_maps,
    feature_rank,
    features_and_monomials,
    side_features,
    side_vjp,
)
from ..problem import LoRAProblem, check_problem
from .exact_path import lora_factor_gradients
from .lowrank_path import chunk_rows, lowrank_weight_gradients

__all__ = ["DEFAULT_DEGREE", "DEFAULT_FEATURES", "METHODS", "MODES", "ROUTES", "PeerKernel", "balanced_projections",
           "cauchy_schwarz_radius", "peer_gradients", "peer_kernel", "peer_weight_gradients"]

METHODS = ("taylor", "chebyshev", "favor+", "support-basis")
MODES = ("plugin", "model")
ROUTES = ("auto", "vjp", "derivative")
DEFAULT_DEGREE = {"taylor": 2, "chebyshev": 2, "support-basis": 3}
DEFAULT_FEATURES = 256
#: methods whose row rescalings (stabilisers) the Softmax_1 offset does not follow
ROW_SCALED = ("favor+", "support-basis")


@dataclass(frozen=True, eq=False)  # holds arrays: identity, not elementwise ==
class PeerKernel:
    """One frozen approximation E~ ≈ exp(S) for one problem (what the oracles re-evaluate).

    poly        the polynomial of taylor / chebyshev / support-basis (its small part)
    omega       FAVOR+ directions (m, d), host float64
    threshold   support-basis entry threshold; rows (N, L), cols (N, L_kv) its large-row masks
    """

    method: str
    d: int
    poly: ExpPolynomial | None = None
    omega: np.ndarray | None = None
    threshold: float | None = None
    rows: np.ndarray | None = None
    cols: np.ndarray | None = None
    seed: int = 0

    @property
    def rank(self) -> int:
        """Feature count k of E~ = U1 U2^T (support-basis: of the polynomial part, plus the exact
        rows and columns of the largest sample)."""
        if self.omega is not None:
            return int(self.omega.shape[0])
        k = feature_rank(self.d, self.poly.degree)
        if self.rows is not None:
            k += int(max(r.sum() + c.sum() for r, c in zip(self.rows, self.cols)))
        return k


# ----------------------------------------------------------------------------------------------
# the kernel


def balanced_projections(problem: LoRAProblem):
    """(q, k) = (sgn(beta) |beta|^½ X W_Q, |beta|^½ X' W_K), (N, L, d), (N, L_kv, d): q k^T = S."""
    W = problem.weights()
    s = math.sqrt(abs(problem.beta))
    return math.copysign(s, problem.beta) * (problem.X3 @ W["Q"]), s * (problem.Xkv3 @ W["K"])


def cauchy_schwarz_radius(problem: LoRAProblem) -> float:
    """|beta| max_i ||(X W_Q)_i|| max_j ||(X' W_K)_j|| (max over the batch, float64): >= every |S_ij|.
    `planner.logit_bound` adds a rounding margin for the certificate and covers softmax only; the
    peers are not certified and take Softmax_1 problems too."""
    xp, W = problem.xp, problem.weights()

    def largest_row_norm(C):
        C = xp.astype(C, xp.float64)
        return float(xp.max(xp.sqrt(xp.sum(C * C, axis=-1))))

    return abs(problem.beta) * largest_row_norm(problem.X3 @ W["Q"]) * largest_row_norm(problem.Xkv3 @ W["K"])


def _poly(R: float, degree: int, method: str) -> ExpPolynomial:
    if R <= MAX_RADIUS:
        return exp_polynomial(R, degree=degree, method=method)
    if method == "taylor":  # Taylor's coefficients do not depend on R: no certificate, still usable
        return uncertified_taylor(R, degree)
    raise InvalidInputError(f"method='chebyshev' interpolates on [-R, R] with the logit bound R <= "
                            f"{MAX_RADIUS:g}; this problem has R = {R:.4g}")


def _default_threshold(q, k) -> float:
    """The support basis's default T: the (ceil(sqrt n) + 1)-th largest row max |entry| of the balanced
    q (n = L) and k (n = L_kv), the larger of the two, max over the batch: at most ceil(sqrt n) rows
    per side and sample are exact, so the exact part costs O((L + L_kv)(sqrt L + sqrt L_kv) d^2)."""
    T = 0.0
    for X in (q, k):
        M = np.max(np.abs(_xp.to_host64(X)), axis=-1)  # (N, n)
        a = math.ceil(math.sqrt(M.shape[-1]))
        if a < M.shape[-1]:
            T = max(T, float(np.max(np.sort(M, axis=-1)[:, -a - 1])))
    return T if T > 0 else math.inf


def _check_offset(problem: LoRAProblem, method: str) -> None:
    if problem.normalizer_offset > 0 and method in ROW_SCALED:
        raise InvalidInputError(
            f"method={method!r} does not support normalizer_offset > 0 (Softmax_1; this problem has "
            f"n = {problem.normalizer_offset:g}): its {'stabilisers' if method == 'favor+' else 'row scalings'} "
            "rescale rows of E~, which the offset n does not follow (their gradient is n r~/alpha~, "
            "derivations.peer_proofs.prove_shift_gradient). Use 'taylor' or 'chebyshev'.")


def peer_kernel(problem, method, *, degree=None, features=None, seed=0, threshold=None) -> PeerKernel:
    """The frozen approximation `peer_gradients` uses for `problem` (arguments validated there)."""
    problem = check_problem(problem)
    method = check_choice("method", method, METHODS)
    seed = check_int("seed", seed, 0)
    if method != "favor+" and features is not None:
        raise InvalidInputError(f"features is the FAVOR+ random-feature count; method={method!r} takes degree")
    if method == "favor+" and degree is not None:
        raise InvalidInputError("degree does not apply to method='favor+' (it takes features, the random-feature "
                                "count)")
    if method != "support-basis" and threshold is not None:
        raise InvalidInputError(f"threshold applies to method='support-basis' only, not {method!r}")
    _check_offset(problem, method)
    if method == "favor+":
        m = DEFAULT_FEATURES if features is None else check_int("features", features, 1)
        return PeerKernel(method, problem.d, omega=pf.orthogonal_gaussian(m, problem.d, seed), seed=seed)
    degree = DEFAULT_DEGREE[method] if degree is None else check_int("degree", degree, 0)
    if method in ("taylor", "chebyshev"):
        return PeerKernel(method, problem.d, poly=_poly(cauchy_schwarz_radius(problem), degree, method), seed=seed)
    q, k = balanced_projections(problem)
    T = _default_threshold(q, k) if threshold is None else check_positive("threshold", threshold)
    rows, cols = (np.asarray(_xp.to_numpy(a), bool) for a in pf.support_basis_masks(q, k, T))
    W = problem.weights()
    Q, K = _xp.to_host64(problem.beta * (problem.X3 @ W["Q"])), _xp.to_host64(problem.Xkv3 @ W["K"])
    qn = max(float(np.linalg.norm(Q[s][~rows[s]], axis=-1).max(initial=0.0)) for s in range(problem.N))
    kn = max(float(np.linalg.norm(K[s][~cols[s]], axis=-1).max(initial=0.0)) for s in range(problem.N))
    # any radius covering the small block's logits is valid; an empty or zero block takes a tiny one
    radius = max(qn * kn, 2.0**-20)
    return PeerKernel(method, problem.d, poly=_poly(radius, degree, "chebyshev"), threshold=T, rows=rows,
                      cols=cols, seed=seed)


# ----------------------------------------------------------------------------------------------
# the modes


def _check_finite(problem, loss, dW):
    xp = problem.xp
    for name, value in (("loss", loss), *((f"dW_{m}", g) for m, g in dW.items())):
        if not bool(xp.all(xp.isfinite(value))):
            raise ProofcheckError(f"the approximate attention produced non-finite {name} (a row sum "
                                  "E~ 1 underflowed, overflowed or vanished): the approximation is unusable here")


def _mean(problem, out, modules):
    xp, n = problem.xp, problem.N
    loss, dW = xp.sum(out["loss"], axis=0) / n, {m: xp.sum(out[f"dW_{m}"], axis=0) / n for m in modules}
    _check_finite(problem, loss, dW)
    return loss, dW


def _features(problem, kern):
    """(U1, U2, U1d, U2d) whole, (N, L, .) in the problem's namespace (U1d, U2d: None for FAVOR+)."""
    xp, W = problem.xp, problem.weights()
    if kern.method == "favor+":
        q, k = balanced_projections(problem)
        omega = _xp.from_numpy(np.asarray(kern.omega, dtype=problem.dtype_name), xp)
        return pf.favor_features(q, omega, query=True), pf.favor_features(k, omega, query=False), None, None
    Q, K = problem.beta * (problem.X3 @ W["Q"]), problem.Xkv3 @ W["K"]
    U1, U2 = feature_maps(Q, K, kern.poly)
    U1d, U2d = feature_maps(Q, K, derivative_polynomial(kern.poly))
    if kern.method != "support-basis":
        return U1, U2, U1d, U2d
    host = _xp.to_host64
    pad = int(max(kern.rows[s].sum() + kern.cols[s].sum() for s in range(problem.N)))
    parts = [pf.support_basis_features(host(Q[s]), host(K[s]), kern.rows[s], kern.cols[s],
                                       [host(U1[s]), host(U1d[s])], [host(U2[s]), host(U2d[s])], pad_to=pad)
             for s in range(problem.N)]

    def stacked(i, side):
        return _xp.from_numpy(np.asarray(np.stack([p[side][i] for p in parts]), dtype=problem.dtype_name), xp)

    return stacked(0, 0), stacked(0, 1), stacked(1, 0), stacked(1, 1)


def _plugin(problem, kern, modules, threads):
    if kern.method in ("taylor", "chebyshev"):  # the paper's chain, chunked
        loss, dW = lowrank_weight_gradients(problem, kern.poly, modules, threads=threads)
    else:  # any factors: the fused chain takes them whole
        U1, U2 = _features(problem, kern)[:2]
        loss, dW = lowrank_weight_gradients(problem, None, modules, features=(U1, U2))
    _check_finite(problem, loss, dW)
    return loss, dW


def _model_derivative(problem, kern, modules):
    """Route (b): whole arrays through the generated model_poly kernel."""
    U1, U2, U1d, U2d = _features(problem, kern)
    W = problem.weights()
    out = getattr(gen, f"model_poly_gradients_{modules}")(U1, U2, U1d, U2d, problem.X3, problem.Xkv3, W["Q"],
                                                           W["K"], W["V"], problem.Y3, problem.beta,
                                                           problem.normalizer_offset)
    return _mean(problem, out, modules)


def _model_favor(problem, kern, modules):
    """Route (a) with the FAVOR+ VJP, whole arrays (L x m features)."""
    xp, W = problem.xp, problem.weights()
    q, k = balanced_projections(problem)
    omega = _xp.from_numpy(np.asarray(kern.omega, dtype=problem.dtype_name), xp)
    U1, U2 = pf.favor_features(q, omega, query=True), pf.favor_features(k, omega, query=False)
    out = gen.model_lowrank_gradients(U1, U2, problem.Xkv3, W["V"], problem.Y3, problem.normalizer_offset)
    s = math.sqrt(abs(problem.beta))
    res = {"loss": out["loss"]}
    if "Q" in modules:  # q = sgn(beta) s X W_Q
        dq = pf.favor_vjp(q, omega, U1, out["dU1"])
        res["dW_Q"] = math.copysign(s, problem.beta) * (xp.matrix_transpose(problem.X3) @ dq)
    if "K" in modules:  # k = s X' W_K
        res["dW_K"] = s * (xp.matrix_transpose(problem.Xkv3) @ pf.favor_vjp(k, omega, U2, out["dU2"]))
    if "V" in modules:
        res["dW_V"] = out["dW_V"]
    return _mean(problem, res, modules)


def _model_monomial(problem, poly, modules, rows="auto", threads=None):
    """Route (a) with the monomial VJP, over row chunks (the features never exist whole)."""
    xp, W, beta = problem.xp, problem.weights(), problem.beta
    X, Xkv, Y = problem.X3, problem.Xkv3, problem.Y3
    Q, K = beta * (X @ W["Q"]), Xkv @ W["K"]
    check_feature_inputs(xp, Q, K)
    rows = chunk_rows(problem, feature_rank(problem.d, poly.degree), rows)
    workers = worker_threads(xp, threads)
    if rows < max(problem.L, problem.L_kv):
        recycle_block_memory(xp)

    def keys(s):  # the array API allows no out-of-bounds slice stops
        return slice(s, min(s + rows, problem.L_kv))

    def queries(s):
        return slice(s, min(s + rows, problem.L))

    def key_moments(s):
        return gen.model_lowrank_key_moments(side_features(xp, K[:, keys(s), :], poly, True),
                                             Xkv[:, keys(s), :], W["V"])

    def query_chunk(s, Vq):
        Qs = Q[:, queries(s), :]
        U1, mono = features_and_monomials(xp, Qs, poly, False)
        out = gen.model_lowrank_query_pass(U1, Vq, Y[:, queries(s), :], problem.normalizer_offset)
        res = {"loss": out["loss"], "Vk": out["Vk"]}
        if "Q" in modules:  # Q = beta X W_Q
            dQ = side_vjp(xp, Qs, out["dU1"], poly, False, mono)
            res["dW_Q"] = beta * (xp.matrix_transpose(X[:, queries(s), :]) @ dQ)
        return res

    def key_chunk(s, Vk):
        Ks, Xs = K[:, keys(s), :], Xkv[:, keys(s), :]
        U2, mono = features_and_monomials(xp, Ks, poly, True)
        out = gen.model_lowrank_key_pass(U2, Vk, Xs, W["V"])
        res = {"dW_V": out["dW_V"]}
        if "K" in modules:
            res["dW_K"] = xp.matrix_transpose(Xs) @ side_vjp(xp, Ks, out["dU2"], poly, True, mono)
        return res

    with chunk_runner(workers, max(problem.L, problem.L_kv), rows) as sums:
        Vq = sums(key_moments, problem.L_kv)["Vq"]
        out = sums(lambda s: query_chunk(s, Vq), problem.L)
        Vk = out.pop("Vk")
        if "K" in modules or "V" in modules:
            out.update(sums(lambda s: key_chunk(s, Vk), problem.L_kv))
    return _mean(problem, out, modules)


def peer_weight_gradients(problem, kern: PeerKernel, mode: str = "plugin", *, route: str = "auto",
                          modules=None, threads=None):
    """Batch-mean loss and {mu: dL/dW_mu} of `kern` in `mode` (`route` picks the model route:
    "vjp" = (a), "derivative" = (b); "auto": (b) for the support basis, else (a))."""
    problem = check_problem(problem)
    if not isinstance(kern, PeerKernel):
        raise InvalidTypeError(f"kern must be a PeerKernel, got {type(kern).__name__}")
    mode = check_choice("mode", mode, MODES)
    route = check_choice("route", route, ROUTES)
    modules = check_modules("".join(problem.adapted) if modules is None else modules)
    worker_threads(problem.xp, threads)  # checked before any work
    _check_offset(problem, kern.method)
    # a row sum E~ 1 may vanish or overflow (a polynomial past its radius): NumPy's warnings are
    # silenced here because every result is checked and refused when non-finite (`_check_finite`)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _dispatch(problem, kern, mode, route, modules, threads)


def _dispatch(problem, kern, mode, route, modules, threads):
    if mode == "plugin":
        return _plugin(problem, kern, modules, threads)
    if route == "auto":
        route = "derivative" if kern.method == "support-basis" else "vjp"
    if route == "derivative":
        if kern.method == "favor+":
            raise InvalidInputError("route='derivative' needs an entrywise kernel E~ = P(S); FAVOR+ is not one")
        return _model_derivative(problem, kern, modules)
    if kern.method == "support-basis":
        raise InvalidInputError("route='vjp' is not implemented for method='support-basis' (use 'derivative')")
    if kern.method == "favor+":
        return _model_favor(problem, kern, modules)
    return _model_monomial(problem, kern.poly, modules, threads=threads)


def peer_gradients(problem, method, *, mode="plugin", degree=None, features=None, seed=0, threshold=None,
                   threads=None) -> dict:
    """LoRA gradients through a peer approximation of the attention, as a plug-in or a model gradient.

    Parameters
    ----------
    problem : LoRAProblem
    method : {"taylor", "chebyshev", "favor+", "support-basis"}
        The approximation E~ ≈ exp(S): monomial features of the degree-g Taylor polynomial (g = 2 is
        BASED's kernel); of the Chebyshev interpolant on [-R, R], R the Cauchy-Schwarz logit bound;
        Performer's positive orthogonal random features; the support basis (exact exp(S) on rows and
        columns with a large entry, Chebyshev elsewhere).  See the module docstring.
    mode : {"plugin", "model"}
        "plugin": the exact gradient formulas evaluated at the approximate softmax F~ (what the
        paper's chain computes). "model": the gradient of the approximate loss itself (what training
        through the approximation computes; for E~ = P(S) the softmax Jacobian carries P'(S)).
        Both give the same loss and the same dL/dA_V, dL/dB_V.
    degree : int, optional
        Polynomial degree of taylor / chebyshev / support-basis (default 2, 2, 3).
    features : int, optional
        FAVOR+'s random-feature count m (default 256).
    seed : int
        Seed of FAVOR+'s random directions.
    threshold : float, optional
        Support basis only: a row is exact when a balanced entry |sgn(beta)|beta|^½ (X W_Q)_ia| or
        ||beta|^½ (X' W_K)_ja| exceeds it (default: at most ceil(sqrt(L)) exact rows per side).
    threads : int, optional
        Host threads of the chunked taylor / chebyshev passes (None: the BLAS's thread count).

    Returns
    -------
    dict
        "A_Q" (r x d), "B_Q" (d x r), ... for the adapted modules, as `exact_gradients` returns them.

    Raises
    ------
    InvalidInputError, InvalidTypeError
        A bad argument, naming it; ``normalizer_offset > 0`` with "favor+" or "support-basis".
    ProofcheckError
        When the approximate attention's row sums vanish or overflow (non-finite results).

    Examples
    --------
    >>> import numpy as np
    >>> import lora_proofcheck as lp
    >>> p = lp.LoRAProblem.random(L=256, d=4, r=2, adapt="QKV", logit_bound=1.3, seed=0)
    >>> plug = lp.peer_gradients(p, "taylor", degree=2)
    >>> model = lp.peer_gradients(p, "taylor", degree=2, mode="model")
    >>> bool(np.allclose(plug["A_V"], model["A_V"])), bool(np.allclose(plug["A_Q"], model["A_Q"]))
    (True, False)
    """
    problem = check_problem(problem)
    check_choice("mode", mode, MODES)
    threshold = None if threshold is None else check_positive("threshold", threshold)
    check_optional_int("threads", threads, 1)
    kern = peer_kernel(problem, method, degree=degree, features=features, seed=seed, threshold=threshold)
    _, dW = peer_weight_gradients(problem, kern, mode, threads=threads)
    return lora_factor_gradients(problem, dW)
