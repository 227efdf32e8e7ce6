"""Exact proofs of every derived term, on explicit matrices of symbols, at sizes that prove them for
EVERY size.

Method: the brute-force derivative of the scalar loss (plain SymPy calculus on explicit
entries, softmax written entry by entry) minus the closed form from the derivation (evaluated
by `interpreter.Interpreter`) must vanish identically. After differentiating, each exp(S_ij) is
replaced by a free positive symbol E_ij (`Exp` keeps them atoms) and E_i0 by alpha_i - n - sum_{k>0} E_ik,
so both sides become Laurent polynomials (the only denominators are the normalisers alpha_i); `expand`
is then a canonical form and "== 0" is an exact proof at that size. Identities in free E are
stronger than needed.

Sizes: an identity that holds at one size need not hold at the next (a Cayley-Hamilton term vanishes
at d = 2 only). Each proof here is run at the size `sufficiency` computes from the index counts of
BOTH sides of its identity, which by its Theorem 1 (polynomials) or 2 (softmax-normalised) proves it
for every L, L_kv, d, r; the Outcome records where it ran (`size`), the sufficient size and whether
the first covers the second (`data["all_sizes"]`, `data["sufficient"]`, `data["basis"]`). The exact
gradient is proved in five pieces (projections, softmax backward, logits to weights, values,
adapter; see below) that each need d <= 3; the one-piece end-to-end identity would need d = 6 for
Q and K and is kept as a fixed-size integration check (`prove_lora_gradients`).

The softmax carries the Softmax_1 offset as a free positive symbol n (the normaliser is n + sum_l e^S_il
and the kernels take log n): the differences are Laurent polynomials in n too, so an identity for every
n > 0 is a polynomial identity and holds at n = 0, i.e. for softmax itself.
"""

from __future__ import annotations

import time

import sympy as sp
from sympy.matrices.expressions.diagonal import DiagMatrix

from .._lib.records import Outcome, timed
from . import adapter, decomposition
from . import sufficiency as su
from .interpreter import Interpreter, symbol_matrix
from .nodes import Fill, RowDot, divide_rows, exp_elementwise, frobenius_half, rowsum

__all__ = ["SIZE_NAMES", "SORTS", "Exp", "at_fixed_size", "count_expr", "count_steps", "end_to_end_sizes",
           "laurent_zero", "proved", "prove_G_is_dL_dF", "prove_adapter_chain_rule", "prove_logits_to_weight",
           "prove_lora_gradients", "prove_p_is_dL_dS", "prove_projections", "prove_rowwise_form",
           "prove_shift_invariance", "prove_value_gradient", "size_label", "sized", "softmax_loss_expr"]


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


# ---------------------------------------------------------------------------------------------
# sizes: every proof records where it ran, the size its index counts require (`sufficiency`), and
# whether the first covers the second (then it holds for every size)

SORTS = {decomposition.L: "q", decomposition.L_kv: "kv", decomposition.d: "d", adapter.r: "r"}
SIZE_NAMES = {"q": "L", "kv": "L_kv", "d": "d", "r": "r", "k": "k"}


def size_label(sizes: dict, query_rows=None, sorts=None) -> str:
    """"L=1, L_kv=3, d=1" for {sort: n} (`query_rows`: the L values run, "1,2" when Theorem 2 needs both)."""
    order = list(SIZE_NAMES) + sorted(set(sizes) - set(SIZE_NAMES))
    out = []
    for s in order:
        if s in sizes and (sorts is None or s in sorts):
            n = ",".join(map(str, query_rows)) if s == "q" and query_rows else str(sizes[s])
            out.append(f"{SIZE_NAMES.get(s, s)}={n}")
    return ", ".join(out)


