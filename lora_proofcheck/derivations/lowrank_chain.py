"""The chained low-rank gradient (Lemmas 3.3-3.7, Thm 3.1, Thm A.1), never forming an L x L_kv array.

Given features U1 (L x k) and U2 (L_kv x k) of Q := beta C1 and K := C2 with U1 U2^T ≈ exp(S),
F~ = diag(alpha~)^-1 U1 U2^T (alpha~ = U1 U2^T 1 + n, n the Softmax_1 offset, 0 for softmax) and
G~ = c~ C3^T (E1).  `build_lemmas` writes the
chain as the paper's lemmas do, one small product per term:

    O~ = U1n (U2^T C3),  c~ = O~ - Y,  r~ = RowDot(c~, O~) = rowsum(F~ ∘ G~),  U1n = diag(alpha~)^-1 U1
    P~ C2   = (U1n ⊘ c~)((U2 ⊘ C3)^T C2) - diag(r~) U1n (U2^T C2)        (p2 scales ROWS: E2)
    P~^T C1 = (C3 ⊘ U2)((c~ ⊘ U1n)^T C1) - U2 (U1n^T (diag(r~) C1))
    dW_Q = beta X^T P~ C2,  dW_K = beta X'^T P~^T C1,  dW_V = X'^T U2 (U1n^T c~)

⊘ is the row-wise Kronecker (face-splitting) product; (A ⊘ B)(C ⊘ D)^T = (A C^T) ∘ (B D^T).

`build` (what the kernels run) computes the same sums grouped by the WIDE operand: every product
with U2^T or U1 (resp. U1^T, U2) shares one GEMM, so the L x k features are read four times in all,
each time by a GEMM k wide and about d^2 + 2d + 1 long (the narrow face splits of the data are
formed: L x d^2, never L x k d):

    Vq = U2^T [1 | C3 | C2 | C3 ⊘ C2]      (k x (1 + 2d + d^2), a sum over the keys)
    T  = U1 Vq,  alpha~ = T[:, 0] + n,  [O~ | F~C2 | T3] = diag(alpha~)^-1 T[:, 1:]
    P~ C2 = FaceContract(c~, T3) - diag(r~) F~C2
    Vk = U1^T diag(alpha~)^-1 [c~ ⊘ C1 | diag(r~) C1 | c~]   (k x (d^2 + 2d), a sum over the queries)
    T' = U2 Vk,  P~^T C1 = FaceContract(C3, T'[:, :d^2]) - T'[:, d^2:d^2+d],  F~^T c~ = T'[:, d^2+d:]

(FaceContract(c, A M') = (A ⊘ c) M: see `nodes.FaceContract`.)  Only the blocks a module subset
needs are stacked (`build(modules)`).  The two sums over rows (Vq, Vk) split the kernel into three
passes over row chunks (`PHASES`): the runtime (`gradients/lowrank_path.py`) runs them chunk by chunk, so the
features never exist for all L rows at once.  Cost 2 (L + L_kv) k (2 + 3d + 2d^2) flops for the
four GEMMs, memory O(chunk k + L d^2).  `lowrank_proofs` proves, for every size, that both chains
equal the exact derivation when U1 U2^T = exp(S) exactly, and equal the exact gradient formulas
evaluated at F~ for any U1, U2 (not the gradient of the approximate loss, erratum O1: that is the
model gradient of `peers.py`).
"""

from __future__ import annotations

import sympy as sp

from .decomposition import W_K, W_Q, W_V, L, L_kv, X_kv, X_q, Y, beta, d
from .nodes import (
    ColSlice,
    Derivation,
    FaceContract,
    FaceSplit,
    Fill,
    HStack,
    RowDot,
    divide_rows,
    frobenius_half,
    ones,
    scale_rows,
)

k = sp.Symbol("k", integer=True, positive=True)
n = sp.Symbol("n")  # the Softmax_1 normaliser offset, added exactly to alpha~ (0 for softmax)

U1 = sp.MatrixSymbol("U1", L, k)
_U2 = sp.MatrixSymbol("U2", L_kv, k)
_X_kv = X_kv

