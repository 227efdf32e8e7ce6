"""Hand-written runtime ops of the generated low-rank kernels: products with a face split.

(A ⊘ B)[i, a k_B + b] = A[i, a] B[i, b] has L x k_A k_B entries (L x k d for the chain), which
the kernels must never form.  Both products below are one GEMM whose inner or outer dimension is
the wide factor, plus an O(L k_narrow e) elementwise pass:

    (A ⊘ B) M    = sum_b B[:, b] * (A @ M_b),   M_b := rows a k_B + b of M     (L x e)
    (A ⊘ B)^T M  = reshape(A^T @ (B ⊘ M), (k_A k_B, e))                        (k_A k_B x e)

and with the roles of A and B exchanged (columns of M permuted accordingly) when B is the wider
factor, so either operand order costs one GEMM over max(k_A, k_B).  Array-API generic; every
array may carry the same leading batch dimensions.  `face_split` is the explicit product, for
tests only.
"""

from __future__ import annotations

from array_api_compat import array_namespace


def face_split(A, B):
    """The explicit row-wise Kronecker product A ⊘ B, shape (..., L, k_A k_B). Tests only."""
    xp = array_namespace(A, B)
    prod = xp.expand_dims(A, axis=-1) * xp.expand_dims(B, axis=-2)
    return xp.reshape(prod, A.shape[:-1] + (A.shape[-1] * B.shape[-1],))


def _swap_blocks(xp, M, k_a, k_b):
    """Rows a k_b + b of M -> rows b k_a + a: the M that goes with B ⊘ A instead of A ⊘ B."""
    lead, e = M.shape[:-2], M.shape[-1]
    M4 = xp.reshape(M, lead + (k_a, k_b, e))
    n = len(lead)
    axes = tuple(range(n)) + (n + 1, n, n + 2)
    return xp.reshape(xp.permute_dims(M4, axes), lead + (k_b * k_a, e))


def face_split_matmul(A, B, M):
    """(A ⊘ B) M for A (..., L, k_A), B (..., L, k_B), M (..., k_A k_B, e): shape (..., L, e)."""
    xp = array_namespace(A, B, M)
    k_a, k_b = A.shape[-1], B.shape[-1]
    if k_a < k_b:  # GEMM over the wider factor: (A ⊘ B) M = (B ⊘ A) M' with rows swapped
        A, B, M, k_a, k_b = B, A, _swap_blocks(xp, M, k_a, k_b), k_b, k_a
    lead, e = M.shape[:-2], M.shape[-1]
    T = A @ xp.reshape(M, lead + (k_a, k_b * e))  # (..., L, k_b e): one GEMM, inner dim k_a
    T = xp.reshape(T, T.shape[:-1] + (k_b, e))
    # row i: B[i, :] @ T[i] (1 x k_b by k_b x e), a stack of tiny products (4x faster than * and sum)
    out = xp.expand_dims(B, axis=-2) @ T
    return xp.reshape(out, out.shape[:-3] + (out.shape[-3], e))


def face_split_t_matmul(A, B, M):
    """(A ⊘ B)^T M for A (..., L, k_A), B (..., L, k_B), M (..., L, e): shape (..., k_A k_B, e)."""
    xp = array_namespace(A, B, M)
    k_a, k_b = A.shape[-1], B.shape[-1]
    if k_a < k_b:  # (A ⊘ B)^T M = rows-swapped (B ⊘ A)^T M, GEMM over the wider factor
        return _swap_blocks(xp, face_split_t_matmul(B, A, M), k_b, k_a)
    BM = face_split(B, M)  # (..., L, k_b e): narrow
    out = xp.matrix_transpose(A) @ BM  # (..., k_a, k_b e): one GEMM, inner dim L
    return xp.reshape(out, out.shape[:-2] + (k_a * k_b, M.shape[-1]))
