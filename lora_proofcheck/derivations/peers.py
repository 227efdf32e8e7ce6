"""The MODEL gradient of a low-rank approximate attention (what autograd through a linear-attention
approximation computes), beside the paper's PLUG-IN chain (`lowrank_chain.py`: the exact gradient
formulas evaluated at F~), and Performer's FAVOR+ feature map with its backward.

Both modes start from E~ := U1 U2^T ≈ exp(S) (U1 = phi(Q), U2 = psi(K), Q := beta C1, K := C2) and
the same forward pass: alpha~ = E~ 1 + n (n the Softmax_1 offset, 0 for softmax), F~ = diag(alpha~)^-1
E~, O~ = F~ C3, c~ = O~ - Y, r~ = <c~_i, O~_i>.  With

    M := dl~/dE~ = diag(alpha~)^-1 (c~ C3^T - r~ 1^T)          (rank d + 1; n enters through alpha~ only)

    plug-in  dL/dS ≈ E~ ∘ M            (= F~ ∘ G~ - diag(r~) F~, the paper's P~)
    model    dl~/dS = (dE~/dS) ∘ M     (only when E~ is a function of S entrywise: E~ = P(S))

and dl~/dC3 = F~^T c~ in both, so dW_V (hence dL/dA_V, dL/dB_V) and the loss agree exactly.

(a) `build_model_lowrank`: the generic low-rank loss l~(U1, U2, C3), any feature maps. Writing
    Z := diag(alpha~)^-1 [-r~ | c~] and Z2 := [1 | C3] (so M = Z Z2^T, never formed):
        Vq = U2^T Z2,  dl~/dU1 = M U2 = Z Vq^T,  Vk = U1^T Z,  dl~/dU2 = M^T U1 = Z2 Vk^T,
        dl~/dC3 = U2 Vk[:, 1:]
    five GEMMs k x (d + 1): O((L + L_kv) k d), d times cheaper than the plug-in chain's k x d^2.
    The feature maps' vector-Jacobian products then give dl~/dQ, dl~/dK (monomial features: the
    reverse of the colex recurrence, `kernels.features.monomial_vjp`; FAVOR+: `build_favor`), and
    dW_Q = beta X^T dl~/dQ, dW_K = X'^T dl~/dK, dW_V = X'^T dl~/dC3.  Three row passes
    (`MODEL_PHASES`), like the plug-in chain's.
(b) `build_model_poly`: for E~ = P(S) entrywise, dl~/dS = P'(S) ∘ M, so the model chain is the
    plug-in chain with the factors of p~1, p~2 taken from features (U1d, U2d) of P' (for a
    polynomial p of degree g: rank C(d+g-1, g-1)); alpha~, c~, r~ still come from (U1, U2).
    No feature VJP; (a) and (b) are independent routes to the same numbers (a test).

`peer_proofs` proves (a) for free U1, U2, C3 and free n, (b) for every entrywise kernel P (free atoms
P(S_ij), P'(S_ij), one function per entry), the FAVOR+ map and VJP, and the plug-in/model agreements;
and it refutes the plug-in chain as the model gradient.
"""

from __future__ import annotations

import sympy as sp

from .decomposition import W_K, W_Q, W_V, L, L_kv, X_kv, X_q, Y, beta, d
from .lowrank_chain import U1, k, n
from .nodes import (
    ColSlice,
    Derivation,
    FaceContract,
    FaceSplit,
    Fill,
    HStack,
    RowDot,
    divide_rows,
    exp_elementwise,
    frobenius_half,
    ones,
    rowsum,
    scale_rows,
)

__all__ = ["FAVOR_INPUTS", "MODEL_LOWRANK_INPUTS", "MODEL_PHASES", "MODEL_POLY_INPUTS", "MODEL_TERMS", "U1d",
           "U2", "U2d", "build_favor", "build_model_lowrank", "build_model_poly", "k_w", "m_f"]

U2 = sp.MatrixSymbol("U2", L_kv, k)
#: rank of the derivative ("weight") features of route (b)
k_w = sp.Symbol("k_w", integer=True, positive=True)
U1d = sp.MatrixSymbol("U1d", L, k_w)
U2d = sp.MatrixSymbol("U2d", L_kv, k_w)

MODEL_LOWRANK_INPUTS = [U1, U2, X_kv, W_V, Y, n]
MODEL_POLY_INPUTS = [U1, U2, U1d, U2d, X_q, X_kv, W_Q, W_K, W_V, Y, beta, n]

#: row passes of route (a): (inputs, outputs); Vq is a sum over key rows, Vk over query rows
MODEL_PHASES = {
    "key_moments": (("U2", "X_kv", "W_V"), ("Vq",)),
    "query_pass": (("U1", "Vq", "Y", "n"), ("loss", "dU1", "Vk")),
    "key_pass": (("U2", "Vk", "X_kv", "W_V"), ("dU2", "dW_V")),
}
MODEL_TERMS = ("C3", "alpha", "O", "c", "r", "loss", "dU1", "dU2", "dC3", "dW_V")


