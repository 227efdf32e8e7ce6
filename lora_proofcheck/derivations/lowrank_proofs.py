"""Exact proofs of the chained low-rank derivations (`lowrank_chain.py`: the fused chain the kernels run,
`build`, and the lemma-by-lemma chain, `build_lemmas`) on explicit symbolic matrices, each at the size
`sufficiency` computes from both sides of its identity (so for every size; see `decomposition_proofs`).

(a) the face-splitting identity (A1 B1^T) ∘ (A2 B2^T) = (A1 ⊘ A2)(B1 ⊘ B2)^T, and the operand
    swap (A1 ⊘ A2)(B1 ⊘ B2)^T = (A2 ⊘ A1)(B2 ⊘ B1)^T the K side relies on;
(b) rowsum(F~ ∘ G~) = RowDot(c~, O~) for any factors (no normalisation needed);
(c) with the "approximation" exact (U1 = E, a matrix of free positive symbols standing for
    exp(S), and U2 = I) every output of the chain equals the exact derivation's with u = E
    (L_kv = 3, d = 3: the face-split blocks need three d indices, the softmax three keys);
(d) with general U1, U2 the chain's outputs equal the exact gradient FORMULAS evaluated at
    F~ := diag(U1 U2^T 1 + n)^-1 U1 U2^T: P~ = F~∘G~ - diag((F~∘G~)1) F~ with G~ = c~ C3^T, c~ = F~ C3 - Y,
    dW_Q = beta X^T P~ C2, dW_K = beta X'^T P~^T C1, dW_V = X'^T F~^T c~ (k = 3, L_kv = 3, d = 3). So the
    chain's error is the exact formulas' sensitivity to F~ - F alone, which is what the certificate
    bounds. What (d) does NOT say: that the chain is the gradient of the approximate loss
    1/2 ||F~ C3 - Y||^2. That gradient differs in its Q and K parts (F~ = p(S)/rowsum carries
    p'(S)/p(S) on P~, p' != p for a polynomial); its loss and dW_V are the chain's (erratum O1 of
    ours: `report.errata`, with a stored counterexample).

In (c) the only denominators are the normalisers of E; renaming them to free symbols alpha_i makes
both sides Laurent polynomials, so `expand(...) == 0` is a proof. (d) splits where the chain
normalises (see there) and is a polynomial identity. Outputs are compared whole: every entry of
loss, dW_Q, dW_K, dW_V. C1, C2, C3 are free matrices: both derivations define them by the same
steps (checked; `decomposition_proofs.prove_projections` proves those steps), so an identity for
all C's holds in particular for C = X W, and the expressions stay small.
"""

from __future__ import annotations

import sympy as sp

from .._lib.records import Outcome
from . import decomposition, lowrank_chain
from . import sufficiency as su
from .decomposition_proofs import SORTS, at_fixed_size, count_expr, count_steps, laurent_zero, proved, sized
from .interpreter import Interpreter, symbol_matrix
from .nodes import FaceSplit, Fill, divide_rows, rowsum

__all__ = [
    "OUTPUTS", "PROJECTIONS", "SORTS_K", "chain_at_F_tilde_sides", "chain_exact_features_sides",
    "prove_chain_equals_exact_formulas_at_F_tilde", "prove_chain_exact_features", "prove_face_split_identity",
    "prove_face_split_swap", "prove_rowdot", "shared_projections",
]

OUTPUTS = ("loss", "dW_Q", "dW_K", "dW_V")
PROJECTIONS = ("C1", "C2", "C3")
SORTS_K = {**SORTS, lowrank_chain.k: "k"}


def _v(rows, cols=()):
    return su.variable(rows, cols)


def _face_split_instance(n, m, k1, k2):
    """A1 (n x k1), A2 (n x k2), B1 (m x k1), B2 (m x k2) as matrix symbols, an evaluator of matrix
    expressions in them on explicit symbol matrices, and an index counter of the same (sorts n, m, k1, k2)."""
    nn, mm, kk1, kk2 = sp.symbols("n m k1 k2", integer=True, positive=True)
    A1, A2 = sp.MatrixSymbol("A1", nn, kk1), sp.MatrixSymbol("A2", nn, kk2)
    B1, B2 = sp.MatrixSymbol("B1", mm, kk1), sp.MatrixSymbol("B2", mm, kk2)
    env = {"A1": symbol_matrix("a", n, k1), "A2": symbol_matrix("b", n, k2),
           "B1": symbol_matrix("c", m, k1), "B2": symbol_matrix("e", m, k2)}
    evaluate = Interpreter(env, {nn: n, mm: m, kk1: k1, kk2: k2})
    count = su.IndexCounter({"A1": _v(("n",), ("k1",)), "A2": _v(("n",), ("k2",)), "B1": _v(("m",), ("k1",)),
                             "B2": _v(("m",), ("k2",))}, {nn: "n", mm: "m", kk1: "k1", kk2: "k2"})
    return (A1, A2, B1, B2), evaluate, count


