"""Exact SymPy checks of the paper's algebraic identities on explicit matrices of symbols.

Each check returns (holds, measured, data). The identities here are polynomial in the entries,
so `expand(lhs - rhs) == 0` is a proof for the sizes used (which are stated in `data`).
"""

from __future__ import annotations

import sympy as sp
from sympy.matrices.expressions.kronecker import kronecker_product

from ...derivations.interpreter import symbol_matrix

__all__ = ["face_split_fact", "kron_block_rows", "lemma31_sum", "reduction_substitution", "tensor_trick",
           "vec", "vec_colmajor"]


def _zero(M) -> bool:
    return all(sp.expand(x) == 0 for x in M)


def vec(M):
    """Row-major vectorization (Def. 2.1): vec(X)_{(i-1)d + j} = X_ij."""
    return M.reshape(M.rows * M.cols, 1)


def vec_colmajor(M):
    return M.T.reshape(M.rows * M.cols, 1)


def tensor_trick(ctx=None):
    """Lemma 2.1: vec(A X B^T) = (A ⊗ B) vec(X) with row-major vec (sizes need not be square)."""
    La, da, Lb, db = 2, 3, 2, 2
    A, X, B = symbol_matrix("a", La, da), symbol_matrix("x", da, db), symbol_matrix("b", Lb, db)
    holds = _zero(vec(A * X * B.T) - kronecker_product(A, B) * vec(X))
    colmajor = _zero(vec_colmajor(A * X * B.T) - kronecker_product(A, B) * vec_colmajor(X))
    return (
        holds,
        (
            f"exact identity for A {La}x{da}, X {da}x{db}, B {Lb}x{db}"
            + ("" if colmajor else "; with column-major vec it fails (the row-major Def. 2.1 matters)")
        ),
        {"sizes": [La, da, Lb, db], "row_major_holds": holds, "column_major_holds": colmajor},
    )


def kron_block_rows(ctx=None):
    """Eq. (2.1) / Def. 2.4: with 𝐂 = C1 ⊗ C2, the block 𝐂_j vec(W) is row j of C1 W C2^T."""
    L, d = 3, 2
    C1, C2, W = symbol_matrix("c", L, d), symbol_matrix("k", L, d), symbol_matrix("w", d, d)
    big = kronecker_product(C1, C2)
    S = C1 * W * C2.T
    holds = all(_zero(big[j * L : (j + 1) * L, :] * vec(W) - S[j, :].T) for j in range(L))
    return (
        holds,
        f"exact for L={L}, d={d}: every block row of (C1⊗C2) vec(W) is a row of the logits",
        {"L": L, "d": d},
    )


def face_split_fact(ctx=None):
    """AS24 Fact A.2: (U1 V1^T) ∘ (U2 V2^T) = (U1 ⊘ U2)(V1 ⊘ V2)^T, ⊘ the row-wise Kronecker product."""
    n, k1, k2 = 2, 2, 3
    U1, V1 = symbol_matrix("u", n, k1), symbol_matrix("v", n, k1)
    U2, V2 = symbol_matrix("s", n, k2), symbol_matrix("t", n, k2)
    fs = lambda A, B: sp.Matrix(
        A.rows,
        A.cols * B.cols,  # noqa: E731
        lambda i, j: A[i, j // B.cols] * B[i, j % B.cols],
    )
    lhs = (U1 * V1.T).multiply_elementwise(U2 * V2.T)
    holds = _zero(lhs - fs(U1, U2) * fs(V1, V2).T)
    return holds, f"exact for n={n}, k1={k1}, k2={k2} (rank k1*k2 = {k1 * k2})", {"n": n, "k1": k1, "k2": k2}


def lemma31_sum(ctx=None):
    """Lemma 3.1's sum Σ_j Σ_i c_ji 𝐂_j^T (diag(f_j) - f_j f_j^T) C3[:, i] = vec(C1^T P C2),
    P = F∘G - diag((F∘G)1)F, G = c C3^T, as a polynomial identity in free F, c, C1, C2, C3."""
    L, d = 2, 2
    C1, C2, C3 = symbol_matrix("a", L, d), symbol_matrix("k", L, d), symbol_matrix("v", L, d)
    F, c = symbol_matrix("f", L, L), symbol_matrix("c", L, d)
    big = kronecker_product(C1, C2)
    total = sp.zeros(d * d, 1)
    for j in range(L):
        f = F[j, :].T
        block = big[j * L : (j + 1) * L, :]
        for i in range(d):
            total += c[j, i] * block.T * (sp.diag(*f) - f * f.T) * C3[:, i]
    G = c * C3.T
    p1 = F.multiply_elementwise(G)
    P = p1 - sp.diag(*(p1 * sp.ones(L, 1))) * F
    holds = _zero(total - vec(C1.T * P * C2))
    return (
        holds,
        f"exact for L={L}, d={d} with free F, c (with the proof p = dL/dS this is Lemma 3.1)",
        {"L": L, "d": d},
    )


def reduction_substitution(ctx=None):
    """App. E: with C1 = [A1, 0], B_Q = [I_r; 0], A_Q = [X, 0], C2 = [A2, 0]/r, C3 = [A3, 0], Y = 0,
    the LoRA logits are A1 X A2^T / r and dL/dA_Q = [A1^T P A2 / r, 0], whose r x r block is the
    AAttLGC gradient A1^T P A2 / r for the same P (both problems have the same logits and output)."""
    L, r, d = 3, 2, 3
    A1, A2, X = symbol_matrix("g", L, r), symbol_matrix("h", L, r), symbol_matrix("x", r, r)
    pad = lambda M: M.row_join(sp.zeros(M.rows, d - r))  # noqa: E731
    C1, C2 = pad(A1), pad(A2) / r
    BQ = sp.eye(r).col_join(sp.zeros(d - r, r))
    AQ = pad(X)
    logits_ok = _zero(C1 * BQ * AQ * C2.T - A1 * X * A2.T / r)
    P = symbol_matrix("p", L, L)
    grad_lora = BQ.T * C1.T * P * C2
    block_ok = _zero(grad_lora[:, :r] - A1.T * P * A2 / r) and _zero(grad_lora[:, r:])
    holds = logits_ok and block_ok
    return (
        holds,
        (
            f"exact for L={L}, r={r}, d={d}: logits identical, gradient block = AAttLGC gradient, "
            "rest of the block zero"
        ),
        {"logits": logits_ok, "gradient_block": block_ok},
    )