def _record(name, statement, paper, holds, seconds, ran: str, need, enough: bool, basis: str, reason: str = ""):
    sufficient = None if need is None else size_label(need.sizes, need.query_rows if need.tied else None,
                                                      _used_sorts(need))
    data = {"all_sizes": bool(holds and enough), "sufficient": sufficient, "basis": basis,
            "counts": {} if need is None else need.counts}
    if reason:
        data["reason"] = reason
    if not holds:
        measured = f"rejected ({reason})" if reason else "NONZERO"
    elif data["all_sizes"]:
        measured = f"exactly 0: holds for every size ({basis}; sufficient {sufficient})"
    else:
        measured = "exactly 0 at the size run only" + (f" (every size needs {sufficient})" if sufficient else "")
    return Outcome(name, bool(holds), measured, detail=statement, paper=paper, size=ran, data=data, seconds=seconds)


def _used_sorts(need) -> set:
    return {s for c in need.counts.values() for s in c} | ({"q"} if need.tied else set())


def sized(name, statement, paper, sides, check, *, at=None, basis=None) -> Outcome:
    """A proof at the size that proves it for every size.

    sides() -> {output: [Abs, ...]} (both sides of the identity, abstractly: `sufficiency`);
    check(sizes, query_rows) -> bool, the exact check at {sort: n}. `at` ({sort: n}) runs the check
    at another size instead (the old sizes, to show what they accept): `all_sizes` is then True only
    if that size covers the required one. An expression that is no einsum family is refused."""
    t0 = time.perf_counter()
    try:
        need, reason = su.required_sizes(sides()), ""
    except su.NotNatural as err:
        need, reason = None, f"not an einsum family: {err}"
        if at is None:
            return _record(name, statement, paper, False, time.perf_counter() - t0, "-", None, False,
                           "refused", reason)
    sizes = dict(need.sizes) if need else {}
    rows = need.query_rows if need and need.tied else (sizes.get("q", 1),)
    if at is not None:
        sizes.update(at)
        rows = (at["q"],) if "q" in at else rows
    try:
        holds = bool(check(sizes, rows))
    except Exception as err:  # noqa: BLE001 - a candidate that does not even evaluate is refuted
        holds, reason = False, f"{type(err).__name__}: {err}"
    enough = need is not None and need.covers(sizes, rows)
    theorem = basis or ("Theorem 2" if need is not None and need.tied else "Theorem 1")
    ran = size_label(sizes, rows if need is not None and need.tied else None,
                     (_used_sorts(need) if need else set(sizes)) | set(at or {}))
    return _record(name, statement, paper, holds, time.perf_counter() - t0, ran, need, enough,
                   theorem if enough else "fixed size only", reason)


def at_fixed_size(outcome: Outcome, need, ran: dict, query_rows=None, basis: str | None = None) -> Outcome:
    """Attach to a fixed-size proof the size its counts require and whether `ran` covers it."""
    enough = need.covers(ran, query_rows)
    theorem = basis or ("Theorem 2" if need.tied else "Theorem 1")
    out = _record(outcome.name, outcome.detail, outcome.paper, outcome.holds, outcome.seconds, outcome.size,
                  need, enough, theorem if enough else "fixed size only")
    return out


def _v(rows, cols=()):
    return su.variable(rows, cols)


def count_steps(env, derivation, names, given, sorts=None) -> dict:
    """The abstract values of steps `names` of `derivation` (inputs / given steps from `env`)."""
    C = su.IndexCounter(dict(env), sorts or SORTS)
    C.run(derivation, names, given=given)
    return {n: C.env[n] for n in names}


def count_expr(env, expr, sorts=None):
    return su.IndexCounter(dict(env), sorts or SORTS)(expr)


def _head_matrices():
    D = decomposition
    return {"S": sp.MatrixSymbol("S", D.L, D.L_kv), "C3": sp.MatrixSymbol("C3", D.L_kv, D.d),
            "Y": sp.MatrixSymbol("Y", D.L, D.d), "F": sp.MatrixSymbol("F", D.L, D.L_kv),
            "p": sp.MatrixSymbol("p", D.L, D.L_kv), "X_q": sp.MatrixSymbol("X_q", D.L, D.d),
            "X_kv": sp.MatrixSymbol("X_kv", D.L_kv, D.d), "n": sp.Symbol("n")}


