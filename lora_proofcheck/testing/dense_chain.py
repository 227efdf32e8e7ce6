"""Dense reference of the paper's chain (Lemmas 3.2-3.7), in the paper's notation: an oracle for the
report's ledger and errata checks.

An oracle, not the approximate path: it materializes every L x L matrix on purpose, on the host,
for small L. The same code runs on float64 arrays, on object arrays of mpmath numbers (high-
precision re-checks) and on object arrays of SymPy numbers (exact re-checks): pass the matching
`exp`. Partial case (Sec. 3), one sample, with beta and alpha/r folded into C1 as the paper does:

    C1 = beta (alpha/r) X,  W = W*_Q/(alpha/r) + B_Q A_Q,  C2 = X' W_K,  C3 = X' W_V
    S = C1 W C2^T,  F = softmax_rows(S),  c = F C3 - Y,  G = c C3^T (= q^T, E1)
    p1 = F ∘ G,  r = p1 1,  p2 = diag(r) F (E2),  P = p1 - p2
    G^(A) = B^T C1^T P C2 (r x d),   G^(B) = C1^T P C2 A^T (d x r, E3)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernels.features import feature_maps
from .oracles import host_inputs

__all__ = ["adapter_gradients", "approx_F", "approx_terms", "exact_terms", "face_split", "Factors",
           "float_exp", "logits", "lowrank_factors", "maxnorm", "object_exp", "paper_inputs", "PaperInputs",
           "softmax_rows", "Terms", "terms_from_F"]


def float_exp(M):
    return np.exp(M)


def object_exp(fn):
    """Entrywise exp for object arrays (fn = mpmath.exp or sympy.exp)."""
    vec = np.vectorize(fn, otypes=[object])
    return lambda M: vec(M)


@dataclass
class PaperInputs:
    """The paper's constants; `transpose` marks the K adapter, whose C1 W C2^T is S^T (App. A)."""

    C1: np.ndarray
    W: np.ndarray
    C2: np.ndarray
    C3: np.ndarray
    Y: np.ndarray
    A: np.ndarray
    B: np.ndarray
    transpose: bool = False

    def convert(self, fn) -> PaperInputs:
        """Entrywise conversion (e.g. to mpmath.mpf or sympy.Rational) into object arrays."""
        vec = np.vectorize(fn, otypes=[object])
        arrays = {k: vec(v) for k, v in vars(self).items() if k != "transpose"}
        return PaperInputs(**arrays, transpose=self.transpose)


def paper_inputs(problem, module: str = "Q") -> PaperInputs:
    """The paper's constants for the adapter of `module` ('Q' or 'K'; sample 0).

    For K the roles swap (App. A): C1 = beta s X', W = W*_K/s + B_K A_K, C2 = X W_Q, so that
    C1 W C2^T = S^T and dL/d(C1 W C2^T) = P^T; C3 and Y stay the value side.
    """
    h = host_inputs(problem)
    s, beta = problem.scale, problem.beta
    X, Xkv, Y = h["X"][0], h["X_kv"][0], h["Y"][0]
    W = {m: h["W"][m] + s * h["B"][m] @ h["A"][m] if m in h["A"] else h["W"][m] for m in "QKV"}
    other = "K" if module == "Q" else "Q"
    own, partner = (X, Xkv) if module == "Q" else (Xkv, X)
    A, B = h["A"][module], h["B"][module]
    return PaperInputs(
        C1=beta * s * own,
        W=h["W"][module] / s + B @ A,
        C2=partner @ W[other],
        C3=Xkv @ W["V"],
        Y=Y,
        A=A,
        B=B,
        transpose=module == "K",
    )


def softmax_rows(S, exp):
    if S.dtype != object:  # a shift keeps float exp finite; F does not depend on it
        S = S - S.max(axis=1, keepdims=True)
    U = exp(S)
    return U / U.sum(axis=1, keepdims=True)


@dataclass
class Terms:
    """F, c, G, p1, r, p2, P of one evaluation (exact or approximate), query-major (L x L_kv)."""

    F: np.ndarray
    c: np.ndarray
    G: np.ndarray
    p1: np.ndarray
    r: np.ndarray
    p2: np.ndarray
    P: np.ndarray


def terms_from_F(F, C3, Y) -> Terms:
    """The rest of the chain from a row-stochastic F (exact or approximate)."""
    c = F @ C3 - Y
    G = c @ C3.T
    p1 = F * G
    r = p1.sum(axis=1, keepdims=True)
    p2 = r * F
    return Terms(F, c, G, p1, r, p2, p1 - p2)


