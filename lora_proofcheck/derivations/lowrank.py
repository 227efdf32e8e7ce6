"""The chained low-rank gradient (Lemmas 3.3-3.7, Thm 3.1, Thm A.1), never forming an L x L_kv array.

Given features U1 (L x k) and U2 (L_kv x k) of Q := beta C1 and K := C2 with U1 U2^T ≈ exp(S):

    alpha~ = U1 (U2^T 1),   U1n = diag(alpha~)^-1 U1      (F~ = U1n U2^T, never formed)
    O~ = U1n (U2^T C3),  c~ = O~ - Y,  r~ = RowDot(c~, O~) (= rowsum(F~ ∘ G~), G~ = c~ C3^T: E1)
    P~ C2   = (U1n ⊘ c~)((U2 ⊘ C3)^T C2) - diag(r~) U1n (U2^T C2)        (p2 scales ROWS: E2)
    P~^T C1 = (C3 ⊘ U2)((c~ ⊘ U1n)^T C1) - U2 (U1n^T (diag(r~) C1))
    dW_Q = beta X^T P~ C2,  dW_K = beta X'^T P~^T C1,  dW_V = X'^T U2 (U1n^T c~)

⊘ is the row-wise Kronecker (face-splitting) product; (A ⊘ B)(C ⊘ D)^T = (A C^T) ∘ (B D^T) gives
F~ ∘ G~ = (U1n ⊘ c~)(U2 ⊘ C3)^T = (c~ ⊘ U1n)(C3 ⊘ U2)^T.  The K side uses the swapped
operand order on purpose: each face-split product then appears once per kernel, so SymPy's
CSE can never hoist a bare U ⊘ C (an L x k d array) out of its product; the runtime ops
(`kernels/_ops.py`) run either order as one GEMM over the wide (k) factor.

Each step is one small product, so the printed contraction order is this one: the dominant
cost is four GEMMs of L x k by k x d^2 (8 L k d^2 flops), memory O(L k + L d^2).
`lowrank_proofs` proves the chain equals the exact derivation when U1 U2^T = exp(S) exactly,
and equals the exact gradient formulas of the approximate softmax F~ for any U1, U2.
"""

from __future__ import annotations

import sympy as sp

from .exact import L, L_kv, W_K, W_Q, W_V, X_kv, X_q, Y, beta, d
from .nodes import Derivation, FaceSplit, RowDot, divide_rows, frobenius_half, ones, scale_rows

k = sp.Symbol("k", integer=True, positive=True)

U1 = sp.MatrixSymbol("U1", L, k)
_U2 = sp.MatrixSymbol("U2", L_kv, k)
_X_kv = X_kv

INPUTS = [U1, _U2, X_q, X_kv, W_Q, W_K, W_V, Y, beta]

# Intermediate terms exported by the terms kernel (for checks against the exact terms).
TERMS = ("C1", "C2", "C3", "alpha", "U1n", "O", "c", "r", "pC2", "pTC1", "FTc", "loss")
WEIGHT_GRADIENTS = {"Q": "dW_Q", "K": "dW_K", "V": "dW_V"}

P2_VARIANTS = ("rows", "columns")


def build(p2: str = "rows") -> Derivation:
    """The chain. `p2="columns"` is the paper's printed p~2 = F~ diag(r~) (erratum E2): a wrong
    variant, kept only so the proofs can be seen to fail on it (it needs L = L_kv to type-check)."""
    if p2 not in P2_VARIANTS:
        raise ValueError(f"p2 must be one of {P2_VARIANTS}, got {p2!r}")
    if p2 == "rows":
        D = Derivation("lowrank", INPUTS)
        U2, X_kv = _U2, _X_kv
    else:  # diag(r~) (L x L) next to key-side factors: only self-attention shapes type-check
        U2, X_kv = sp.MatrixSymbol("U2", L, k), sp.MatrixSymbol("X_kv", L, d)
        D = Derivation("lowrank_paper_p2", [U1, U2, X_q, X_kv, W_Q, W_K, W_V, Y, beta])
    ones_kv = ones(U2.shape[0])
    C1 = D.let("C1", X_q * W_Q, "C^(1) W = X W_Q (queries)")
    C2 = D.let("C2", X_kv * W_K, "C^(2) = X' W_K (keys)")
    C3 = D.let("C3", X_kv * W_V, "C^(3) = X' W_V (values)")
    s = D.let("s", U2.T * ones_kv, "U2^T 1 (k x 1)")
    alpha = D.let("alpha", U1 * s, "alpha~ = U1 (U2^T 1) = E~ 1, E~ := U1 U2^T ≈ exp(S) (Lemma 3.3)")
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