def build_model_lowrank() -> Derivation:
    """(a): loss and dl~/dU1, dl~/dU2, dl~/dC3 (and dW_V) of l~ = ½‖diag(U1 U2^T 1 + n)^-1 U1 U2^T C3 - Y‖²."""
    D = Derivation("model_lowrank", MODEL_LOWRANK_INPUTS, source=__name__)
    C3 = D.let("C3", X_kv * W_V, "C^(3) = X' W_V (values)")
    Z2 = D.let("Z2", HStack(ones(L_kv), C3), "Z2 = [1 | C3] (L_kv x (1 + d))")
    Vq = D.let("Vq", U2.T * Z2, "U2^T [1 | C3]: U2^T 1 and U2^T C3 (k x (1 + d))")
    T = D.let("T", U1 * Vq, "U1 Vq = [E~ 1 | E~ C3]")
    alpha = D.let("alpha", ColSlice(T, 0, 1) + Fill(n, L), "alpha~ = E~ 1 + n (n: Softmax_1, added exactly)")
    O = D.let("O", divide_rows(ColSlice(T, 1, 1 + d), alpha), "O~ = F~ C3")
    c = D.let("c", O - Y, "c~ = O~ - Y")
    D.let("loss", frobenius_half(c), "per-sample loss ½‖c~‖²_F of the approximate attention")
    r = D.let("r", RowDot(c, O), "r~ = <c~_i, O~_i> = rowsum(F~ ∘ G~)")
    Z = D.let("Z", divide_rows(HStack(-r, c), alpha),
              "Z = diag(alpha~)^-1 [-r~ | c~], so dl~/dE~ = M = Z Z2^T (rank d + 1, never formed)")
    D.let("dU1", Z * Vq.T, "dl~/dU1 = M U2 = Z (U2^T Z2)^T (L x k)")
    Vk = D.let("Vk", U1.T * Z, "U1^T Z = [-U1n^T r~ | U1n^T c~] (k x (1 + d))")
    D.let("dU2", Z2 * Vk.T, "dl~/dU2 = M^T U1 = Z2 (U1^T Z)^T (L_kv x k)")
    dC3 = D.let("dC3", U2 * ColSlice(Vk, 1, 1 + d), "dl~/dC3 = F~^T c~ = U2 (U1n^T c~)")
    D.let("dW_V", X_kv.T * dC3, "dL/dW_V = X'^T F~^T c~ (same as the plug-in chain)")
    return D


