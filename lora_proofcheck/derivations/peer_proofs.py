"""Exact proofs of the peer derivations (`peers.py`) on explicit symbolic matrices, and the refutation
that separates the two gradient modes.

(a) `prove_model_lowrank_is_gradient`: for FREE U1, U2, C3, Y and a free Softmax_1 offset n > 0, the
    outputs dU1, dU2, dC3 and the loss of route (a) are the brute-force derivatives of
    l~ = ½‖diag(U1 U2^T 1 + n)^-1 U1 U2^T C3 - Y‖² (any feature maps).
(b) `prove_model_poly_is_gradient`: for E~_ij = P_ij(S_ij), a FREE differentiable function per entry
    (so any entrywise kernel: a polynomial with free coefficients, Chebyshev, the support basis's
    p-or-exp mix, ...), route (b) fed U1 = [P_ij(S_ij)], U2 = I, U1d = [P_ij'(S_ij)], U2d = I gives the
    brute-force dl~/dC1 = beta pC2, dl~/dC2 = beta pTC1, dl~/dC3 = FTc and the loss, S = beta C1 C2^T;
    its dW steps are the exact derivation's X^T (.) (checked as text), whose chain rule to A, B is
    `decomposition_proofs.prove_lora_gradients`.  With `derivation=lowrank_chain.build()` (the
    paper's chain) the same proof FAILS: the plug-in gradient is not the model gradient.
Agreement: `prove_plugin_model_agree_on_V` (loss and dC3 of (a), FTc of (b) = the plug-in chain's, any
    U1, U2: hence dL/dA_V, dL/dB_V agree); `prove_model_is_plugin_for_exp` (with P' = P, as for exp,
    route (b) IS the plug-in chain: with exact features both modes give the exact gradient).
FAVOR+: `prove_favor_vjp` (the generated map and VJP = the brute-force derivative at fixed shift);
    `prove_shift_gradient` (rowdot(dU1, U1) = n r~ / alpha~ and sum(dU2 ∘ U2) = sum n r~ / alpha~ for
    any U1, U2: a per-row or global stabiliser, whatever function of the data it is, contributes
    exactly zero to the model gradient when n = 0, and does not when n > 0);
    `prove_favor_unbiased` (E_w phi_w(x) phi_w(y) = e^{x.y} for w ~ N(0, I), exact Gaussian integrals).

In (a) the only denominators are alpha_i = sum_m U1_im s_m + n (s_m = sum_j U2_jm): the invertible
change of variables U2_00 -> s_0 - sum_{j>0} U2_j0, U1_i0 -> (alpha_i - n - sum_{m>0} U1_im s_m)/s_0 makes
every entry a Laurent polynomial in alpha_i and s_0, so `expand(...) == 0` is exact (no gcds; with
`together` the same check did not finish in 10 minutes).  Every identity is rational in n, so it
holds at n = 0 (softmax) as well.
"""

from __future__ import annotations

import sympy as sp

from .._lib.records import Outcome
from . import decomposition, lowrank_chain, peers
from .decomposition_proofs import Exp, laurent_zero, proved
from .interpreter import Interpreter, symbol_matrix
from .lowrank_proofs import shared_projections

__all__ = ["prove_favor_unbiased", "prove_favor_vjp", "prove_model_is_plugin_for_exp",
           "prove_model_lowrank_is_gradient", "prove_model_poly_is_gradient", "prove_plugin_model_agree_on_V",
           "prove_shift_gradient"]


def _offset():
    return sp.Symbol("n", positive=True)


def _lowrank_laurent_zero(M, U1, U2, n) -> bool:
    """Every entry vanishes identically as a rational function of U1, U2, n (and the others): the
    change of variables of the module docstring, then `expand`."""
    s0 = sp.Symbol("s_0", positive=True)
    alpha = [sp.Symbol(f"alpha_{i}", positive=True) for i in range(U1.rows)]
    s = [sum(U2[:, m]) for m in range(U2.cols)]
    sub_w = {U2[0, 0]: s0 - sum(U2[1:, 0])}
    sub_u = {U1[i, 0]: (alpha[i] - n - sum(U1[i, m] * s[m] for m in range(1, U1.cols))) / s0
             for i in range(U1.rows)}
    return all(sp.expand(sp.sympify(x).xreplace(sub_w).xreplace(sub_u)) == 0 for x in M)