def softmax_loss_expr(S, V):
    """1/2 ||diag(n + E 1)^-1 E V - Y||^2, E = exp(S): the brute-force loss as a matrix expression (counts)."""
    m = _head_matrices()
    E = exp_elementwise(S)
    return frobenius_half(divide_rows(E, rowsum(E) + Fill(m["n"], decomposition.L)) * V - m["Y"])


# ---------------------------------------------------------------------------------------------
# the term identities


def prove_shift_invariance(L=2, L_kv=3) -> Outcome:
    """diag(u 1 + n e^-m)^-1 u with u = exp(S - m 1^T) is the row softmax of S, e^S_ij / (n + sum_l e^S_il),
    for every shift m and offset n > 0 (and so at n = 0: both sides are rational in n).

    For every size by one line: exp is a homomorphism, u_ij = e^-m_i e^S_ij and n e^-m_i share row
    i's factor e^-m_i, which cancels in the ratio; the SymPy check at (L, L_kv) is that line's
    instance (exp(S - m) stays a transcendental expression, so the index counter does not apply)."""
    S = symbol_matrix("s", L, L_kv)
    n = sp.Symbol("n", positive=True)
    env = {"S": S, "log_n": sp.log(n)}
    I = Interpreter(env, {decomposition.L: L, decomposition.L_kv: L_kv})  # rowmax -> free symbols m_i
    I.run(decomposition.build(), ["F"], given=("S",))
    U = S.applyfunc(sp.exp)
    soft = sp.Matrix(L, L_kv, lambda i, j: U[i, j] / (sum(U[i, :]) + n))
    out = proved("softmax shift invariance", "diag(u 1 + n e^-m)^-1 u with u = exp(S - m 1^T) equals "
                 "e^S / (n + rowsum e^S) (n = 0: softmax_rows(S)), any m",
                 "Def. 3.2-3.4", f"L={L}, L_kv={L_kv}",
                 lambda: all(sp.simplify(a - b) == 0 for a, b in zip(I.env["F"], soft)))
    basis = "row-shift argument (exp is a homomorphism; see the docstring)"
    out.data = {"all_sizes": out.holds, "sufficient": "any", "basis": basis, "counts": {}}
    if out.holds:
        out.measured = f"exactly 0: holds for every size ({basis})"
    return out


def prove_G_is_dL_dF(L=2, L_kv=3, d=2) -> Outcome:
    """G = c C3^T is the gradient of 1/2||F C3 - Y||^2 in F (the paper's q, transposed: E1)."""
    inst = _Instance(L=L, d=d, cross=True, L_kv=L_kv)
    F = symbol_matrix("f", L, inst.L_kv)
    I = inst.interpreter(F=F)
    I.run(decomposition.build(), ["G"], given=("F",))
    c = F * inst.X_kv * inst.W["V"] - inst.Y
    loss = sum(x**2 for x in c) / 2
    brute = sp.Matrix(L, inst.L_kv, lambda i, j: sp.diff(loss, F[i, j]))
    out = proved("G = dL/dF", "dL/dF = c (X' W_V)^T = G (rows of G are the paper's q_j)",
                 "Lemma 3.2 / erratum E1", f"L={L}, L_kv={L_kv}, d={d}", lambda: laurent_zero(brute - I.env["G"]))
    m = _head_matrices()
    env = {"F": _v(("q",), ("kv",)), "C3": _v(("kv",), ("d",)), "Y": _v(("q",), ("d",)), "beta": su.scalar_variable()}
    closed = count_steps(env, decomposition.build(), ["G"], ("F", "C3"))["G"]
    brute_c = su.derivative(count_expr(env, frobenius_half(m["F"] * m["C3"] - m["Y"])))
    need = su.required_sizes({"G": [closed, brute_c]})
    return at_fixed_size(out, need, {"q": L, "kv": L_kv, "d": d})