def logits(pi: PaperInputs):
    """S = C1 W C2^T, query-major (transposed back for the K adapter)."""
    S = pi.C1 @ pi.W @ pi.C2.T
    return S.T if pi.transpose else S


def exact_terms(pi: PaperInputs, exp=float_exp) -> Terms:
    return terms_from_F(softmax_rows(logits(pi), exp), pi.C3, pi.Y)


def approx_F(pi: PaperInputs, poly, *, features: bool = True):
    """F~ = diag(A~ 1)^-1 A~ with A~ = p(S) entrywise (Lemma 3.3).

    `features` builds A~ as U1 U2^T from the monomial feature maps (the algorithm's factorization,
    float arrays only); otherwise p is evaluated entrywise (exact or high-precision arrays)."""
    if features:
        U1, U2 = feature_maps(np.asarray(pi.C1 @ pi.W, np.float64), np.asarray(pi.C2, np.float64), poly)
        At = U1 @ U2.T
        if pi.transpose:
            At = At.T
    else:
        S = logits(pi)
        At = np.zeros_like(S)
        for a in reversed(poly.coefficients):  # Horner, entrywise, in the arrays' own arithmetic
            At = At * S + _as_scalar(a, S)
    return At / At.sum(axis=1, keepdims=True)


def _as_scalar(a, like):
    if like.dtype == object:
        sample = like.flat[0]
        if type(sample).__module__.startswith("mpmath"):
            import mpmath  # noqa: PLC0415

            return mpmath.mpf(int(a.p)) / int(a.q)
        return a  # SymPy Rational stays exact
    return float(a)


def approx_terms(pi: PaperInputs, poly, *, features: bool = True) -> Terms:
    return terms_from_F(approx_F(pi, poly, features=features), pi.C3, pi.Y)


def adapter_gradients(pi: PaperInputs, P) -> tuple[np.ndarray, np.ndarray]:
    """(G^(A), G^(B)) = (B^T C1^T P C2, C1^T P C2 A^T); P^T for the K adapter."""
    core = pi.C1.T @ (P.T if pi.transpose else P) @ pi.C2
    return pi.B.T @ core, core @ pi.A.T


def maxnorm(M) -> float:
    """Entrywise max norm ||M||_inf of the paper (as a float)."""
    return float(np.max(np.abs(M)))


# ---------------------------------------------------------------------------------------------
# the low-rank factors of Lemmas 3.5-3.7 (dense, to check the stated ranks and identities)


def face_split(A, B):
    """Row-wise Kronecker product (A ⊘ B)[i, a k_B + b] = A[i, a] B[i, b] (AS24 Fact A.2)."""
    return (A[:, :, None] * B[:, None, :]).reshape(A.shape[0], A.shape[1] * B.shape[1])


@dataclass
class Factors:
    U1: np.ndarray
    V1: np.ndarray
    U2: np.ndarray
    V2: np.ndarray
    U3: np.ndarray
    V3: np.ndarray
    r: np.ndarray
    U4: np.ndarray
    V4: np.ndarray


def lowrank_factors(pi: PaperInputs, poly, *, paper_literal: bool = False) -> Factors:
    """U1..V4 of Lemmas 3.3-3.7 from the feature maps (float arrays).

    Corrected (default): U3 = U1 ⊘ V2, V3 = V1 ⊘ U2 (G~ = V2 U2^T: E1), U4 = diag(r~) U1, V4 = V1 (E2).
    `paper_literal`: U3 = U1 ⊘ U2, V3 = V1 ⊘ V2, U4 = U1, V4 = diag(r~) V1, as printed."""
    if pi.transpose:
        raise ValueError("lowrank_factors is written for the query adapter (transpose=False)")
    Uq, Uk = feature_maps(pi.C1 @ pi.W, pi.C2, poly)
    U1 = Uq / (Uq @ (Uk.T @ np.ones((Uk.shape[0], 1))))  # D~^-1 U, O(L k): no L x L product
    V1 = Uk
    U2 = np.concatenate([pi.C3, -pi.C3], axis=1)  # Lemma 3.5: U2 V2^T = C3 c~^T = q~
    V2 = np.concatenate([U1 @ (V1.T @ pi.C3), pi.Y], axis=1)
    if paper_literal:
        U3, V3 = face_split(U1, U2), face_split(V1, V2)
    else:
        U3, V3 = face_split(U1, V2), face_split(V1, U2)
    r = U3 @ (V3.T @ np.ones((V3.shape[0], 1)))
    if paper_literal:
        U4, V4 = U1, r * V1  # F~ diag(r~): only typed when L = L_kv
    else:
        U4, V4 = r * U1, V1
    return Factors(U1, V1, U2, V2, U3, V3, r, U4, V4)
