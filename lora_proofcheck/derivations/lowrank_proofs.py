"""Exact proofs of the chained low-rank derivations (`lowrank_chain.py`: the fused chain the kernels run,
`build`, and the lemma-by-lemma chain, `build_lemmas`) on explicit symbolic matrices.

(a) the face-splitting identity (A1 B1^T) ∘ (A2 B2^T) = (A1 ⊘ A2)(B1 ⊘ B2)^T, and the operand
    swap (A1 ⊘ A2)(B1 ⊘ B2)^T = (A2 ⊘ A1)(B2 ⊘ B1)^T the K side relies on;
(b) rowsum(F~ ∘ G~) = RowDot(c~, O~) for any factors (no normalisation needed);
(c) with the "approximation" exact (U1 = E, a matrix of free positive symbols standing for
    exp(S), and U2 = I) every output of the chain equals the exact derivation's with u = E;
(d) with general U1, U2 (rank k = 2) the chain equals the exact formulas applied to
    F~ := diag(U1 U2^T 1)^-1 U1 U2^T: it evaluates the exact gradient formulas exactly at F~
    (the plug-in gradient), so its error is the exact path's sensitivity to F~ - F alone (what the
    certificate bounds).  It is not the derivative of the approximate loss (the model gradient):
    `peer_proofs` refutes that.

In (c) the only denominators are the row sums of E; renaming them to free symbols alpha_i makes
both sides Laurent polynomials, so `expand(...) == 0` is a proof. (d) splits where the chain normalises (see there)
and is a polynomial identity. Outputs are compared whole: every entry of loss, dW_Q, dW_K, dW_V.
C1, C2, C3 are free matrices: both derivations define them by the same steps (checked), so an
identity for all C's holds in particular for C = X W, and the expressions stay small.
"""

from __future__ import annotations

import sympy as sp

from .._lib.records import Outcome
from . import decomposition, lowrank_chain
from .decomposition_proofs import laurent_zero, proved
from .interpreter import Interpreter, symbol_matrix
from .nodes import FaceSplit

__all__ = [
    "OUTPUTS", "prove_chain_exact_features", "prove_chain_is_gradient_of_approximate_softmax", "prove_face_split_identity",
    "prove_face_split_swap", "prove_rowdot", "shared_projections",
]

OUTPUTS = ("loss", "dW_Q", "dW_K", "dW_V")


def _face_split_instance(n, m, k1, k2):
    """A1 (n x k1), A2 (n x k2), B1 (m x k1), B2 (m x k2) as matrix symbols, and an evaluator
    of matrix expressions in them on explicit symbol matrices."""
    nn, mm, kk1, kk2 = sp.symbols("n m k1 k2", integer=True, positive=True)
    A1, A2 = sp.MatrixSymbol("A1", nn, kk1), sp.MatrixSymbol("A2", nn, kk2)
    B1, B2 = sp.MatrixSymbol("B1", mm, kk1), sp.MatrixSymbol("B2", mm, kk2)
    env = {"A1": symbol_matrix("a", n, k1), "A2": symbol_matrix("b", n, k2),
           "B1": symbol_matrix("c", m, k1), "B2": symbol_matrix("e", m, k2)}
    evaluate = Interpreter(env, {nn: n, mm: m, kk1: k1, kk2: k2})
    return (A1, A2, B1, B2), evaluate


def prove_face_split_identity(n=3, m=2, k1=2, k2=3) -> Outcome:
    """(A1 B1^T) ∘ (A2 B2^T) = (A1 ⊘ A2)(B1 ⊘ B2)^T, ⊘ as the Interpreter evaluates FaceSplit."""
    (A1, A2, B1, B2), evaluate = _face_split_instance(n, m, k1, k2)
    lhs = evaluate(sp.HadamardProduct(A1 * B1.T, A2 * B2.T))
    rhs = evaluate(FaceSplit(A1, A2) * FaceSplit(B1, B2).T)
    return proved("face-splitting identity", "(A1 B1^T) ∘ (A2 B2^T) = (A1 ⊘ A2)(B1 ⊘ B2)^T",
                  "AS24 Fact A.2; Lemma 3.6", f"n={n} m={m} k1={k1} k2={k2}",
                  lambda: laurent_zero(lhs - rhs))