def prove_rowwise_form(L=3, L_kv=3) -> Outcome:
    """Row j of p equals the paper's (diag(f_j) - f_j f_j^T) q_j with q_j = G[j, :]^T."""
    F = symbol_matrix("f", L, L_kv)
    G = symbol_matrix("g", L, L_kv)
    I = Interpreter({"F": F, "G": G}, {decomposition.L: L, decomposition.L_kv: L_kv})
    I.run(decomposition.build(), ["p"], given=("F", "G"))
    rows = [((sp.diag(*F[j, :]) - F[j, :].T * F[j, :]) * G[j, :].T).T for j in range(L)]
    out = proved("p rows = Lemma 3.2 form", "p_j = (diag(f_j) - f_j f_j^T) q_j, q_j = j-th row of G",
                 "Lemma 3.2", f"L={L}, L_kv={L_kv}", lambda: laurent_zero(sp.Matrix.vstack(*rows) - I.env["p"]))
    m = _head_matrices()
    Gm = sp.MatrixSymbol("G", decomposition.L, decomposition.L_kv)
    env = {"F": _v(("q",), ("kv",)), "G": _v(("q",), ("kv",))}
    # entry (i, j) of the row-wise form: F_ij G_ij - F_ij sum_k F_ik G_ik
    rowwise = sp.HadamardProduct(m["F"], Gm) - DiagMatrix(RowDot(m["F"], Gm)) * m["F"]
    closed = count_steps(env, decomposition.build(), ["p"], ("F", "G"))["p"]
    need = su.required_sizes({"p": [closed, count_expr(env, rowwise)]})
    return at_fixed_size(out, need, {"q": L, "kv": L_kv})


# ---------------------------------------------------------------------------------------------
# the exact gradient for every size, split at the two linear maps it passes through:
#
#   L(A) = ell(S(W(A))),  S(W_Q) = beta X W_Q W_K^T X'^T,  W = W* + s B A
#
#   (0) the derivation's S and C3 are beta X W_Q W_K^T X'^T and X' W_V       `prove_projections`
#   (1) dell/dS = p(S, C3) for free S, C3, Y (the softmax backward; Thm 2)      `prove_p_is_dL_dS`
#   (2) for free P: grad_W <P, S(W)> = beta X^T P C2 (Q), beta X'^T P^T C1 (K)  `prove_logits_to_weight`
#   (3) for free F: grad_W_V 1/2||F X' W_V - Y||^2 = X'^T F^T c                `prove_value_gradient`
#   (4) for free D: grad_A <D, W* + s B A> = s B^T D, grad_B = s D A^T          `prove_adapter_chain_rule`
#
# The chain rule (calculus, not re-proved) composes them: dL/dA_Q = s B^T (beta X^T p C2), the
# derivation's dA_Q (the closed forms of (2) and (4) are the derivation's own steps, run on free p
# and dW). Each piece needs at most d = 3 (the one-piece identity needs d = 6 for Q and K:
# `end_to_end_sizes`). Self-attention is X' := X in identities proved for independent X, X'; F
# does not depend on W_V, so (3) with free F covers it.


