"""Exact proofs of every derived term, on explicit matrices of symbols.

Method: the brute-force derivative of the scalar loss (plain SymPy calculus on explicit
entries, softmax written entry by entry) minus the closed form from the derivation (evaluated
by `explicit.Interpreter`) must vanish identically. After differentiating, each exp(S_ij) is
replaced by a free positive symbol E_ij (`Exp` keeps them atoms) and E_i0 by alpha_i - sum_{k>0} E_ik, so both sides
become Laurent polynomials (the only denominators are the row sums alpha_i); `expand` is then a
canonical form and "== 0" is an exact proof. Identities in free E are stronger than needed.

The softmax carries the Softmax_1 offset as a free positive symbol n (the normaliser is n + sum_l e^S_il
and the kernels take log n): the differences are Laurent polynomials in n too, so an identity for every
n > 0 is a polynomial identity and holds at n = 0, i.e. for softmax itself.
"""

from __future__ import annotations

import sympy as sp

from .._lib.records import Outcome, timed
from . import adapter, decomposition
from .interpreter import Interpreter, symbol_matrix

__all__ = ["Exp", "laurent_zero", "proved", "prove_G_is_dL_dF", "prove_lora_gradients", "prove_p_is_dL_dS",
           "prove_rowwise_form", "prove_shift_invariance"]


class Exp(sp.Function):
    """exp with its derivative but without SymPy's automatic exp(a)exp(a) -> exp(2a) merging,
    so every exponential stays an atom Exp(S_ij) that `rationalize` can name."""

    def fdiff(self, argindex=1):
        return self


def laurent_zero(M) -> bool:
    """Every entry of M expands to exactly 0 (a canonical form for Laurent polynomials)."""
    return all(sp.expand(x) == 0 for x in M)


class _Instance:
    """Explicit symbolic inputs of one head: X (L x d), X' (L_kv x d), W*, A, B, Y, beta, s."""

    def __init__(self, L=2, d=2, r=1, cross=False, L_kv=None, adapt="QKV"):
        self.L, self.d, self.r = L, d, r
        self.L_kv = (L_kv or L) if cross else L
        self.X_q = symbol_matrix("x", L, d)
        self.X_kv = symbol_matrix("z", self.L_kv, d) if cross else self.X_q
        self.Y = symbol_matrix("y", L, d)
        self.W0 = {m: symbol_matrix(f"w{m}", d, d) for m in "QKV"}
        self.A = {m: symbol_matrix(f"a{m}", r, d) for m in adapt}
        self.B = {m: symbol_matrix(f"b{m}", d, r) for m in adapt}
        self.beta, self.s = sp.symbols("beta s", real=True)
        self.W = {m: self.W0[m] + self.s * self.B[m] * self.A[m] if m in adapt else self.W0[m] for m in "QKV"}
        self.S = (self.beta * self.X_q * self.W["Q"] * self.W["K"].T * self.X_kv.T).applyfunc(sp.expand)
        self.E = sp.Matrix(L, self.L_kv, lambda i, j: sp.Symbol(f"E_{i}_{j}", positive=True))
        self.alpha = [sp.Symbol(f"alpha_{i}", positive=True) for i in range(L)]
        self.n = sp.Symbol("n", positive=True)

    @property
    def size(self) -> str:
        kind = f"cross L_kv={self.L_kv}" if self.L_kv != self.L or self.X_kv is not self.X_q else "self"
        return f"L={self.L} d={self.d} r={self.r} {kind}"

    def rationalize(self, M, S=None):
        """exp(S_ij) -> E_ij and exp(log n) -> n, then E_i0 -> alpha_i - n - sum_k>0 E_ik (alpha_i
        the whole normaliser n + sum_j E_ij)."""
        S = self.S if S is None else S
        table = {Exp(S[i, j]): self.E[i, j] for i in range(self.L) for j in range(self.L_kv)}
        table[Exp(sp.log(self.n))] = self.n
        elim = {self.E[i, 0]: self.alpha[i] - self.n - sum(self.E[i, 1:]) for i in range(self.L)}
        return M.xreplace(table).xreplace(elim)

    def softmax_loss(self, S):
        """Brute force: 1/2 ||softmax_rows(S) X' W_V - Y||_F^2 written entry by entry, the softmax
        e^S_ij / (n + sum_l e^S_il)."""
        U = S.applyfunc(Exp)
        F = sp.Matrix(U.rows, U.cols, lambda i, j: U[i, j] / (sum(U[i, :]) + self.n))
        c = F * self.X_kv * self.W["V"] - self.Y
        return sum(x**2 for x in c) / 2

    def interpreter(self, **given):
        env = {"X_q": self.X_q, "X_kv": self.X_kv, "W_Q": self.W["Q"], "W_K": self.W["K"],
               "W_V": self.W["V"], "Y": self.Y, "beta": self.beta, "log_n": sp.log(self.n), **given}
        sizes = {decomposition.L: self.L, decomposition.L_kv: self.L_kv, decomposition.d: self.d}
        return Interpreter(env, sizes, rowmax=lambda S: sp.zeros(S.rows, 1),
                           exp=lambda a: Exp(sp.expand(a)))


def proved(name, statement, paper, size, check) -> Outcome:
    """Time the exact check `check() -> bool` of a proof and record it."""
    def run():
        holds = bool(check())
        return holds, "exactly 0" if holds else "NONZERO"

    return timed(name, run, detail=statement, paper=paper, size=size)