def prove_face_split_identity(n=3, m=2, k1=2, k2=3) -> Outcome:
    """(A1 B1^T) ∘ (A2 B2^T) = (A1 ⊘ A2)(B1 ⊘ B2)^T, ⊘ as the Interpreter evaluates FaceSplit."""
    (A1, A2, B1, B2), evaluate, count = _face_split_instance(n, m, k1, k2)
    left, right = sp.HadamardProduct(A1 * B1.T, A2 * B2.T), FaceSplit(A1, A2) * FaceSplit(B1, B2).T
    out = proved("face-splitting identity", "(A1 B1^T) ∘ (A2 B2^T) = (A1 ⊘ A2)(B1 ⊘ B2)^T",
                 "AS24 Fact A.2; Lemma 3.6", f"n={n}, m={m}, k1={k1}, k2={k2}",
                 lambda: laurent_zero(evaluate(left) - evaluate(right)))
    need = su.required_sizes({"x": [count(left), count(right)]})
    return at_fixed_size(out, need, {"n": n, "m": m, "k1": k1, "k2": k2})


def prove_face_split_swap(n=3, m=2, k1=2, k2=3) -> Outcome:
    """(A1 ⊘ A2)(B1 ⊘ B2)^T = (A2 ⊘ A1)(B2 ⊘ B1)^T (the K side's operand order)."""
    (A1, A2, B1, B2), evaluate, count = _face_split_instance(n, m, k1, k2)
    left, right = FaceSplit(A1, A2) * FaceSplit(B1, B2).T, FaceSplit(A2, A1) * FaceSplit(B2, B1).T
    out = proved("face-split operand swap", "(A1 ⊘ A2)(B1 ⊘ B2)^T = (A2 ⊘ A1)(B2 ⊘ B1)^T",
                 "new (used for P~^T C^(1))", f"n={n}, m={m}, k1={k1}, k2={k2}",
                 lambda: laurent_zero(evaluate(left) - evaluate(right)))
    need = su.required_sizes({"x": [count(left), count(right)]})
    return at_fixed_size(out, need, {"n": n, "m": m, "k1": k1, "k2": k2})


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
    out = proved("r~ = RowDot(c~, O~)", "rowsum(F~ ∘ (c~ C3^T)) = <c~_i, O~_i>, F~ = U1n U2^T any factors",
                 "eq. C.1 / Lemma 3.7 (G = c C3^T: E1)", f"L={L}, L_kv={L_kv}, d={d}, k={k}",
                 lambda: laurent_zero(lhs - I.env["r"]))
    dc = decomposition
    env = {"U1n": _v(("q",), ("k",)), "U2": _v(("kv",), ("k",)), "C3": _v(("kv",), ("d",)), "Y": _v(("q",), ("d",))}
    U1m, U2m = sp.MatrixSymbol("U1n", dc.L, lowrank_chain.k), sp.MatrixSymbol("U2", dc.L_kv, lowrank_chain.k)
    C3m, Ym = sp.MatrixSymbol("C3", dc.L_kv, dc.d), sp.MatrixSymbol("Y", dc.L, dc.d)
    Ft = U1m * U2m.T
    left = count_expr(env, rowsum(sp.HadamardProduct(Ft, (Ft * C3m - Ym) * C3m.T)), SORTS_K)
    right = count_steps(env, lowrank_chain.build_lemmas(), ["r"], ("U1n", "C3"), SORTS_K)["r"]
    need = su.required_sizes({"r": [left, right]})
    return at_fixed_size(out, need, {"q": L, "kv": L_kv, "k": k, "d": d})


def _shared_projections(D) -> bool:
    """Both derivations define C1, C2, C3 by the same expressions, so the proofs may take them as
    free matrices: an identity for all C's holds in particular for C = X W (and is smaller)."""
    ref = decomposition.build()  # compared as text: the wrong p2 variant has other (square) shape symbols
    names = {s.name for s in D.steps}
    return all(sp.sstr(D.step(n).expr) == sp.sstr(ref.step(n).expr) for n in PROJECTIONS if n in names)


#: public name for the derivations of other modules (peer_proofs) built on the same projections
shared_projections = _shared_projections