def _sizes(L, L_kv, d, k=None, k_w=None, m=None):
    out = {decomposition.L: L, decomposition.L_kv: L_kv, decomposition.d: d}
    if k is not None:
        out[lowrank_chain.k] = k
    if k_w is not None:
        out[peers.k_w] = k_w
    if m is not None:
        out[peers.m_f] = m
    return out


def _lowrank_loss(U1, U2, C3, Y, n):
    E = U1 * U2.T
    F = sp.Matrix(E.rows, E.cols, lambda i, j: E[i, j] / (sum(E[i, :]) + n))
    c = F * C3 - Y
    return sum(x**2 for x in c) / 2


def prove_model_lowrank_is_gradient(L=2, L_kv=2, k=2, d=1, derivation=None) -> Outcome:
    """Route (a): loss, dU1, dU2, dC3 = brute-force gradients of the low-rank loss; U1, U2, C3, Y, n free."""
    n = _offset()
    U1, U2 = symbol_matrix("u", L, k), symbol_matrix("w", L_kv, k)
    C3, Y = symbol_matrix("v", L_kv, d), symbol_matrix("y", L, d)
    I = Interpreter({"U1": U1, "U2": U2, "C3": C3, "Y": Y, "n": n}, _sizes(L, L_kv, d, k))
    I.run(derivation or peers.build_model_lowrank(), ["loss", "dU1", "dU2", "dC3"], given=("C3",))
    loss = _lowrank_loss(U1, U2, C3, Y, n)
    diffs = [loss - I.env["loss"]]
    for name, M in (("dU1", U1), ("dU2", U2), ("dC3", C3)):
        brute = sp.Matrix(M.rows, M.cols, lambda i, j: sp.diff(loss, M[i, j]))
        diffs.extend(brute - I.env[name])
    return proved("model gradient of the low-rank loss (route a)",
                  "dl~/dU1 = Z Vq^T, dl~/dU2 = Z2 Vk^T, dl~/dC3 = U2 Vk[:, 1:] for l~ = ½‖diag(E~1 + n)^-1 E~ C3 - Y‖², "
                  "E~ = U1 U2^T, any U1, U2 and n", "new (autograd through linear attention)",
                  f"L={L} L_kv={L_kv} k={k} d={d}; U1, U2, C3, Y, n free",
                  lambda: _lowrank_laurent_zero(diffs, U1, U2, n))


def _entry_functions(L, L_kv):
    """P_ij with derivative Pd_ij (atoms that stay unevaluated), one pair per entry."""
    P, Pd = {}, {}
    for i in range(L):
        for j in range(L_kv):
            dcls = type(f"Pd_{i}_{j}", (sp.Function,), {})
            P[i, j] = type(f"P_{i}_{j}", (sp.Function,),
                           {"fdiff": (lambda dc: lambda self, argindex=1: dc(self.args[0]))(dcls)})
            Pd[i, j] = dcls
    return P, Pd