def prove_projections(derivation=None, at=None) -> Outcome:
    """(0) The derivation's S = beta X W_Q W_K^T X'^T and C3 = X' W_V."""
    D = derivation or decomposition.build()
    env = {"X_q": _v(("q",), ("d",)), "X_kv": _v(("kv",), ("d",)), "beta": su.scalar_variable(),
           **{f"W_{m}": _v(("d",), ("d",)) for m in "QKV"}}
    dc = decomposition
    S_ref = dc.beta * dc.X_q * dc.W_Q * dc.W_K.T * dc.X_kv.T
    C3_ref = dc.X_kv * dc.W_V

    def sides():
        got = count_steps(env, D, ["S", "C3"], ())
        return {"S": [got["S"], count_expr(env, S_ref)], "C3": [got["C3"], count_expr(env, C3_ref)]}

    def check(sizes, rows):
        L, n, d = sizes["q"], sizes["kv"], sizes["d"]
        vals = {"X_q": symbol_matrix("x", L, d), "X_kv": symbol_matrix("z", n, d), "beta": sp.Symbol("beta"),
                **{f"W_{m}": symbol_matrix(f"w{m}", d, d) for m in "QKV"}}
        I = Interpreter(vals, {dc.L: L, dc.L_kv: n, dc.d: d})
        I.run(D, ["S", "C3"])
        S = vals["beta"] * vals["X_q"] * vals["W_Q"] * vals["W_K"].T * vals["X_kv"].T
        return laurent_zero(I.env["S"] - S) and laurent_zero(I.env["C3"] - vals["X_kv"] * vals["W_V"])

    return sized("S, C3 of the derivation", "S = beta X W_Q W_K^T X'^T, C3 = X' W_V (the maps (1)-(3) "
                 "differentiate through)", "Defs. 3.2-3.5, eq. (1.2)", sides, check, at=at)


def prove_p_is_dL_dS(derivation=None, at=None) -> Outcome:
    """(1) p(S, C3) = F∘G - diag((F∘G)1) F is d/dS of 1/2 ||F C3 - Y||^2, F = e^S / (n + rowsum e^S),
    for free S, C3, Y and n (Lemmas 3.1-3.2, errata E1, E2)."""
    D = derivation or decomposition.build()
    env = {"S": _v(("q",), ("kv",)), "C3": _v(("kv",), ("d",)), "Y": _v(("q",), ("d",)),
           "beta": su.scalar_variable(), "log_n": su.scalar_variable(), "n": su.scalar_variable()}
    m = _head_matrices()
    loss = softmax_loss_expr(m["S"], m["C3"])
    dc = decomposition

    def sides():
        closed = count_steps(env, D, ["p"], ("S", "C3"))["p"]
        return {"p": [closed, su.derivative(count_expr(env, loss), in_exp=True)]}

    def check(sizes, query_rows):
        n_kv, d = sizes["kv"], sizes["d"]
        n = sp.Symbol("n", positive=True)
        for L in query_rows:
            S, C3, Y = symbol_matrix("s", L, n_kv), symbol_matrix("v", n_kv, d), symbol_matrix("y", L, d)
            U = S.applyfunc(Exp)
            F = sp.Matrix(L, n_kv, lambda i, j: U[i, j] / (sum(U[i, :]) + n))
            c = F * C3 - Y
            half = sum(x**2 for x in c) / 2
            brute = sp.Matrix(L, n_kv, lambda i, j: sp.diff(half, S[i, j]))
            I = Interpreter({"S": S, "C3": C3, "Y": Y, "beta": sp.Symbol("beta"), "log_n": sp.log(n)},
                            {dc.L: L, dc.L_kv: n_kv, dc.d: d},
                            rowmax=lambda M: sp.zeros(M.rows, 1), exp=lambda a: Exp(sp.expand(a)))
            I.run(D, ["p"], given=("S", "C3"))
            if not laurent_zero(_free_exp(brute - I.env["p"], S, n)):
                return False
        return True

    return sized("p = dL/dS", "d/dS 1/2||F C3 - Y||^2 = F∘G - diag((F∘G)1) F, G = c C3^T, for free S, C3, Y, n "
                 "(F = e^S / (n + rowsum e^S))", "Lemma 3.1, 3.2, Def. 3.6 (E1, E2)", sides, check, at=at)