def prove_face_split_swap(n=3, m=2, k1=2, k2=3) -> Outcome:
    """(A1 ⊘ A2)(B1 ⊘ B2)^T = (A2 ⊘ A1)(B2 ⊘ B1)^T (the K side's operand order)."""
    (A1, A2, B1, B2), evaluate = _face_split_instance(n, m, k1, k2)
    lhs = evaluate(FaceSplit(A1, A2) * FaceSplit(B1, B2).T)
    rhs = evaluate(FaceSplit(A2, A1) * FaceSplit(B2, B1).T)
    return proved("face-split operand swap", "(A1 ⊘ A2)(B1 ⊘ B2)^T = (A2 ⊘ A1)(B2 ⊘ B1)^T",
                  "new (used for P~^T C^(1))", f"n={n} m={m} k1={k1} k2={k2}",
                  lambda: laurent_zero(lhs - rhs))


def prove_rowdot(L=3, L_kv=2, k=2, d=2) -> Outcome:
    """r~ = rowsum(F~ ∘ G~) with F~ = U1n U2^T, G~ = c~ C3^T, equals RowDot(c~, O~)."""
    U1n, U2 = symbol_matrix("f", L, k), symbol_matrix("g", L_kv, k)
    C3, Y = symbol_matrix("v", L_kv, d), symbol_matrix("y", L, d)
    sizes = {decomposition.L: L, decomposition.L_kv: L_kv, decomposition.d: d, lowrank_chain.k: k}
    I = Interpreter({"U1n": U1n, "U2": U2, "C3": C3, "Y": Y}, sizes)
    I.run(lowrank_chain.build_lemmas(), ["r"], given=("U1n", "C3"))
    F = U1n * U2.T
    c = F * C3 - Y
    lhs = F.multiply_elementwise(c * C3.T) * sp.ones(L_kv, 1)
    return proved("r~ = RowDot(c~, O~)", "rowsum(F~ ∘ (c~ C3^T)) = <c~_i, O~_i>, F~ = U1n U2^T any factors",
                  "eq. C.1 / Lemma 3.7 (G = c C3^T: E1)", f"L={L} L_kv={L_kv} k={k} d={d}",
                  lambda: laurent_zero(lhs - I.env["r"]))


PROJECTIONS = ("C1", "C2", "C3")


def shared_projections(D) -> bool:
    """Both derivations define C1, C2, C3 by the same expressions, so the proofs may take them as
    free matrices: an identity for all C's holds in particular for C = X W (and is smaller)."""
    ref = decomposition.build()  # compared as text: the wrong p2 variant has other (square) shape symbols
    names = {s.name for s in D.steps}
    return all(sp.sstr(D.step(n).expr) == sp.sstr(ref.step(n).expr) for n in PROJECTIONS if n in names)


class _Head:
    """Explicit symbolic inputs of one head: free X, X', Y, beta and free projections C1, C2, C3."""

    def __init__(self, L, L_kv, d, cross):
        self.L, self.L_kv, self.d = L, L_kv, d
        X_q = symbol_matrix("x", L, d)
        self.n = sp.Symbol("n", positive=True)  # the Softmax_1 offset (n -> 0: softmax; see decomposition_proofs)
        self.env = {"X_q": X_q, "X_kv": symbol_matrix("z", L_kv, d) if cross else X_q,
                    "Y": symbol_matrix("y", L, d), "beta": sp.Symbol("beta", real=True),
                    "n": self.n, "log_n": sp.log(self.n),
                    "C1": symbol_matrix("q", L, d), "C2": symbol_matrix("k", L_kv, d),
                    "C3": symbol_matrix("v", L_kv, d)}
        self.alpha = [sp.Symbol(f"alpha_{i}", positive=True) for i in range(L)]

    def run(self, derivation, k, outputs=OUTPUTS, **given):
        sizes = {decomposition.L: self.L, decomposition.L_kv: self.L_kv, decomposition.d: self.d, lowrank_chain.k: k}
        I = Interpreter({**self.env, **given}, sizes, rowmax=lambda S: sp.zeros(S.rows, 1))  # u given unshifted
        I.run(derivation, list(outputs), given=PROJECTIONS + tuple(given))
        return {name: I.env[name] for name in outputs}


def _difference(a: dict, b: dict, rename=lambda M: M) -> list:
    out = []
    for name in a:
        x, y = a[name], b[name]
        x = x if isinstance(x, sp.MatrixBase) else sp.Matrix([[x]])
        y = y if isinstance(y, sp.MatrixBase) else sp.Matrix([[y]])
        out.extend(rename(x - y))
    return out