class _PolyHead:
    """Free C1, C2, C3, Y, beta, n and an entrywise kernel E_ij = P_ij(S_ij), S = beta C1 C2^T."""

    def __init__(self, L, L_kv, d):
        self.L, self.L_kv, self.d = L, L_kv, d
        self.C = {"C1": symbol_matrix("q", L, d), "C2": symbol_matrix("k", L_kv, d),
                  "C3": symbol_matrix("v", L_kv, d)}
        self.Y = symbol_matrix("y", L, d)
        self.beta = sp.Symbol("beta", real=True)
        self.n = _offset()
        self.S = (self.beta * self.C["C1"] * self.C["C2"].T).applyfunc(sp.expand)
        self.P, self.Pd = _entry_functions(L, L_kv)
        self.E = sp.Matrix(L, L_kv, lambda i, j: sp.Symbol(f"E_{i}_{j}", positive=True))
        self.D = sp.Matrix(L, L_kv, lambda i, j: sp.Symbol(f"D_{i}_{j}", real=True))
        self.alpha = [sp.Symbol(f"alpha_{i}", positive=True) for i in range(L)]

    def brute_loss(self):
        K = sp.Matrix(self.L, self.L_kv, lambda i, j: self.P[i, j](self.S[i, j]))
        F = sp.Matrix(self.L, self.L_kv, lambda i, j: K[i, j] / (sum(K[i, :]) + self.n))
        c = F * self.C["C3"] - self.Y
        return sum(x**2 for x in c) / 2

    def elim(self, M):
        """E_i0 -> alpha_i - n - sum_{j>0} E_ij (alpha_i the whole normaliser): Laurent in alpha."""
        return M.xreplace({self.E[i, 0]: self.alpha[i] - self.n - sum(self.E[i, 1:]) for i in range(self.L)})

    def rationalize(self, M):
        table = {}
        for (i, j), f in self.P.items():
            table[f(self.S[i, j])] = self.E[i, j]
            table[self.Pd[i, j](self.S[i, j])] = self.D[i, j]
        return self.elim(M.xreplace(table))

    def run(self, derivation, outputs, **features):
        env = {**self.C, "Y": self.Y, "beta": self.beta, "n": self.n, **features}
        I = Interpreter(env, _sizes(self.L, self.L_kv, self.d, k=self.L_kv, k_w=self.L_kv))
        I.run(derivation, list(outputs), given=("C1", "C2", "C3"))
        return {o: I.env[o] for o in outputs}


def _dW_steps_are_exact(D) -> bool:
    """The dW steps of D are the exact derivation's (X^T times the same named terms)."""
    ref = decomposition.build()
    names = {s.name for s in D.steps}
    return all(sp.sstr(D.step(m).expr) == sp.sstr(ref.step(m).expr) for m in ("dW_Q", "dW_K", "dW_V") if m in names)


def _as_matrix(x):
    return x if isinstance(x, sp.MatrixBase) else sp.Matrix([[x]])


def prove_model_poly_is_gradient(L=2, L_kv=3, d=2, modules="QKV", derivation=None) -> Outcome:
    """Route (b) = brute-force gradient of the approximate loss for every entrywise kernel P_ij.
    `derivation`: another chain with the same outputs (the plug-in `lowrank_chain.build` must FAIL)."""
    head = _PolyHead(L, L_kv, d)
    D = derivation or peers.build_model_poly(modules)
    grads = {"Q": ("pC2", "C1", head.beta), "K": ("pTC1", "C2", head.beta), "V": ("FTc", "C3", 1)}
    outs = ["loss"] + [grads[m][0] for m in modules]
    eye = sp.eye(L_kv)
    got = head.run(D, outs, U1=head.E, U2=eye, U1d=head.D, U2d=eye)
    loss = head.brute_loss()
    diffs = [head.rationalize(sp.Matrix([[loss]]))[0] - head.elim(_as_matrix(got["loss"]))[0]]
    for m in modules:  # dl/dC1 = beta (dl/dS) C2, dl/dC2 = beta (dl/dS)^T C1, dl/dC3 = F^T c
        name, C, factor = grads[m]
        C = head.C[C]
        brute = head.rationalize(sp.Matrix(C.rows, C.cols, lambda i, j: sp.diff(loss, C[i, j])))
        diffs.extend(brute - factor * head.elim(got[name]))
    return proved(f"model gradient of an entrywise kernel (route b, {D.name})",
                  "for E~ = P(S) entrywise (a free function per entry) and any n, the plug-in chain with P'(S) in "
                  "p~1, p~2 is the gradient of the approximate loss", "new (p'(S)/p(S) in the softmax Jacobian)",
                  f"L={L} L_kv={L_kv} d={d}; C1, C2, C3, Y, beta, n, P_ij free",
                  lambda: shared_projections(D) and _dW_steps_are_exact(D) and laurent_zero(diffs))