def _free_exp(M, S, n):
    """exp(S_ij) -> E_ij and exp(log n) -> n, then E_i0 -> alpha_i - n - sum_k>0 E_ik (the normaliser
    alpha_i = n + sum_j E_ij freed): an invertible change of variables to a Laurent polynomial."""
    L, n_kv = S.shape
    E = sp.Matrix(L, n_kv, lambda i, j: sp.Symbol(f"E_{i}_{j}", positive=True))
    alpha = [sp.Symbol(f"alpha_{i}", positive=True) for i in range(L)]
    table = {Exp(S[i, j]): E[i, j] for i in range(L) for j in range(n_kv)}
    table[Exp(sp.log(n))] = n
    return M.xreplace(table).xreplace({E[i, 0]: alpha[i] - n - sum(E[i, 1:]) for i in range(L)})


def prove_logits_to_weight(module: str, derivation=None, at=None) -> Outcome:
    """(2) For free P: the gradient of <P, S(W)> in W_Q (W_K) is the derivation's dW_Q (dW_K) at p = P."""
    D = derivation or decomposition.build()
    dc = decomposition
    env = {"p": _v(("q",), ("kv",)), "X_q": _v(("q",), ("d",)), "X_kv": _v(("kv",), ("d",)),
           "W_Q": _v(("d",), ("d",)), "W_K": _v(("d",), ("d",)), "beta": su.scalar_variable()}
    m = _head_matrices()
    pairing = sp.Trace(m["p"].T * (dc.beta * m["X_q"] * dc.W_Q * dc.W_K.T * m["X_kv"].T))
    out = dc.WEIGHT_GRADIENTS[module]

    def sides():
        closed = count_steps(env, D, [out], ("p",))[out]
        return {out: [closed, su.derivative(count_expr(env, pairing))]}

    def check(sizes, rows):
        L, n, d = sizes["q"], sizes["kv"], sizes["d"]
        vals = {"p": symbol_matrix("p", L, n), "X_q": symbol_matrix("x", L, d), "X_kv": symbol_matrix("z", n, d),
                "W_Q": symbol_matrix("wQ", d, d), "W_K": symbol_matrix("wK", d, d), "beta": sp.Symbol("beta")}
        S = vals["beta"] * vals["X_q"] * vals["W_Q"] * vals["W_K"].T * vals["X_kv"].T
        pair = sum(a * b for a, b in zip(vals["p"], S))
        W = vals[f"W_{module}"]
        brute = sp.Matrix(d, d, lambda a, b: sp.diff(pair, W[a, b]))
        I = Interpreter(vals, {dc.L: L, dc.L_kv: n, dc.d: d})
        I.run(D, [out], given=("p",))
        return laurent_zero(brute - I.env[out])

    return sized(f"dW_{module} from dL/dS", f"grad_W_{module} <P, beta X W_Q W_K^T X'^T> = the derivation's {out} "
                 "at p = P, any P", {"Q": "Lemma 3.1", "K": "Lemma D.1"}[module], sides, check, at=at)


def prove_value_gradient(derivation=None, at=None) -> Outcome:
    """(3) For free F: grad_W_V 1/2 ||F X' W_V - Y||^2 = X'^T F^T c (the derivation's dW_V at F)."""
    D = derivation or decomposition.build()
    dc = decomposition
    env = {"F": _v(("q",), ("kv",)), "X_kv": _v(("kv",), ("d",)), "W_V": _v(("d",), ("d",)),
           "Y": _v(("q",), ("d",)), "beta": su.scalar_variable()}
    m = _head_matrices()
    loss = frobenius_half(m["F"] * m["X_kv"] * dc.W_V - m["Y"])

    def sides():
        closed = count_steps(env, D, ["dW_V"], ("F",))["dW_V"]
        return {"dW_V": [closed, su.derivative(count_expr(env, loss))]}

    def check(sizes, rows):
        L, n, d = sizes["q"], sizes["kv"], sizes["d"]
        vals = {"F": symbol_matrix("f", L, n), "X_kv": symbol_matrix("z", n, d), "W_V": symbol_matrix("wV", d, d),
                "Y": symbol_matrix("y", L, d), "beta": sp.Symbol("beta")}
        c = vals["F"] * vals["X_kv"] * vals["W_V"] - vals["Y"]
        half = sum(x**2 for x in c) / 2
        brute = sp.Matrix(d, d, lambda a, b: sp.diff(half, vals["W_V"][a, b]))
        I = Interpreter(vals, {dc.L: L, dc.L_kv: n, dc.d: d})
        I.run(D, ["dW_V"], given=("F",))
        return laurent_zero(brute - I.env["dW_V"])

    return sized("dW_V (free F)", "grad_W_V 1/2||F X' W_V - Y||^2 = X'^T F^T c, any F", "new (not in the paper)",
                 sides, check, at=at)