def build_model_poly(modules: str = "QKV") -> Derivation:
    """(b): the plug-in fused chain (`lowrank_chain.build`) with p~1, p~2 factored by (U1d, U2d) ≈ P'(S)
    instead of (U1, U2) ≈ P(S): dl~/dS = diag(alpha~)^-1 (P'(S) ∘ (c~ C3^T) - diag(r~) P'(S))."""
    if not modules or any(m not in "QKV" for m in modules) or "".join(m for m in "QKV" if m in modules) != modules:
        raise ValueError(f"modules must be a non-empty ordered subset of 'QKV', got {modules!r}")
    q, k_, v = ("Q" in modules), ("K" in modules), ("V" in modules)
    D = Derivation(f"model_poly_{modules}", MODEL_POLY_INPUTS, source=__name__)
    C3 = D.let("C3", X_kv * W_V, "C^(3) = X' W_V (values)")
    Vq = D.let("Vq", U2.T * HStack(ones(L_kv), C3), "U2^T [1 | C3]")
    T = D.let("T", U1 * Vq, "[E~ 1 | E~ C3], E~ = U1 U2^T ≈ P(S)")
    alpha = D.let("alpha", ColSlice(T, 0, 1) + Fill(n, L), "alpha~ = E~ 1 + n (n: Softmax_1, added exactly)")
    O = D.let("O", divide_rows(ColSlice(T, 1, 1 + d), alpha), "O~ = F~ C3")
    c = D.let("c", O - Y, "c~ = O~ - Y")
    D.let("loss", frobenius_half(c), "per-sample loss ½‖c~‖²_F")
    if q or k_:
        r = D.let("r", RowDot(c, O), "r~ = <c~_i, O~_i>")
    if q:
        C2 = D.let("C2", X_kv * W_K, "C^(2) = X' W_K (keys)")
        Vqd = D.let("Vqd", U2d.T * HStack(C2, FaceSplit(C3, C2)), "U2d^T [C2 | C3 ⊘ C2] (k_w x (d + d^2))")
        Td = D.let("Td", divide_rows(U1d * Vqd, alpha),
                   "diag(alpha~)^-1 E~' [C2 | C3 ⊘ C2], E~' = U1d U2d^T ≈ P'(S)")
        p1C2 = D.let("p1C2", FaceContract(c, ColSlice(Td, d, d + d**2)),
                     "diag(alpha~)^-1 (E~' ∘ (c~ C3^T)) C2 (face split, Lemma 3.6 form)")
        pC2 = D.let("pC2", p1C2 - scale_rows(r, ColSlice(Td, 0, d)), "(dl~/dS) C2 = (P'(S) ∘ M) C2")
        D.let("dW_Q", beta * X_q.T * pC2, "dl~/dW_Q = beta X^T (dl~/dS) C2 (model gradient)")
    if k_:
        C1 = D.let("C1", X_q * W_Q, "C^(1) W = X W_Q (queries)")
        # (r 1^T) ∘ C1, not diag(r) C1: a DiagMatrix(r) hoisted by CSE would be an L x L array
        Z1 = D.let("Z1", divide_rows(HStack(FaceSplit(c, C1), sp.HadamardProduct(r * ones(1, d), C1)), alpha),
                   "diag(alpha~)^-1 [c~ ⊘ C1 | diag(r~) C1]")
        # separate steps: one MatMul U2d U1d^T Z1 would print left to right, an L_kv x L product
        Vkd = D.let("Vkd", U1d.T * Z1, "U1d^T diag(alpha~)^-1 [c~ ⊘ C1 | diag(r~) C1] (k_w x (d^2 + d))")
        Tkd = D.let("Tkd", U2d * Vkd, "E~'^T diag(alpha~)^-1 [c~ ⊘ C1 | diag(r~) C1]")
        pTC1 = D.let("pTC1", FaceContract(C3, ColSlice(Tkd, 0, d**2)) - ColSlice(Tkd, d**2, d**2 + d),
                     "(dl~/dS)^T C1 = (P'(S) ∘ M)^T C1")
        D.let("dW_K", beta * X_kv.T * pTC1, "dl~/dW_K = beta X'^T (dl~/dS)^T C1 (model gradient)")
    if v:
        cn = D.let("cn", divide_rows(c, alpha), "diag(alpha~)^-1 c~")
        Vkv = D.let("Vkv", U1.T * cn, "U1n^T c~ (k x d)")
        FTc = D.let("FTc", U2 * Vkv, "F~^T c~ = U2 (U1n^T c~)")
        D.let("dW_V", X_kv.T * FTc, "dL/dW_V = X'^T F~^T c~ (same as the plug-in chain)")
    return D


# ----------------------------------------------------------------------------------------------
# FAVOR+ positive random features and their vector-Jacobian product

m_f = sp.Symbol("m", integer=True, positive=True)
Xf = sp.MatrixSymbol("Xf", L, d)             # balanced queries sgn(beta) |beta|^½ C1 or keys |beta|^½ C2
Omega = sp.MatrixSymbol("Omega", m_f, d)     # random directions, rows ~ N(0, I_d) marginally
shift = sp.MatrixSymbol("shift", L, 1)       # stabiliser: a per-row constant (F~ does not see it when n = 0)
ratio = sp.Symbol("ratio")                   # m^-1/2
Ubar = sp.MatrixSymbol("Ubar", L, m_f)       # upstream gradient dl~/dphi

FAVOR_INPUTS = [Xf, Omega, shift, ratio, Ubar]


def build_favor() -> Derivation:
    """phi(x) = m^-1/2 exp(Omega x - ||x||²/2 - s) and its VJP  dl/dx = (Ubar ∘ phi) Omega - rowsum(Ubar ∘ phi) x,
    the shift s held fixed (its true gradient is zero for softmax: `peer_proofs.prove_shift_gradient`)."""
    D = Derivation("favor", FAVOR_INPUTS, source=__name__)
    Zf = D.let("Zf", Xf * Omega.T - RowDot(Xf, Xf) * ones(1, m_f) / 2, "exponents w_l . x - ||x||²/2 (L x m)")
    phi = D.let("phi", ratio * exp_elementwise(Zf - shift * ones(1, m_f)),
                "phi(x) = m^-1/2 exp(w_l . x - ||x||²/2 - s): E[phi(x) . phi(y)] = e^{x.y - s_x - s_y}")
    H = D.let("H", sp.HadamardProduct(Ubar, phi), "H = Ubar ∘ phi")
    h = D.let("h", rowsum(H), "rowsum(H) (a step: H 1 1^T would merge into an m x d ones matrix)")
    D.let("dXf", H * Omega - sp.HadamardProduct(h * ones(1, d), Xf),
          "dl/dx = sum_l Ubar_l phi_l (w_l - x) = H Omega - rowsum(H) x")
    return D