def prove_model_is_plugin_for_exp(L=2, L_kv=3, d=2) -> Outcome:
    """With P' = P (exp), route (b) equals the plug-in chain (`lowrank_chain.build`) on every output."""
    head = _PolyHead(L, L_kv, d)
    eye = sp.eye(L_kv)
    outs = ("loss", "pC2", "pTC1", "FTc")
    model = head.run(peers.build_model_poly("QKV"), outs, U1=head.E, U2=eye, U1d=head.E, U2d=eye)
    plug = head.run(lowrank_chain.build("QKV"), outs, U1=head.E, U2=eye)
    diffs = []
    for o in outs:
        diffs.extend(head.elim(_as_matrix(model[o]) - _as_matrix(plug[o])))
    return proved("model = plug-in when P' = P", "route (b) with derivative features = features is the plug-in "
                  "chain (so with exact features both modes give the exact gradient), any n", "new",
                  f"L={L} L_kv={L_kv} d={d}; n free", lambda: laurent_zero(diffs))


def prove_plugin_model_agree_on_V(L=2, L_kv=2, k=2, d=2) -> Outcome:
    """Any U1, U2, n: dC3 of route (a) = FTc of route (b) = FTc of the plug-in chain, and the losses agree."""
    n = _offset()
    U1, U2 = symbol_matrix("u", L, k), symbol_matrix("w", L_kv, k)
    U1d, U2d = symbol_matrix("a", L, k), symbol_matrix("b", L_kv, k)
    C = {"C1": symbol_matrix("q", L, d), "C2": symbol_matrix("k", L_kv, d), "C3": symbol_matrix("v", L_kv, d)}
    Y, beta = symbol_matrix("y", L, d), sp.Symbol("beta", real=True)
    sizes = _sizes(L, L_kv, d, k=k, k_w=k)

    def run(D, outs, **extra):
        I = Interpreter({"U1": U1, "U2": U2, **C, "Y": Y, "beta": beta, "n": n, **extra}, sizes)
        I.run(D, list(outs), given=tuple(C))
        return [I.env[o] for o in outs]

    la, va = run(peers.build_model_lowrank(), ("loss", "dC3"))
    lb, vb = run(peers.build_model_poly("QKV"), ("loss", "FTc"), U1d=U1d, U2d=U2d)
    lp, vp = run(lowrank_chain.build("QKV"), ("loss", "FTc"))
    diffs = [la - lp, lb - lp, *(va - vp), *(vb - vp)]
    return proved("plug-in and model agree on W_V", "dl~/dC3 = F~^T c~ in both modes and both model routes, "
                  "and the losses are equal, for any U1, U2 and n (so dL/dA_V, dL/dB_V agree)", "new",
                  f"L={L} L_kv={L_kv} k={k} d={d}; n free", lambda: _lowrank_laurent_zero(diffs, U1, U2, n))