def prove_adapter_chain_rule(derivation=None, at=None) -> Outcome:
    """(4) For free D: grad_A <D, W* + s B A> = s B^T D and grad_B = s D A^T (the derivation's dA, dB)."""
    Dv = derivation or adapter.build()
    ad = adapter
    env = {"dW": _v(("d",), ("d",)), "W0": _v(("d",), ("d",)), "A": _v(("r",), ("d",)), "B": _v(("d",), ("r",)),
           "scale": su.scalar_variable()}
    pairing = sp.Trace(ad.dW.T * (ad.W0 + ad.scale * ad.B * ad.A))

    def sides():
        closed = count_steps(env, Dv, ["dA", "dB"], ("dW",))
        brute = su.derivative(count_expr(env, pairing))
        return {"dA": [closed["dA"], brute], "dB": [closed["dB"], brute]}

    def check(sizes, rows):
        d, r = sizes["d"], sizes["r"]
        vals = {"dW": symbol_matrix("g", d, d), "W0": symbol_matrix("w", d, d), "A": symbol_matrix("a", r, d),
                "B": symbol_matrix("b", d, r), "scale": sp.Symbol("s")}
        W = vals["W0"] + vals["scale"] * vals["B"] * vals["A"]
        pair = sum(a * b for a, b in zip(vals["dW"], W))
        bA = sp.Matrix(r, d, lambda i, j: sp.diff(pair, vals["A"][i, j]))
        bB = sp.Matrix(d, r, lambda i, j: sp.diff(pair, vals["B"][i, j]))
        I = Interpreter(vals, {ad.d: d, ad.r: r})
        I.run(Dv, ["dA", "dB"], given=("dW",))
        return laurent_zero(bA - I.env["dA"]) and laurent_zero(bB - I.env["dB"])

    return sized("LoRA chain rule", "grad_A <D, W* + s B A> = s B^T D, grad_B = s D A^T, any D",
                 "Lemma 3.2 (corrected, E3)", sides, check, at=at)


# ---------------------------------------------------------------------------------------------
# the one-piece end-to-end identity (brute force through exp(S) in the weights): fixed sizes,
# an integration check of the composition above, and what its counts would require