INPUTS = [U1, _U2, X_q, X_kv, W_Q, W_K, W_V, Y, beta, n]

__all__ = ["INPUTS", "P2_VARIANTS", "PHASES", "TERMS", "WEIGHT_GRADIENTS", "build", "build_lemmas", "k", "n"]

# Intermediate terms exported by the terms kernel (for checks against the exact terms).
TERMS = ("C1", "C2", "C3", "alpha", "O", "c", "r", "pC2", "pTC1", "FTc", "loss")
#: the three row passes of the fused chain: (inputs besides the data, outputs); Vq and Vk are sums
#: over key / query rows, so each pass can run over row chunks and add up.
PHASES = {
    "key_moments": ("U2",),
    "query_pass": ("U1", "Vq"),
    "key_pass": ("U2", "Vk"),
}
WEIGHT_GRADIENTS = {"Q": "dW_Q", "K": "dW_K", "V": "dW_V"}

P2_VARIANTS = ("rows", "columns")


def build_lemmas(p2: str = "rows") -> Derivation:
    """The chain, lemma by lemma (the paper's grouping). `p2="columns"` is the paper's printed p~2 = F~ diag(r~) (erratum E2): a wrong
    variant, kept only so the proofs can be seen to fail on it (it needs L = L_kv to type-check)."""
    if p2 not in P2_VARIANTS:
        raise ValueError(f"p2 must be one of {P2_VARIANTS}, got {p2!r}")
    if p2 == "rows":
        D = Derivation("lowrank_lemmas", INPUTS, source=__name__)
        U2, X_kv = _U2, _X_kv
    else:  # diag(r~) (L x L) next to key-side factors: only self-attention shapes type-check
        U2, X_kv = sp.MatrixSymbol("U2", L, k), sp.MatrixSymbol("X_kv", L, d)
        D = Derivation("lowrank_paper_p2", [U1, U2, X_q, X_kv, W_Q, W_K, W_V, Y, beta, n], source=__name__)
    ones_kv = ones(U2.shape[0])
    C1 = D.let("C1", X_q * W_Q, "C^(1) W = X W_Q (queries)")
    C2 = D.let("C2", X_kv * W_K, "C^(2) = X' W_K (keys)")
    C3 = D.let("C3", X_kv * W_V, "C^(3) = X' W_V (values)")
    s = D.let("s", U2.T * ones_kv, "U2^T 1 (k x 1)")
    alpha = D.let("alpha", U1 * s + Fill(n, L),
                  "alpha~ = U1 (U2^T 1) + n = E~ 1 + n, E~ := U1 U2^T ≈ exp(S) (Lemma 3.3; n: Softmax_1)")
    U1n = D.let("U1n", divide_rows(U1, alpha), "U1n = diag(alpha~)^-1 U1, so F~ = U1n U2^T (Lemma 3.3)")
    V1C3 = D.let("V1C3", U2.T * C3, "U2^T C^(3) (k x d)")
    O = D.let("O", U1n * V1C3, "O~ = F~ C^(3) = U1n (U2^T C^(3))")
    c = D.let("c", O - Y, "c~ = O~ - Y (Lemma 3.4)")
    D.let("loss", frobenius_half(c), "per-sample loss ½‖c~‖²_F")
    r = D.let("r", RowDot(c, O), "r~ = rowsum(F~ ∘ G~) = <c~_i, O~_i> (eq. C.1; G~ = c~ C^(3)T: E1)")
    # dW_Q: P~ C2 = p1 C2 - p2 C2
    V3C2 = D.let("V3C2", FaceSplit(U2, C3).T * C2, "V3^T C^(2), V3 = U2 ⊘ C^(3) (k d x d; Lemma 3.6)")
    p1C2 = D.let("p1C2", FaceSplit(U1n, c) * V3C2, "p~1 C^(2) = U3 (V3^T C^(2)), U3 = U1n ⊘ c~ (Lemma 3.6)")
    if p2 == "rows":
        V1C2 = D.let("V1C2", U2.T * C2, "U2^T C^(2) (k x d)")
        FC2 = D.let("FC2", U1n * V1C2, "F~ C^(2) = U1n (U2^T C^(2))")
        p2C2 = D.let("p2C2", scale_rows(r, FC2), "p~2 C^(2) = diag(r~) F~ C^(2) (Lemma 3.7, rows: E2)")
    else:
        rC2 = D.let("rC2", scale_rows(r, C2), "diag(r~) C^(2) (paper: V4 = diag(r~) V1; wrong, E2)")
        V4C2 = D.let("V4C2", U2.T * rC2, "U2^T diag(r~) C^(2)")
        p2C2 = D.let("p2C2", U1n * V4C2, "paper's p~2 C^(2) = F~ diag(r~) C^(2) (columns: wrong, E2)")
    pC2 = D.let("pC2", p1C2 - p2C2, "P~ C^(2) = (p~1 - p~2) C^(2)")
    D.let("dW_Q", beta * X_q.T * pC2, "dL/dW_Q ≈ beta X^T P~ C^(2) (Thm 3.1)")
    # dW_K: P~^T C1 = p1^T C1 - p2^T C1, face splits in swapped order (see module docstring)
    U3C1 = D.let("U3C1", FaceSplit(c, U1n).T * C1, "(c~ ⊘ U1n)^T C^(1) (d k x d)")
    p1TC1 = D.let("p1TC1", FaceSplit(C3, U2) * U3C1, "p~1^T C^(1) = (C^(3) ⊘ U2)((c~ ⊘ U1n)^T C^(1))")
    if p2 == "rows":
        # (r 1^T) ∘ C1, not diag(r) C1: a second DiagMatrix(r) would be hoisted by CSE as an L x L array
        rC1 = D.let("rC1", sp.HadamardProduct(r * ones(1, d), C1), "diag(r~) C^(1) = (r~ 1^T) ∘ C^(1)")
        U4C1 = D.let("U4C1", U1n.T * rC1, "U4^T C^(1), U4 = diag(r~) U1n (k x d)")
        p2TC1 = D.let("p2TC1", U2 * U4C1,
                      "p~2^T C^(1) = U2 (U1n^T diag(r~) C^(1)) (Lemma 3.7 for P^T, App. D; E2)")
    else:
        V1C1 = D.let("V1C1", U1n.T * C1, "U1n^T C^(1)")
        FTC1 = D.let("FTC1", U2 * V1C1, "F~^T C^(1)")
        p2TC1 = D.let("p2TC1", scale_rows(r, FTC1), "paper's p~2^T C^(1) = diag(r~) F~^T C^(1) (wrong, E2)")
    pTC1 = D.let("pTC1", p1TC1 - p2TC1, "P~^T C^(1)")
    D.let("dW_K", beta * X_kv.T * pTC1, "dL/dW_K ≈ beta X'^T P~^T C^(1) (Thm A.1)")
    # dW_V
    U1c = D.let("U1c", U1n.T * c, "U1n^T c~ (k x d)")
    FTc = D.let("FTc", U2 * U1c, "F~^T c~ = U2 (U1n^T c~)")
    D.let("dW_V", X_kv.T * FTc, "dL/dW_V ≈ X'^T F~^T c~ (not in the paper)")
    return D