def prove_shift_invariance(L=2, L_kv=3) -> Outcome:
    """diag(u 1 + n e^-m)^-1 u with u = exp(S - m 1^T) is the row softmax of S, e^S_ij / (n + sum_l e^S_il),
    for every shift m and offset n > 0 (and so at n = 0: both sides are rational in n)."""
    S = symbol_matrix("s", L, L_kv)
    n = sp.Symbol("n", positive=True)
    env = {"S": S, "log_n": sp.log(n)}
    I = Interpreter(env, {decomposition.L: L, decomposition.L_kv: L_kv})  # rowmax -> free symbols m_i
    I.run(decomposition.build(), ["F"], given=("S",))
    U = S.applyfunc(sp.exp)
    soft = sp.Matrix(L, L_kv, lambda i, j: U[i, j] / (sum(U[i, :]) + n))
    return proved("softmax shift invariance", "diag(u 1 + n e^-m)^-1 u with u = exp(S - m 1^T) equals "
                  "e^S / (n + rowsum e^S) (n = 0: softmax_rows(S)), any m",
                  "Def. 3.2-3.4", f"L={L} L_kv={L_kv}",
                  lambda: all(sp.simplify(a - b) == 0 for a, b in zip(I.env["F"], soft)))


def prove_G_is_dL_dF(L=2, L_kv=3, d=2) -> Outcome:
    """G = c C3^T is the gradient of 1/2||F C3 - Y||^2 in F (the paper's q, transposed: E1)."""
    inst = _Instance(L=L, d=d, cross=True, L_kv=L_kv)
    F = symbol_matrix("f", L, inst.L_kv)
    I = inst.interpreter(F=F)
    I.run(decomposition.build(), ["G"], given=("F",))
    c = F * inst.X_kv * inst.W["V"] - inst.Y
    loss = sum(x**2 for x in c) / 2
    brute = sp.Matrix(L, inst.L_kv, lambda i, j: sp.diff(loss, F[i, j]))
    return proved("G = dL/dF", "dL/dF = c (X' W_V)^T = G (rows of G are the paper's q_j)",
                  "Lemma 3.2 / erratum E1", inst.size, lambda: laurent_zero(brute - I.env["G"]))


def prove_p_is_dL_dS(L=3, L_kv=3, d=2, derivation=None) -> Outcome:
    """p = F∘G - diag((F∘G)1) F is the gradient of the loss in the logits S."""
    inst = _Instance(L=L, d=d, cross=True, L_kv=L_kv)
    S = symbol_matrix("s", L, inst.L_kv)
    I = inst.interpreter(S=S)
    I.run(derivation or decomposition.build(), ["p"], given=("S",))
    loss = inst.softmax_loss(S)
    brute = sp.Matrix(L, inst.L_kv, lambda i, j: sp.diff(loss, S[i, j]))
    diff = inst.rationalize(brute - I.env["p"], S)
    return proved("p = dL/dS", "dL/dS = F∘G - diag((F∘G) 1) F = p1 - p2", "Lemma 3.1, 3.2, Def. 3.6",
                  inst.size, lambda: laurent_zero(diff))


def prove_rowwise_form(L=3, L_kv=3) -> Outcome:
    """Row j of p equals the paper's (diag(f_j) - f_j f_j^T) q_j with q_j = G[j, :]^T."""
    F = symbol_matrix("f", L, L_kv)
    G = symbol_matrix("g", L, L_kv)
    I = Interpreter({"F": F, "G": G}, {decomposition.L: L, decomposition.L_kv: L_kv})
    I.run(decomposition.build(), ["p"], given=("F", "G"))
    rows = [((sp.diag(*F[j, :]) - F[j, :].T * F[j, :]) * G[j, :].T).T for j in range(L)]
    return proved("p rows = Lemma 3.2 form", "p_j = (diag(f_j) - f_j f_j^T) q_j, q_j = j-th row of G",
                  "Lemma 3.2", f"L={L} L_kv={L_kv}", lambda: laurent_zero(sp.Matrix.vstack(*rows) - I.env["p"]))


def prove_lora_gradients(module: str, *, L=2, d=2, r=1, cross=False, L_kv=None, derivation=None) -> Outcome:
    """Brute-force dL/dA_mu, dL/dB_mu of the scalar loss equal the generated closed forms."""
    inst = _Instance(L=L, d=d, r=r, cross=cross, L_kv=L_kv, adapt=module)
    I = inst.interpreter()
    I.run(derivation or decomposition.build(), [f"dW_{module}"])
    J = Interpreter({"W0": inst.W0[module], "A": inst.A[module], "B": inst.B[module],
                     "dW": I.env[f"dW_{module}"], "scale": inst.s}, {adapter.d: d, adapter.r: r})
    J.run(adapter.build(), ["dA", "dB"])
    loss = inst.softmax_loss(inst.S)
    A, B = inst.A[module], inst.B[module]
    brute_A = sp.Matrix(r, d, lambda i, j: sp.diff(loss, A[i, j]))
    brute_B = sp.Matrix(d, r, lambda i, j: sp.diff(loss, B[i, j]))
    diff = inst.rationalize(sp.Matrix.vstack(brute_A - J.env["dA"], (brute_B - J.env["dB"]).T))
    return proved(f"dL/dA_{module}, dL/dB_{module}",
                  f"brute-force derivative of the loss in A_{module}, B_{module} = (alpha/r) B^T dW_{module}, "
                  f"(alpha/r) dW_{module} A^T", {"Q": "Lemma 3.2 (corrected, E3)", "K": "Lemma D.4 (corrected)",
                                                 "V": "new (not in the paper)"}[module],
                  inst.size, lambda: laurent_zero(diff))
