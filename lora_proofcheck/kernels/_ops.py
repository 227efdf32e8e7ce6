"""Hand-written runtime ops of the generated low-rank kernels: the face split and its contraction.

(A ⊘ B)[i, a k_B + b] = A[i, a] B[i, b].  The fused chain (derivations/lowrank_chain.py) forms face
splits of two NARROW factors only (the data: L x d^2, never the L x k d of a feature factor) and,
after the GEMM with the features, undoes one with `face_contract`:

    (U ⊘ c) M = FaceContract(c, U M'),   M'[a, b e + f] = M[a d + b, f]

Array-API generic; every array may carry the same leading batch dimensions.
"""

from __future__ import annotations

from array_api_compat import array_namespace

__all__ = ["face_contract", "face_split"]


def face_split(A, B):
    """The row-wise Kronecker product A ⊘ B, shape (..., L, k_A k_B)."""
    xp = array_namespace(A, B)
    prod = xp.expand_dims(A, axis=-1) * xp.expand_dims(B, axis=-2)
    return xp.reshape(prod, A.shape[:-1] + (A.shape[-1] * B.shape[-1],))


def face_contract(c, T):
    """FaceContract(c, T)[i, f] = sum_b c[i, b] T[i, b e + f] for c (..., L, d), T (..., L, d e): (..., L, e).

    Row i is c_i (1 x d) times T_i reshaped (d x e): a stack of tiny products (faster than * and sum)."""
    xp = array_namespace(c, T)
    d = c.shape[-1]
    T3 = xp.reshape(T, T.shape[:-1] + (d, T.shape[-1] // d))
    out = xp.expand_dims(c, axis=-2) @ T3
    return xp.reshape(out, out.shape[:-3] + (out.shape[-3], out.shape[-1]))