def end_to_end_sizes(module: str, derivation=None, adapter_derivation=None) -> su.Sizes:
    """The size Theorem 2 needs for dL/dA_mu, dL/dB_mu checked in one piece, in `prove_lora_gradients`'
    own variables (X, X', W*, A, B, Y, n; cross-attention): d = 6 for Q and K, d = 3 and r = 2 for V."""
    D, Dl = derivation or decomposition.build(), adapter_derivation or adapter.build()
    dc, ad = decomposition, adapter
    env = {"X_q": _v(("q",), ("d",)), "X_kv": _v(("kv",), ("d",)), "Y": _v(("q",), ("d",)),
           "beta": su.scalar_variable(), "scale": su.scalar_variable(), "log_n": su.scalar_variable(),
           "n": su.scalar_variable(), "W0": _v(("d",), ("d",)), "A": _v(("r",), ("d",)), "B": _v(("d",), ("r",)),
           **{f"W_{m}": _v(("d",), ("d",)) for m in "QKV"}}
    W = {m: (ad.W0 + ad.scale * ad.B * ad.A) if m == module else sp.MatrixSymbol(f"W_{m}", dc.d, dc.d)
         for m in "QKV"}
    adapted = dict(env, **{f"W_{module}": count_expr(env, W[module])})
    dW = count_steps(adapted, D, [f"dW_{module}"], ())[f"dW_{module}"]
    closed = count_steps({"dW": dW, "W0": env["W0"], "A": env["A"], "B": env["B"], "scale": env["scale"]},
                         Dl, ["dA", "dB"], ("dW",))
    m = _head_matrices()
    S = dc.beta * m["X_q"] * W["Q"] * W["K"].T * m["X_kv"].T
    ell = count_expr(env, softmax_loss_expr(S, m["X_kv"] * W["V"]))
    brute = su.derivative(ell)  # theta inside C3 (module V)
    if module in "QK":  # sum_ij (E_ij dell/dE_ij) dS_ij/dtheta: both factors' counts minus i, j
        via_exp = su.Abs(("q",), (su.Block(("kv",), ell.block.count, ell.block.e + 1, ell.block.qmin,
                                           (True,), (True,)),))
        h = su.hadamard(via_exp, count_expr(env, S)).block
        brute = su.Abs((), (su.Block((), h.count, h.e, h.qmin, (), ()),))
    return su.required_sizes({"dA": [closed["dA"], brute], "dB": [closed["dB"], brute]})


def prove_lora_gradients(module: str, *, L=2, d=2, r=1, cross=False, L_kv=None, derivation=None,
                         adapter_derivation=None) -> Outcome:
    """Brute-force dL/dA_mu, dL/dB_mu of the scalar loss equal the generated closed forms, in one
    piece, at the size given (an integration check of (0)-(4); `end_to_end_sizes` says which size
    would prove it for all sizes: only V's, L = 1, L_kv = 2, d = 3, r = 2, is cheap)."""
    inst = _Instance(L=L, d=d, r=r, cross=cross, L_kv=L_kv, adapt=module)
    I = inst.interpreter()
    I.run(derivation or decomposition.build(), [f"dW_{module}"])
    J = Interpreter({"W0": inst.W0[module], "A": inst.A[module], "B": inst.B[module],
                     "dW": I.env[f"dW_{module}"], "scale": inst.s}, {adapter.d: d, adapter.r: r})
    J.run(adapter_derivation or adapter.build(), ["dA", "dB"])
    loss = inst.softmax_loss(inst.S)
    A, B = inst.A[module], inst.B[module]
    brute_A = sp.Matrix(r, d, lambda i, j: sp.diff(loss, A[i, j]))
    brute_B = sp.Matrix(d, r, lambda i, j: sp.diff(loss, B[i, j]))
    diff = inst.rationalize(sp.Matrix.vstack(brute_A - J.env["dA"], (brute_B - J.env["dB"]).T))
    out = proved(f"dL/dA_{module}, dL/dB_{module} (one piece)",
                 f"brute-force derivative of the loss in A_{module}, B_{module} = (alpha/r) B^T dW_{module}, "
                 f"(alpha/r) dW_{module} A^T", {"Q": "Lemma 3.2 (corrected, E3)", "K": "Lemma D.4 (corrected)",
                                                "V": "new (not in the paper)"}[module],
                 inst.size, lambda: laurent_zero(diff))
    try:
        need = end_to_end_sizes(module, derivation, adapter_derivation)
    except su.NotNatural as err:  # no sufficient size: what holds, holds at the size run
        return _record(out.name, out.detail, out.paper, out.holds, out.seconds, out.size, None, False,
                       f"fixed size only (not an einsum family: {err})")
    if not cross:  # self-attention: an instance of the cross identity (X' = X), never the cross one
        return at_fixed_size(out, need, {"q": L, "kv": 0, "d": d, "r": r})
    return at_fixed_size(out, need, {"q": L, "kv": inst.L_kv, "d": d, "r": r}, (L,))