def build(modules: str = "QKV") -> Derivation:
    """The fused chain the kernels run, for the weight gradients of `modules` (a subset of "QKV",
    in that order) and the loss."""
    if not modules or any(m not in "QKV" for m in modules) or "".join(m for m in "QKV" if m in modules) != modules:
        raise ValueError(f"modules must be a non-empty ordered subset of 'QKV', got {modules!r}")
    q, k_, v = ("Q" in modules), ("K" in modules), ("V" in modules)
    D = Derivation(f"lowrank_{modules}", INPUTS, source=__name__)
    U2, X_kv = _U2, _X_kv
    C3 = D.let("C3", X_kv * W_V, "C^(3) = X' W_V (values)")
    key_blocks = [ones(L_kv), C3]
    if q:
        C2 = D.let("C2", X_kv * W_K, "C^(2) = X' W_K (keys)")
        key_blocks += [C2, FaceSplit(C3, C2)]
    Z2 = D.let("Z2", HStack(*key_blocks), "[1 | C3 | C2 | C3 ⊘ C2] (L_kv x (1 + 2d + d^2): narrow)")
    Vq = D.let("Vq", U2.T * Z2,
               "U2^T [1 | C3 | C2 | C3 ⊘ C2]: U2^T 1 (Lemma 3.3), V1 = U2^T C3, U2^T C2, V3^T C2 (Lemma 3.6)")
    T = D.let("T", U1 * Vq, "U1 Vq: E~ 1, E~ C3, E~ C2, (U1 ⊘ ...) terms, E~ := U1 U2^T ≈ exp(S)")
    alpha = D.let("alpha", ColSlice(T, 0, 1) + Fill(n, L), "alpha~ = E~ 1 + n (Lemma 3.3; n exactly: Softmax_1)")
    Tn = D.let("Tn", divide_rows(ColSlice(T, 1, Vq.shape[1]), alpha), "diag(alpha~)^-1 T: F~ times each block")
    O = D.let("O", ColSlice(Tn, 0, d), "O~ = F~ C^(3)")
    c = D.let("c", O - Y, "c~ = O~ - Y (Lemma 3.4)")
    D.let("loss", frobenius_half(c), "per-sample loss ½‖c~‖²_F")
    if q or k_:
        r = D.let("r", RowDot(c, O), "r~ = rowsum(F~ ∘ G~) = <c~_i, O~_i> (eq. C.1; G~ = c~ C^(3)T: E1)")
    query_blocks = []
    if q:
        FC2 = D.let("FC2", ColSlice(Tn, d, 2 * d), "F~ C^(2)")
        p1C2 = D.let("p1C2", FaceContract(c, ColSlice(Tn, 2 * d, 2 * d + d**2)),
                     "p~1 C^(2) = (U1n ⊘ c~)(V3^T C^(2)) (Lemma 3.6)")
        pC2 = D.let("pC2", p1C2 - scale_rows(r, FC2), "P~ C^(2) = p~1 C^(2) - diag(r~) F~ C^(2) (Lemma 3.7, rows: E2)")
        D.let("dW_Q", beta * X_q.T * pC2, "dL/dW_Q ≈ beta X^T P~ C^(2) (Thm 3.1)")
    if k_:
        C1 = D.let("C1", X_q * W_Q, "C^(1) W = X W_Q (queries)")
        # (r 1^T) ∘ C1, not diag(r) C1: a DiagMatrix(r) hoisted by CSE would be an L x L array
        query_blocks += [FaceSplit(c, C1), sp.HadamardProduct(r * ones(1, d), C1)]
    if v:
        query_blocks.append(c)
    if not query_blocks:  # Q alone: no pass over the keys after the queries
        return D
    Z1 = D.let("Z1", divide_rows(HStack(*query_blocks), alpha), "diag(alpha~)^-1 [c~ ⊘ C1 | diag(r~) C1 | c~]")
    Vk = D.let("Vk", U1.T * Z1,
               "U1n^T [c~ ⊘ C1 | diag(r~) C1 | c~]: U3^T C^(1), U4^T C^(1) (Lemma 3.7, App. D), U1n^T c~")
    Tk = D.let("Tk", U2 * Vk, "U2 Vk: F~^T times each block")
    at = 0
    if k_:
        p1TC1 = D.let("p1TC1", FaceContract(C3, ColSlice(Tk, 0, d**2)), "p~1^T C^(1) = (C^(3) ⊘ U2)((c~ ⊘ U1n)^T C^(1))")
        pTC1 = D.let("pTC1", p1TC1 - ColSlice(Tk, d**2, d**2 + d), "P~^T C^(1) = p~1^T C^(1) - F~^T diag(r~) C^(1)")
        D.let("dW_K", beta * X_kv.T * pTC1, "dL/dW_K ≈ beta X'^T P~^T C^(1) (Thm A.1)")
        at = d**2 + d
    if v:
        FTc = D.let("FTc", ColSlice(Tk, at, at + d), "F~^T c~")
        D.let("dW_V", X_kv.T * FTc, "dL/dW_V ≈ X'^T F~^T c~ (not in the paper)")
    return D