def prove_chain_exact_features(L=3, L_kv=None, d=2, derivation=None, outputs=OUTPUTS) -> Outcome:
    """U1 = E (exp(S) as free positive symbols), U2 = I: chain outputs = exact outputs with u = E
    (`outputs`: those of a module subset's chain)."""
    cross = L_kv is not None
    L_kv = L_kv or L
    D = derivation or lowrank_chain.build()
    head = _Head(L, L_kv, d, cross)
    E = sp.Matrix(L, L_kv, lambda i, j: sp.Symbol(f"E_{i}_{j}", positive=True))
    chain = head.run(D, L_kv, outputs, U1=E, U2=sp.eye(L_kv))
    ref = head.run(decomposition.build(), L_kv, outputs, u=E)
    elim = {E[i, 0]: head.alpha[i] - head.n - sum(E[i, 1:]) for i in range(L)}  # normalisers -> alpha_i
    diff = _difference(chain, ref, lambda M: M.xreplace(elim))
    kind = f"cross L_kv={L_kv}" if cross else "self"
    return proved(f"chain = exact ({D.name}, U1 = exp(S), U2 = I)",
                  "loss, dW_Q, dW_K, dW_V of the low-rank chain = exact derivation when U1 U2^T = exp(S)",
                  "Thm 3.1 / A.1 (E1, E2 fixed)", f"L={L} d={d} {kind}; C1, C2, C3 free",
                  lambda: shared_projections(D) and laurent_zero(diff))


def prove_chain_is_gradient_of_approximate_softmax(L=3, L_kv=2, d=2, k=2, derivation=None) -> Outcome:
    """General U1, U2 (rank k): chain outputs = exact formulas at F~ = diag(U1 U2^T 1)^-1 U1 U2^T.

    In two exact steps, split where the chain normalises: at alpha~ (`build`) or at U1n
    (`build_lemmas`).  (i) That step is what it should be for every U1, U2: alpha~ = U1 U2^T 1
    (a polynomial identity), resp. U1n U2^T = F~ (rational, checked by `cancel`).  (ii) With that
    step replaced by FREE symbols (alpha_i, resp. a free L x k matrix) the chain's outputs equal
    the exact formulas at F = diag(alpha)^-1 U1 U2^T, resp. F = U1n U2^T: a Laurent-polynomial
    identity, and no later step reads U1 except through the freed step where that matters.
    (i) and (ii) give the claim for every U1, U2."""
    D = derivation or lowrank_chain.build()
    head = _Head(L, L_kv, d, cross=L_kv != L)
    U1, U2 = symbol_matrix("u", L, k), symbol_matrix("w", L_kv, k)
    sizes = {decomposition.L: L, decomposition.L_kv: L_kv, decomposition.d: d, lowrank_chain.k: k}
    names = {s.name for s in D.steps}
    split = "U1n" if "U1n" in names else "alpha"
    I = Interpreter({"U1": U1, "U2": U2, "n": head.n, **{p: head.env[p] for p in PROJECTIONS if p in names}}, sizes)
    I.run(D, [split], given=tuple(n for n in PROJECTIONS if n in names))
    E = U1 * U2.T
    if split == "U1n":
        V = symbol_matrix("f", L, k)
        F = sp.diag(*[1 / (sum(E[i, :]) + head.n) for i in range(L)]) * E
        step_i = [sp.cancel(x) for x in I.env["U1n"] * U2.T - F]
        chain = head.run(D, k, U1n=V, U2=U2)
        ref = head.run(decomposition.build(), k, F=V * U2.T)
        uses = {str(a) for s in D.needed(list(OUTPUTS), given=("U1n",)) if s.name != "U1n"
                for a in s.expr.atoms(sp.MatrixSymbol)}
        reads_u1 = "U1" in uses
    else:
        A = sp.Matrix(L, 1, lambda i, _: sp.Symbol(f"alpha_{i}", positive=True))
        step_i = [sp.expand(x) for x in I.env["alpha"] - E * sp.ones(L_kv, 1) - head.n * sp.ones(L, 1)]
        chain = head.run(D, k, U1=U1, U2=U2, alpha=A)
        ref = head.run(decomposition.build(), k, F=sp.diag(*[1 / a for a in A]) * E)
        reads_u1 = False  # every step may read U1: the identity (ii) holds for all U1 and alpha
    return proved(f"chain = exact formulas at F~ ({D.name})",
                  "for any U1, U2: chain = exact formulas at F~ = diag(U1 U2^T 1 + n)^-1 U1 U2^T",
                  "Lemmas 3.3-3.7 (what the certificate relies on)", f"L={L} L_kv={L_kv} d={d} k={k}",
                  lambda: all(x == 0 for x in step_i) and not reads_u1 and shared_projections(D)
                  and laurent_zero(_difference(chain, ref)))