def prove_shift_gradient(L=2, L_kv=2, k=2, d=2) -> Outcome:
    """rowdot(dU1, U1) = n r~/alpha~ and sum(dU2 ∘ U2) = sum_i n r~_i/alpha~_i for any U1, U2: a row scaling
    of U1 or a global scaling of U2 (the FAVOR+ stabilisers, any function of the data) has zero
    gradient for softmax (n = 0), and n r~/alpha~ for Softmax_1."""
    n = _offset()
    U1, U2 = symbol_matrix("u", L, k), symbol_matrix("w", L_kv, k)
    C3, Y = symbol_matrix("v", L_kv, d), symbol_matrix("y", L, d)
    I = Interpreter({"U1": U1, "U2": U2, "C3": C3, "Y": Y, "n": n}, _sizes(L, L_kv, d, k))
    I.run(peers.build_model_lowrank(), ["dU1", "dU2", "r", "alpha"], given=("C3",))
    sink = [n * I.env["r"][i, 0] / I.env["alpha"][i, 0] for i in range(L)]
    rows = [sum(I.env["dU1"][i, m] * U1[i, m] for m in range(k)) - sink[i] for i in range(L)]
    total = sum(I.env["dU2"][j, m] * U2[j, m] for j in range(L_kv) for m in range(k)) - sum(sink)
    return proved("stabiliser gradients = n r~/alpha~", "sum_m dU1_im U1_im = n r~_i/alpha~_i (each row) and "
                  "sum_jm dU2_jm U2_jm = sum_i n r~_i/alpha~_i, any U1, U2: zero for softmax (n = 0)",
                  "new (Performer's max shifts)", f"L={L} L_kv={L_kv} k={k} d={d}; n free",
                  lambda: _lowrank_laurent_zero(rows + [total], U1, U2, n))


def prove_favor_vjp(L=2, d=2, m=3) -> Outcome:
    """The generated FAVOR+ map and VJP = its formula and the brute-force d/dx of sum(Ubar ∘ phi(x)), shift fixed."""
    X, Om = symbol_matrix("x", L, d), symbol_matrix("w", m, d)
    shift, Ub = symbol_matrix("s", L, 1), symbol_matrix("g", L, m)
    ratio = sp.Symbol("rho", positive=True)
    env = {"Xf": X, "Omega": Om, "shift": shift, "ratio": ratio, "Ubar": Ub}
    I = Interpreter(env, _sizes(L, L, d, m=m), exp=lambda a: Exp(sp.expand(a)))
    I.run(peers.build_favor(), ["phi", "dXf"])
    phi = sp.Matrix(L, m, lambda i, l: ratio * Exp(sp.expand(sum(Om[l, a] * X[i, a] for a in range(d))
                                                              - sum(X[i, a]**2 for a in range(d)) / 2 - shift[i, 0])))
    f = sum(Ub[i, l] * phi[i, l] for i in range(L) for l in range(m))
    brute = sp.Matrix(L, d, lambda i, a: sp.diff(f, X[i, a]))
    return proved("FAVOR+ map and VJP", "phi = m^-1/2 exp(Omega x - |x|²/2 - s) and d/dx sum_l Ubar_l phi_l(x) = "
                  "(Ubar ∘ phi) Omega - rowsum(Ubar ∘ phi) x (as generated)", "Performer FAVOR+ (positive features)",
                  f"L={L} d={d} m={m}", lambda: laurent_zero(list(I.env["phi"] - phi) + list(brute - I.env["dXf"])))


def prove_favor_unbiased(d=2) -> Outcome:
    """E_w[exp(w.x - |x|²/2) exp(w.y - |y|²/2)] = exp(x.y) for w ~ N(0, I_d), by exact integrals."""
    w = sp.Symbol("w", real=True)
    s = sp.Symbol("s", real=True)
    mgf = sp.simplify(sp.integrate(sp.exp(w * s - w**2 / 2), (w, -sp.oo, sp.oo)) / sp.sqrt(2 * sp.pi))
    x, y = sp.symbols(f"x:{d}", real=True), sp.symbols(f"y:{d}", real=True)
    mean = sp.Mul(*(mgf.subs(s, x[a] + y[a]) for a in range(d)))  # independent coordinates
    lhs = mean * sp.exp(-sum(v**2 for v in x) / 2 - sum(v**2 for v in y) / 2)
    rhs = sp.exp(sum(x[a] * y[a] for a in range(d)))
    return proved("FAVOR+ unbiased", "E phi_w(x) phi_w(y) = e^{x.y}, phi_w(x) = e^{w.x - |x|²/2}, w ~ N(0, I)",
                  "Performer Lemma 1", f"d={d}", lambda: sp.simplify(sp.powsimp(lhs / rhs, force=True)) == 1)
