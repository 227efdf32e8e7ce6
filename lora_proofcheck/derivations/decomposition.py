"""The gradient decomposition (Lemmas 3.1-3.2): the exact gradient of the LoRA attention loss, term by
term, with the paper's names.

Per sample, with C1 := X W_Q, C2 := X' W_K, C3 := X' W_V (the paper's C^(1)W, C^(2), C^(3)):

    S = beta C1 C2^T,  u = exp(S - m 1^T),  alpha = u 1 + n e^-m,  F = diag(alpha)^-1 u   (f, Def. 3.2-3.4)
    c = F C3 - Y                                                               (Def. 3.5)
    G = c C3^T      = dL/dF      (the paper's q = C3 c^T, transposed: erratum E1)
    p1 = F ∘ G,  p2 = diag((F ∘ G) 1) F  (p2 scales ROWS: erratum E2),  p = p1 - p2 = dL/dS
    dL/dW_Q = beta X^T p C2,  dL/dW_K = beta X'^T p^T C1,  dL/dW_V = X'^T F^T c

m is any row-wise shift (in the kernels the row max, floored at log n): F does not depend on it, which
`decomposition_proofs.prove_shift_invariance` proves. n >= 0 is the normaliser offset of Softmax_1
(OutEffHop's outlier-free attention, the paper's App. G: F_ij = e^S_ij / (n + sum_l e^S_il)); n = 0 is
softmax. The kernels take log n (-inf for softmax), so that n e^-m = e^(log n - m) is never 0 * inf.
Every formula after F is the same for both (F's rows then sum to alpha / (alpha + n), not 1; no step
uses that they sum to 1). The adapter chain rule lives in `adapter.py`.
"""

from __future__ import annotations

import sympy as sp

from .nodes import (
    Derivation,
    Fill,
    RowMax,
    divide_rows,
    exp_elementwise,
    frobenius_half,
    rowsum,
    scale_rows,
)

L, L_kv, d = sp.symbols("L L_kv d", integer=True, positive=True)

X_q = sp.MatrixSymbol("X_q", L, d)
X_kv = sp.MatrixSymbol("X_kv", L_kv, d)
W_Q = sp.MatrixSymbol("W_Q", d, d)
W_K = sp.MatrixSymbol("W_K", d, d)
W_V = sp.MatrixSymbol("W_V", d, d)
Y = sp.MatrixSymbol("Y", L, d)
beta = sp.Symbol("beta")
log_n = sp.Symbol("log_n")  # log of the Softmax_1 normaliser offset n; -inf for softmax (n = 0)

INPUTS = [X_q, X_kv, W_Q, W_K, W_V, Y, beta, log_n]

__all__ = ["INPUTS", "TERMS", "WEIGHT_GRADIENTS", "build", "log_n"]

# The paper's names for the intermediate terms, in order (exported by the terms kernel).
TERMS = ("C1", "C2", "C3", "S", "u", "alpha", "F", "c", "G", "p1", "r", "p2", "p")
WEIGHT_GRADIENTS = {"Q": "dW_Q", "K": "dW_K", "V": "dW_V"}


def build() -> Derivation:
    D = Derivation("decomposition", INPUTS, source=__name__)
    C1 = D.let("C1", X_q * W_Q, "C^(1) W = X W_Q (queries)")
    C2 = D.let("C2", X_kv * W_K, "C^(2) = X' W_K (keys)")
    C3 = D.let("C3", X_kv * W_V, "C^(3) = X' W_V (values)")
    S = D.let("S", beta * C1 * C2.T, "logits S = beta X W_Q W_K^T X'^T")
    m = D.let("m", RowMax(S, log_n), "max(row max, log n): a shift F does not depend on")
    u = D.let("u", exp_elementwise(S - m * sp.OneMatrix(1, L_kv)), "u(W) (Def. 3.2), shifted")
    alpha = D.let("alpha", rowsum(u) + exp_elementwise(Fill(log_n, L) - m),
                  "alpha(W) = u 1 (Def. 3.3), plus the Softmax_1 offset n e^-m (0 for softmax)")
    F = D.let("F", divide_rows(u, alpha), "f(W) = diag(alpha)^-1 u, the row softmax (Def. 3.4; Softmax_1 for n > 0)")
    O = D.let("O", F * C3, "head output F C^(3)")
    c = D.let("c", O - Y, "c(W) = F C^(3) - Y (Def. 3.5)")
    D.let("loss", frobenius_half(c), "per-sample loss ½‖c‖²_F (eq. 3.4)")
    G = D.let("G", c * C3.T, "G = c C^(3)T = dL/dF; the paper's q(W) transposed (E1)")
    p1 = D.let("p1", sp.HadamardProduct(F, G), "p1 = F ∘ G (Def. 3.6)")
    r = D.let("r", rowsum(p1), "r = (F ∘ G) 1")
    p2 = D.let("p2", scale_rows(r, F), "p2 = diag(r) F (Def. 3.6, rows scaled: E2)")
    p = D.let("p", p1 - p2, "p = p1 - p2 = dL/dS (Lemma 3.2)")
    pC2 = D.let("pC2", p * C2, "p C^(2)")
    D.let("dW_Q", beta * X_q.T * pC2, "dL/dW_Q = beta X^T p C^(2) (Lemma 3.1)")
    pTC1 = D.let("pTC1", p.T * C1, "p^T C^(1)")
    D.let("dW_K", beta * X_kv.T * pTC1, "dL/dW_K = beta X'^T p^T C^(1) (Lemma D.1)")
    FTc = D.let("FTc", F.T * c, "F^T c")
    D.let("dW_V", X_kv.T * FTc, "dL/dW_V = X'^T F^T c (not in the paper)")
    return D