class _Head:
    """Explicit symbolic inputs of one head: free X, X', Y, beta and free projections C1, C2, C3."""

    def __init__(self, L, L_kv, d):
        self.L, self.L_kv, self.d = L, L_kv, d
        self.n = sp.Symbol("n", positive=True)  # the Softmax_1 offset (n -> 0: softmax; see decomposition_proofs)
        self.env = {"X_q": symbol_matrix("x", L, d), "X_kv": symbol_matrix("z", L_kv, d),
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


def _head_env(**features) -> dict:
    """The counter's inputs of one head: free X, X', Y, C1, C2, C3 and scalars, plus `features`."""
    return {"X_q": _v(("q",), ("d",)), "X_kv": _v(("kv",), ("d",)), "Y": _v(("q",), ("d",)),
            "beta": su.scalar_variable(), "n": su.scalar_variable(), "log_n": su.scalar_variable(),
            "C1": _v(("q",), ("d",)), "C2": _v(("kv",), ("d",)), "C3": _v(("kv",), ("d",)), **features}


def chain_exact_features_sides(derivation=None, outputs=OUTPUTS) -> dict:
    """Both sides of (c), abstractly: the chain at U1 = E, U2 = I and the exact derivation at u = E.
    With U2 = I the feature index IS the key index (one sort)."""
    D = derivation or lowrank_chain.build()
    sorts = {**SORTS_K, lowrank_chain.k: "kv"}
    E = su.exp_of_logits()
    chain = count_steps(_head_env(U1=E, U2=su.identity("kv")), D, list(outputs), PROJECTIONS, sorts)
    ref = count_steps(_head_env(u=E), decomposition.build(), list(outputs), PROJECTIONS + ("u",), sorts)
    return {n: [chain[n], ref[n]] for n in outputs}


def prove_chain_exact_features(derivation=None, outputs=OUTPUTS, at=None) -> Outcome:
    """(c) U1 = E (exp(S) as free positive symbols), U2 = I: the chain's outputs = the exact outputs
    with u = E (`outputs`: those of a module subset's chain); cross-attention (X' free)."""
    D = derivation or lowrank_chain.build()

    def check(sizes, query_rows):
        return _shared_projections(D) and all(_exact_features_hold(D, L, sizes["kv"], sizes["d"], outputs)
                                              for L in query_rows)

    return sized(f"chain = exact ({D.name}, U1 = exp(S), U2 = I)",
                 "loss, dW_Q, dW_K, dW_V of the low-rank chain = the exact derivation's when U1 U2^T = exp(S); "
                 "C1, C2, C3 free", "Thm 3.1 / A.1 (E1, E2 fixed)", lambda: chain_exact_features_sides(D, outputs),
                 check, at=at)


def _exact_features_hold(D, L, L_kv, d, outputs) -> bool:
    head = _Head(L, L_kv, d)
    E = sp.Matrix(L, L_kv, lambda i, j: sp.Symbol(f"E_{i}_{j}", positive=True))
    chain = head.run(D, L_kv, outputs, U1=E, U2=sp.eye(L_kv))
    ref = head.run(decomposition.build(), L_kv, outputs, u=E)
    elim = {E[i, 0]: head.alpha[i] - head.n - sum(E[i, 1:]) for i in range(L)}  # normalisers -> alpha_i
    return laurent_zero(_difference(chain, ref, lambda M: M.xreplace(elim)))


def _split_of(D) -> str:
    """Where a chain normalises: at U1n (`build_lemmas`) or at alpha~ (`build`)."""
    return "U1n" if "U1n" in {s.name for s in D.steps} else "alpha"


def chain_at_F_tilde_sides(derivation=None, outputs=OUTPUTS) -> dict:
    """Both sides of every identity (d)'s proof checks, abstractly: step (i) (alpha~ = U1 U2^T 1 + n;
    for the lemma chain also U1n = diag(alpha~)^-1 U1 at a free alpha~) and step (ii) (the chain with
    its normalising step freed against the exact formulas at F = diag(alpha)^-1 U1 U2^T, resp. U1n U2^T)."""
    D = derivation or lowrank_chain.build()
    dc, k = decomposition, lowrank_chain.k
    U1, U2 = _v(("q",), ("k",)), _v(("kv",), ("k",))
    U1m, U2m = sp.MatrixSymbol("U1", dc.L, k), sp.MatrixSymbol("U2", dc.L_kv, k)
    alpha_m = sp.MatrixSymbol("alpha", dc.L, 1)
    sides = {}
    got = count_steps(_head_env(U1=U1, U2=U2), D, ["alpha"], PROJECTIONS, SORTS_K)["alpha"]
    sides["(i) alpha~"] = [got, count_expr(_head_env(U1=U1, U2=U2), rowsum(U1m * U2m.T) + Fill(sp.Symbol("n"), dc.L),
                                           SORTS_K)]
    alpha = _v(("q",))
    if _split_of(D) == "U1n":
        env = _head_env(U1=U1, U2=U2, alpha=alpha)
        got = count_steps(env, D, ["U1n"], PROJECTIONS + ("alpha",), SORTS_K)["U1n"]
        sides["(i) U1n"] = [got, count_expr(env, divide_rows(U1m, alpha_m), SORTS_K)]
        chain = count_steps(_head_env(U1n=U1, U2=U2), D, list(outputs), PROJECTIONS + ("U1n",), SORTS_K)
        F = su.matmul(U1, su.transpose(U2))
    else:
        chain = count_steps(_head_env(U1=U1, U2=U2, alpha=alpha), D, list(outputs), PROJECTIONS + ("alpha",),
                            SORTS_K)
        F = su.matmul(su.inverse_diag(alpha), su.matmul(U1, su.transpose(U2)))
    ref = count_steps(_head_env(F=F), decomposition.build(), list(outputs), PROJECTIONS + ("F",), SORTS_K)
    sides.update({f"(ii) {n}": [chain[n], ref[n]] for n in outputs})
    return sides


def prove_chain_equals_exact_formulas_at_F_tilde(derivation=None, outputs=OUTPUTS, at=None) -> Outcome:
    """(d) General U1, U2 (rank k): the chain's outputs = the exact gradient formulas evaluated at
    F~ = diag(U1 U2^T 1 + n)^-1 U1 U2^T (not the gradient of the approximate loss: see the module docstring).

    In exact steps, split where the chain normalises: at alpha~ (`build`) or at U1n (`build_lemmas`).
    (i) That step is what it should be for every U1, U2: alpha~ = U1 U2^T 1 + n (a polynomial
    identity), and for the lemma chain U1n = diag(alpha~)^-1 U1 at a FREE alpha~ (a Laurent polynomial
    identity; the two compose by substitution). (ii) With that step replaced by FREE symbols (alpha_i,
    resp. a free L x k matrix) the chain's outputs equal the exact formulas at F = diag(alpha)^-1 U1 U2^T,
    resp. F = U1n U2^T: a (Laurent-)polynomial identity, and for the lemma chain no later step reads U1
    except through the freed step. (i) and (ii) give the claim for every U1, U2."""
    D = derivation or lowrank_chain.build()

    def check(sizes, query_rows):
        return _shared_projections(D) and all(
            _at_F_tilde_holds(D, L, sizes["kv"], sizes["d"], sizes["k"], outputs) for L in query_rows)

    return sized(f"chain = exact formulas at F~ ({D.name})",
                 "for any U1, U2: chain = the exact gradient formulas evaluated at F~ = diag(U1 U2^T 1 + n)^-1 U1 U2^T "
                 "(not the gradient of the approximate loss, erratum O1)",
                 "Lemmas 3.3-3.7 (what the certificate relies on)", lambda: chain_at_F_tilde_sides(D, outputs),
                 check, at=at)


def _at_F_tilde_holds(D, L, L_kv, d, k, outputs) -> bool:
    head = _Head(L, L_kv, d)
    U1, U2 = symbol_matrix("u", L, k), symbol_matrix("w", L_kv, k)
    sizes = {decomposition.L: L, decomposition.L_kv: L_kv, decomposition.d: d, lowrank_chain.k: k}
    names = {s.name for s in D.steps}
    projections = {p: head.env[p] for p in PROJECTIONS if p in names}
    E = U1 * U2.T
    A = sp.Matrix(L, 1, lambda i, _: sp.Symbol(f"alpha_{i}", positive=True))
    I = Interpreter({"U1": U1, "U2": U2, "n": head.n, **projections}, sizes)
    I.run(D, ["alpha"], given=tuple(projections))
    step_i = [sp.expand(x) for x in I.env["alpha"] - E * sp.ones(L_kv, 1) - head.n * sp.ones(L, 1)]
    if _split_of(D) == "U1n":
        J = Interpreter({"U1": U1, "U2": U2, "n": head.n, "alpha": A, **projections}, sizes)
        J.run(D, ["U1n"], given=tuple(projections) + ("alpha",))
        step_i += [sp.expand(x) for x in J.env["U1n"] - sp.diag(*[1 / a for a in A]) * U1]
        V = symbol_matrix("f", L, k)
        chain = head.run(D, k, outputs, U1n=V, U2=U2)
        ref = head.run(decomposition.build(), k, outputs, F=V * U2.T)
        uses = {str(a) for s in D.needed(list(outputs), given=("U1n",)) if s.name != "U1n"
                for a in s.expr.atoms(sp.MatrixSymbol)}
        reads_u1 = "U1" in uses
    else:
        chain = head.run(D, k, outputs, U1=U1, U2=U2, alpha=A)
        ref = head.run(decomposition.build(), k, outputs, F=sp.diag(*[1 / a for a in A]) * E)
        reads_u1 = False  # every step may read U1: the identity (ii) holds for all U1 and alpha
    return all(x == 0 for x in step_i) and not reads_u1 and laurent_zero(_difference(chain, ref))

