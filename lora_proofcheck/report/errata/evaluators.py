"""Evaluators of the errata: the paper's printed form against our correction on one instance.

`EVALUATORS[id](record) -> dict` with
    paper_fails  the paper's form is wrong on this instance (numerically, beyond float rounding)
    ours_holds   the corrected form holds (against an independent oracle or exactly)
    symbolic     {"paper_fails": bool, "detail": str} from exact / high-precision arithmetic, or None
    numeric      figures, and `summary` (one line with the figures)
    outcomes     optional: further outcomes {name, role, holds, measured, data} (E6's second, the
                 Thm 3.1 / Thm 4.1 inconsistency, re-checked on its own stored instance)
The same evaluators drive the searches (`search.py`) and the report's re-checks (`catalogue.py`).
"O1" is an erratum of ours (a claim this package made, not the paper): its "paper's form" is our old
wording.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import mpmath
import numpy as np
import sympy as sp
from scipy.linalg import khatri_rao
from sympy.matrices.exceptions import ShapeError

from ... import testing
from ...certification.polynomial import exp_polynomial, min_degree
from ...gradients.exact_path import lora_factor_gradients
from ...gradients.lowrank_path import lowrank_weight_gradients
from ...kernels.features import feature_rank
from ...testing import dense_chain as chain
from ...testing.dense_chain import maxnorm
from ..claims.numeric import chain_ratios
from .instances import problem_from_json

__all__ = ["EVALUATORS", "FAIL_REL", "HOLD_REL", "HP_DIGITS", "approx_loss_autograd", "balancing_power_of_two",
           "evaluate_e1", "evaluate_e2", "evaluate_e3", "evaluate_e4", "evaluate_e5", "evaluate_e6", "evaluate_e6_all",
           "evaluate_e6_rescaling", "evaluate_e7", "evaluate_o1", "formulas_at", "hard_instance", "problem2",
           "rescaling_table"]

# A paper form "fails" when it misses the oracle by more than this (float rounding is ~1e-15);
# our form "holds" when it matches to this.
FAIL_REL = 1e-6
HOLD_REL = 1e-12
HP_DIGITS = 40  # mpmath precision of the high-precision re-checks


def _rel(got: tuple, want: dict, module="Q") -> float:
    ref = (want[f"A_{module}"], want[f"B_{module}"])
    if any(g.shape != w.shape for g, w in zip(got, ref)):
        return math.inf
    scale = max(maxnorm(w) for w in ref)
    return max(maxnorm(g - w) for g, w in zip(got, ref)) / scale


def _nonzero_exact(entries) -> tuple[bool, float]:
    """Largest |entry| of exact SymPy expressions, by 30-digit evaluation (SymPy tracks accuracy)."""
    vals = [abs(sp.N(x, 30)) for x in entries]
    big = max(vals)
    return bool(big > sp.Float("1e-20")), float(big)


def _literal_P(t: chain.Terms, erratum: str):
    if erratum == "E1":  # p1 = F ∘ q with the paper's q = C3 c^T = G^T
        p1 = t.F * t.G.T
        return p1 - p1.sum(axis=1, keepdims=True) * t.F
    if erratum == "E2":  # p2 = F diag(r): columns scaled
        return t.p1 - t.F * t.r.T
    raise KeyError(erratum)


def _softmax_gradient_erratum(record: dict, erratum: str, symbolic: bool) -> dict:
    p = problem_from_json(record["instance"])
    pi = chain.paper_inputs(p, "Q")
    t = chain.exact_terms(pi)
    _, ref = testing.torch_gradients(p)
    paper_rel = _rel(chain.adapter_gradients(pi, _literal_P(t, erratum)), ref)
    ours_rel = _rel(chain.adapter_gradients(pi, t.P), ref)
    sym = None
    if symbolic:  # exact: the paper's gradient minus ours, in SymPy with exp kept exact
        pis = pi.convert(sp.Rational)
        ts = chain.exact_terms(pis, chain.object_exp(sp.exp))
        diff = (
            chain.adapter_gradients(pis, _literal_P(ts, erratum))[0] - chain.adapter_gradients(pis, ts.P)[0]
        )
        nonzero, size = _nonzero_exact(diff.flat)
        sym = {
            "paper_fails": nonzero,
            "detail": f"exact dL/dA_Q(paper) - dL/dA_Q(ours) has an entry of size {size:.3e} (≠ 0)",
        }
    return {
        "paper_fails": paper_rel > FAIL_REL,
        "ours_holds": ours_rel <= HOLD_REL,
        "numeric": {"paper_rel_error": paper_rel, "ours_rel_error": ours_rel, "grad_scale": _scale(ref)},
        "symbolic": sym,
        "summary": (
            f"gradient with the paper's form is off by {paper_rel:.1%} of max|grad| "
            f"(PyTorch autograd oracle); ours by {ours_rel:.1e}"
        ),
    }


def _scale(ref, module="Q") -> float:
    return max(maxnorm(ref[f"A_{module}"]), maxnorm(ref[f"B_{module}"]))


def evaluate_e1(record, symbolic=True):
    return _softmax_gradient_erratum(record, "E1", symbolic)


def evaluate_e2(record, symbolic=True):
    return _softmax_gradient_erratum(record, "E2", symbolic)


def evaluate_e3(record, symbolic=True):
    """∂L/∂B_Q printed as C1^T p A_Q C2 (ill-typed), and G^(A) d x r / G^(B) r x d in Problems 1-3."""
    p = problem_from_json(record["instance"])
    pi = chain.paper_inputs(p, "Q")
    t = chain.exact_terms(pi)
    L, d, r = p.L, p.d, p.r
    try:
        pi.C1.T @ t.P @ pi.A @ pi.C2
        numeric_error = None
    except ValueError as exc:
        numeric_error = str(exc).split("\n")[0]
    C1, P = sp.MatrixSymbol("C1", L, d), sp.MatrixSymbol("P", L, L)
    A, C2 = sp.MatrixSymbol("A_Q", r, d), sp.MatrixSymbol("C2", L, d)
    try:
        C1.T * P * A * C2
        symbolic_error = None
    except ShapeError as exc:
        symbolic_error = str(exc)
    _, ref = testing.torch_gradients(p)
    ours = chain.adapter_gradients(pi, t.P)
    ours_rel = _rel(ours, ref)
    stated = {"A": (d, r), "B": (r, d)}
    actual = {"A": tuple(ref["A_Q"].shape), "B": tuple(ref["B_Q"].shape)}
    shapes_wrong = stated != actual
    return {
        "paper_fails": numeric_error is not None and shapes_wrong,
        "ours_holds": ours_rel <= HOLD_REL,
        "numeric": {
            "numpy_error": numeric_error,
            "stated_shapes": stated,
            "actual_shapes": actual,
            "ours_rel_error": ours_rel,
        },
        "symbolic": {"paper_fails": symbolic_error is not None, "detail": f"SymPy: {symbolic_error}"},
        "summary": (
            f"C1^T p A_Q C2 is ill-typed for L={L}, d={d}, r={r} (NumPy: {numeric_error}); "
            f"stated shapes {stated} vs actual {actual}; corrected C1^T P C2 A^T off by {ours_rel:.1e}"
        ),
    }


def _composition(pi, ex, ap):
    """(actual ||ΔG_A||, paper's bound ||B|| ||C1|| ||C2|| (||Δp1|| + ||Δp2||), d L^2 x that)."""
    gA, _ = chain.adapter_gradients(pi, ex.P)
    tA, _ = chain.adapter_gradients(pi, ap.P)
    actual = maxnorm(tA - gA)
    bound = (
        maxnorm(pi.B) * maxnorm(pi.C1) * maxnorm(pi.C2) * (maxnorm(ap.p1 - ex.p1) + maxnorm(ap.p2 - ex.p2))
    )
    inner = pi.C1.shape[1] * ex.F.shape[0] * ex.F.shape[1]
    return actual, bound, inner * bound


def evaluate_e4(record, symbolic=True):
    """App. C.7's composed bound without the d L^2 of the max-norm step, on the chain's real errors."""
    p = problem_from_json(record["instance"])
    poly = exp_polynomial(record["radius"], degree=record["degree"], method=record["method"])
    pi = chain.paper_inputs(p, "Q")
    ex, ap = chain.exact_terms(pi), chain.approx_terms(pi, poly)
    ratios = chain_ratios(pi, ex, ap, poly)
    actual, bound, corrected = _composition(pi, ex, ap)
    sym = None
    if symbolic:
        with mpmath.workdps(HP_DIGITS):
            pim = pi.convert(mpmath.mpf)
            exm = chain.exact_terms(pim, chain.object_exp(mpmath.exp))
            apm = chain.approx_terms(pim, poly, features=False)
            hp_actual, hp_bound, hp_corrected = _composition(pim, exm, apm)
        sym = {
            "paper_fails": hp_actual > hp_bound and hp_actual <= hp_corrected,
            "detail": (
                f"{HP_DIGITS}-digit mpmath: actual {hp_actual:.6e} > paper bound {hp_bound:.6e}; "
                f"<= d L^2 bound {hp_corrected:.3e}"
            ),
        }
    return {
        "paper_fails": actual > bound,
        "ours_holds": actual <= corrected and ratios["C7_corrected_B"] <= 1,
        "numeric": {
            "actual_error_A": actual,
            "paper_bound_A": bound,
            "corrected_bound_A": corrected,
            "ratio_paper_A": actual / bound,
            "ratio_paper_B": ratios["C7_paper_B"],
            "ratio_corrected_A": actual / corrected,
            "ratio_corrected_B": ratios["C7_corrected_B"],
        },
        "symbolic": sym,
        "summary": (
            f"||ΔG_A||_max = {actual:.3e} exceeds the paper's bound {bound:.3e} "
            f"({actual / bound:.2f}x); the corrected d·L² bound {corrected:.3e} holds"
        ),
    }


def _loss_with_logits(pi, S):
    F = chain.softmax_rows(S, chain.float_exp)
    return 0.5 * float(np.sum((F @ pi.C3 - pi.Y) ** 2))


def evaluate_e5(record, symbolic=True):
    """Eq. (3.2) drops W̄*_Q (logits C1 B_Q A_Q C2^T), and Eq. (1.1) prints Q = X W_V."""
    p = problem_from_json(record["instance"])
    pi = chain.paper_inputs(p, "Q")
    h = testing.host_inputs(p)
    X, W = h["X"][0], p.weights()
    true_S = chain.logits(pi)
    s32 = pi.C1 @ pi.B @ pi.A @ pi.C2.T
    s11 = p.beta * (X @ W["V"]) @ (X @ W["K"]).T
    ref = testing.reference_loss(h, p.alpha, p.beta, p.r)
    ours = _loss_with_logits(pi, true_S)
    l32, l11 = _loss_with_logits(pi, s32), _loss_with_logits(pi, s11)
    rel32, rel11, ours_rel = abs(l32 - ref) / ref, abs(l11 - ref) / ref, abs(ours - ref) / ref
    exact = lambda M: sp.Matrix(M.shape[0], M.shape[1], [sp.Rational(x) for x in M.flat])  # noqa: E731
    pis = pi.convert(sp.Rational)
    ex_true = pis.C1 @ pis.W @ pis.C2.T
    ex_32 = pis.C1 @ pis.B @ pis.A @ pis.C2.T
    Xs, Ws = exact(X), {m: exact(np.asarray(W[m])) for m in "QKV"}
    beta = sp.Rational(p.beta)
    ex_11, ex_Q = (beta * Xs * Ws[m] * Ws["K"].T * Xs.T for m in ("V", "Q"))
    sym32 = any(a != b for a, b in zip(ex_32.flat, ex_true.flat))
    sym11 = ex_11 != ex_Q
    return {
        "paper_fails": rel32 > FAIL_REL and rel11 > FAIL_REL,
        "ours_holds": ours_rel <= HOLD_REL,
        "numeric": {
            "loss_true": ref,
            "loss_eq_3_2": l32,
            "loss_eq_1_1": l11,
            "rel_diff_3_2": rel32,
            "rel_diff_1_1": rel11,
            "ours_rel_diff": ours_rel,
        },
        "symbolic": {
            "paper_fails": sym32 and sym11,
            "detail": "exact rational logits: C1 B A C2^T ≠ C1 (W̄* + B A) C2^T and "
            "X W_V W_K^T X^T ≠ X W_Q W_K^T X^T",
        },
        "summary": (
            f"loss with (3.2)'s logits off by {rel32:.1%}, with (1.1)'s Q = X W_V by {rel11:.1%}; "
            f"the corrected logits reproduce the reference loss to {ours_rel:.1e}"
        ),
    }


def evaluate_e6(record, symbolic=True):
    """No 1/d: under ||C1 W||, ||C2|| <= Γ the logits reach d Γ², not Γ², so the degree the cited
    lemma provides (logits <= Γ²) misses its error target; with β = 1/d it meets it."""
    a = lambda v: np.asarray(v, dtype=np.float64)  # noqa: E731
    Q, K, C3, Y = a(record["C1W"]), a(record["C2"]), a(record["C3"]), a(record["Y"])
    L, d, gamma, eps = Q.shape[0], Q.shape[1], record["Gamma"], record["eps"]
    hyp = maxnorm(Q) <= gamma and maxnorm(K) <= gamma
    g = min_degree(gamma**2, eps)
    poly = exp_polynomial(gamma**2, degree=g)
    target = 2 * poly.rel_error / (1 - poly.rel_error)
    dummy = np.zeros((1, d))

    def ratio(scale):
        pi = chain.PaperInputs(scale * Q, np.eye(d), K, C3, Y, dummy, dummy.T)
        F = chain.exact_terms(pi).F
        return float(np.max(np.abs(chain.approx_F(pi, poly) - F) / F)) / target, maxnorm(chain.logits(pi))

    paper_ratio, paper_logit = ratio(1.0)
    ours_ratio, ours_logit = ratio(1.0 / d)
    g_needed = min_degree(d * gamma**2, eps, max_degree=80)
    rank_needed = None if g_needed is None else feature_rank(d, g_needed)
    sym = None
    if symbolic:
        with mpmath.workdps(HP_DIGITS):  # the exact F~ (p(S) entrywise) confirms the float result
            pim = chain.PaperInputs(Q, np.eye(d), K, C3, Y, dummy, dummy.T).convert(mpmath.mpf)
            Fm = chain.exact_terms(pim, chain.object_exp(mpmath.exp)).F
            Ftm = chain.approx_F(pim, poly, features=False)
            hp_ratio = float(max(abs(x - y) / y for x, y in zip(Ftm.flat, Fm.flat))) / target
        sym = {
            "paper_fails": hp_ratio > 1,
            "detail": f"{HP_DIGITS}-digit mpmath: error/target = {hp_ratio:.4g}",
        }
    return {
        "paper_fails": hyp and paper_ratio > 1,
        "ours_holds": ours_ratio <= 1,
        "numeric": {
            "Gamma": gamma,
            "d": d,
            "L": L,
            "eps": eps,
            "degree_for_Gamma2": g,
            "max_logit_paper": paper_logit,
            "max_logit_corrected": ours_logit,
            "ratio_paper": paper_ratio,
            "ratio_corrected": ours_ratio,
            "degree_needed_at_dGamma2": g_needed,
            "rank_needed_at_dGamma2": rank_needed,
            "rank_over_L": None if rank_needed is None else rank_needed / L,
        },
        "symbolic": sym,
        "summary": (
            f"Γ = {gamma:.3g} (= {gamma / math.sqrt(math.log(L)):.2f}·√ln L), d = {d}: logits reach "
            f"{paper_logit:.3g} = dΓ², not Γ² = {gamma**2:.3g}; the degree-{g} polynomial certified for Γ² "
            f"misses the F error target by {paper_ratio:.3g}x; with β = 1/d it meets it "
            f"({ours_ratio:.2f}x). Certified degree needed at dΓ²: {g_needed}, rank {rank_needed} = "
            f"{rank_needed / L:.3g}·L (the low-rank path costs ~L·k·d vs L²·d exact)"
        ),
    }


def evaluate_e7(record, symbolic=True):
    """App. C.5 defines ⊘ column-wise ([A[:,1]⊗B[:,1] | ...]); the identity needs the row-wise one."""
    a = lambda v: np.asarray(v, dtype=np.float64)  # noqa: E731
    results, sym_ok, paper_fails = {}, True, True
    for case in ("unequal", "equal"):
        U1, V1, U2, V2 = (a(record[case][k]) for k in ("U1", "V1", "U2", "V2"))
        target = (U1 @ V1.T) * (U2 @ V2.T)
        try:
            prod = khatri_rao(U1, U2) @ khatri_rao(V1, V2).T
            col = (
                f"shape {prod.shape} ≠ {target.shape}"
                if prod.shape != target.shape
                else f"max diff {maxnorm(prod - target):.3g}"
            )
            fails = prod.shape != target.shape or maxnorm(prod - target) > FAIL_REL
        except ValueError as exc:
            col, fails = f"undefined ({str(exc).splitlines()[0]})", True
        row_diff = maxnorm(chain.face_split(U1, U2) @ chain.face_split(V1, V2).T - target)
        R = lambda M: sp.Matrix(M.shape[0], M.shape[1], [sp.Rational(x) for x in M.flat])  # noqa: E731
        fs = lambda A, B: sp.Matrix(
            A.rows,
            A.cols * B.cols,  # noqa: E731
            lambda i, j: A[i, j // B.cols] * B[i, j % B.cols],
        )
        U1s, V1s, U2s, V2s = R(U1), R(V1), R(U2), R(V2)
        exact_ok = fs(U1s, U2s) * fs(V1s, V2s).T == (U1s * V1s.T).multiply_elementwise(U2s * V2s.T)
        results[case] = {
            "column_wise": col,
            "row_wise_max_diff": row_diff,
            "row_wise_exact": bool(exact_ok),
            "k1": U1.shape[1],
            "k2": U2.shape[1],
        }
        sym_ok &= bool(exact_ok)
        paper_fails &= fails
    ours = all(r["row_wise_max_diff"] <= HOLD_REL * 10 for r in results.values()) and sym_ok
    return {
        "paper_fails": paper_fails,
        "ours_holds": ours,
        "numeric": results,
        "symbolic": {
            "paper_fails": paper_fails and sym_ok,
            "detail": "row-wise ⊘ satisfies (U1V1^T)∘(U2V2^T) = (U1⊘U2)(V1⊘V2)^T exactly (rationals)",
        },
        "summary": (
            f"column-wise (Khatri-Rao) ⊘: k1≠k2 {results['unequal']['column_wise']}; k1=k2 "
            f"{results['equal']['column_wise']}; row-wise ⊘ exact"
        ),
    }




# ---------------------------------------------------------------------------------------------
# E6, second outcome: an inconsistency between Theorems 3.1 and 4.1 (the rescaling argument)
#
# Problem 2's answer dL/dA_Q = B_Q^T C1^T P C2, dL/dB_Q = C1^T P C2 A_Q^T depends on C1, C2 through
# S = C1 W C2^T and the outer factors; C1 -> C1/t, C2 -> t C2 leaves S, the loss, P and both gradients
# unchanged. App. E's hard instances (AS24 Thm 5.5: r = Θ(log L), entries of A1, A2, A3 <= B =
# √(log L)·κ, X = λ I_r, Y = 0) have ||C1 W|| = λB and ||C2|| = B/r; with t a power of two near √r
# (exact in floating point) both become <= √2·B/√r = O(κ). For κ = ω(1), κ = o(√log L) (e.g. log log L)
# they satisfy Thm 3.1's printed hypotheses (norms <= Γ = o(√log L), d = r + 1 = O(log L)), so Thm 3.1
# would solve in L^(1+o(1)) instances Thm 4.1 says need L^(2-o(1)) under SETH. The logits are
# unchanged, max|S| ~ λB² = κ² log L = ω(log L): read on the logits (E6's correction) they agree.


def balancing_power_of_two(r: int) -> float:
    """t = 2^j minimising max(1/t, t/r), the larger rescaled norm over B (an exact rescaling)."""
    j = math.floor(math.log2(math.sqrt(r)))
    return min((2.0**j, 2.0 ** (j + 1)), key=lambda t: max(1 / t, t / r))


def hard_instance(L: int, rng, *, lam: float = 1.0) -> dict:
    """An App. E reduction instance with κ = ln ln L, r = ⌈ln L⌉, d = r + 1: A1, A2, A3 of entries
    ±B (random signs), C1 = [A1, 0] (so C1 B_Q = A1 with B_Q = [I_r; 0]), A_Q = [λ I_r, 0],
    C2 = [A2, 0]/r, C3 = [A3, 0], Y = 0 (W̄*_Q = 0)."""
    ln = math.log(L)
    kappa = math.log(ln)
    r = max(2, math.ceil(ln))
    d = r + 1
    B = math.sqrt(ln) * kappa
    A1, A2, A3 = (B * rng.choice([-1.0, 1.0], size=(L, r)) for _ in range(3))
    pad = lambda M: np.hstack([M, np.zeros((L, d - r))])  # noqa: E731
    return {"L": L, "r": r, "d": d, "kappa": kappa, "lam": lam, "B": B, "t": balancing_power_of_two(r),
            "C1": pad(A1).tolist(), "C2": (pad(A2) / r).tolist(), "C3": pad(A3).tolist(),
            "Y": np.zeros((L, d)).tolist(), "B_Q": np.vstack([np.eye(r), np.zeros((d - r, r))]).tolist(),
            "A_Q": np.hstack([lam * np.eye(r), np.zeros((r, d - r))]).tolist()}


def problem2(C1, C2, C3, Y, B_Q, A_Q) -> dict:
    """Logits, loss and both gradients of Problem 2 (closed forms of Lemma 3.2 with E1-E3 applied)."""
    W = B_Q @ A_Q
    S = C1 @ W @ C2.T
    F = chain.softmax_rows(S, chain.float_exp)
    c = F @ C3 - Y
    G = c @ C3.T
    P = F * G - (F * G).sum(axis=1, keepdims=True) * F
    M = C1.T @ P @ C2
    return {"S": S, "loss": 0.5 * float(np.sum(c**2)), "dA": B_Q.T @ M, "dB": M @ A_Q.T}


def rescaling_table(exponents=(8, 16, 64, 256, 4096, 65536)) -> list[dict]:
    """The construction's norms in closed form as L = 2^e grows (no data): the rescaled norms over
    √ln L, κ max(λ/t, t/r) -> 0, while the logit bound over ln L, λB²/ln L = κ², -> ∞."""
    rows = []
    for e in exponents:
        ln = e * math.log(2)
        r, kappa = max(2, math.ceil(ln)), math.log(ln)
        t = balancing_power_of_two(r)
        rows.append({"log2L": e, "r": r, "t": t, "kappa": kappa, "original_over_sqrt_lnL": kappa,
                     "rescaled_over_sqrt_lnL": kappa * max(1 / t, t / r), "logit_bound_over_lnL": kappa**2})
    return rows


def _rescaling_identity_exact() -> bool:
    """SymPy, symbolic t and explicit 2 x 2 symbol matrices: S, P, dA and dB of (C1/t, t C2) equal
    those of (C1, C2) (P is a function of S, C3 and Y only)."""
    t = sp.Symbol("t", positive=True)
    sym = lambda name, m, n: sp.Matrix(m, n, lambda i, j: sp.Symbol(f"{name}{i}{j}"))  # noqa: E731
    C1, C2, Bq, Aq, P = sym("c", 2, 2), sym("k", 2, 2), sym("b", 2, 1), sym("a", 1, 2), sym("p", 2, 2)
    W = Bq * Aq
    same = lambda X, Y: all(sp.simplify(x - y) == 0 for x, y in zip(X, Y))  # noqa: E731
    return (same((C1 / t) * W * (t * C2).T, C1 * W * C2.T)
            and same(Bq.T * (C1 / t).T * P * (t * C2), Bq.T * C1.T * P * C2)
            and same((C1 / t).T * P * (t * C2) * Aq.T, C1.T * P * C2 * Aq.T))


def evaluate_e6_rescaling(rec: dict, symbolic: bool = True) -> dict:
    """The rescaled hard instance: identical logits, loss and gradients (bitwise, t a power of two),
    norms inside Thm 3.1's (<= √(2/r)·B = O(κ)); the logits stay above ln L."""
    a = lambda v: np.asarray(v, dtype=np.float64)  # noqa: E731
    keys = ("C1", "C2", "C3", "Y", "B_Q", "A_Q")
    inst = {k: a(rec[k]) for k in keys}
    t, L, r, B = rec["t"], rec["L"], rec["r"], rec["B"]
    scaled = dict(inst, C1=inst["C1"] / t, C2=inst["C2"] * t)
    before, after = problem2(*(inst[k] for k in keys)), problem2(*(scaled[k] for k in keys))
    identical = (np.array_equal(before["S"], after["S"]) and before["loss"] == after["loss"]
                 and np.array_equal(before["dA"], after["dA"]) and np.array_equal(before["dB"], after["dB"]))
    W = inst["B_Q"] @ inst["A_Q"]
    norms = lambda x: (maxnorm(x["C1"] @ W), maxnorm(x["C2"]))  # noqa: E731
    (n1, n2), (m1, m2) = norms(inst), norms(scaled)
    ln = math.log(L)
    hard = max(n1, n2) <= B * (1 + 1e-12) and not np.any(inst["Y"])  # Thm 4.1's instance: norms <= B, Y = 0
    inside = max(m1, m2) <= math.sqrt(2 / r) * B * (1 + 1e-12)
    table = rescaling_table()
    shrinking = all(b["rescaled_over_sqrt_lnL"] < a_["rescaled_over_sqrt_lnL"] for a_, b in zip(table[2:], table[3:]))
    growing = all(b["logit_bound_over_lnL"] > a_["logit_bound_over_lnL"] for a_, b in zip(table, table[1:]))
    logit = maxnorm(before["S"])
    exact = _rescaling_identity_exact() if symbolic else None
    return {
        "inconsistent": identical and hard and inside and shrinking and exact is not False,
        "logits_unchanged": identical and logit > ln and growing,
        "exact": exact,
        "numeric": {"L": L, "r": r, "d": rec["d"], "t": t, "kappa": rec["kappa"], "B": B, "identical": identical,
                    "norm_C1W": n1, "norm_C2": n2, "rescaled_norm_C1W": m1, "rescaled_norm_C2": m2,
                    "rescaled_over_sqrt_lnL": max(m1, m2) / math.sqrt(ln), "original_over_sqrt_lnL": max(n1, n2)
                    / math.sqrt(ln), "max_logit": logit, "max_logit_over_lnL": logit / ln, "table": table},
        "summary": (
            f"rescaling C1/t, t·C2 (t = {t:g}) of an App. E hard instance (L={L}, r={r}, κ = ln ln L): logits, "
            f"loss and ∂L/∂A_Q, ∂L/∂B_Q bitwise identical ({identical}); norms {max(n1, n2) / math.sqrt(ln):.2f}·√ln L"
            f" -> {max(m1, m2) / math.sqrt(ln):.2f}·√ln L (O(κ): -> 0·√ln L as L grows), max|S| = "
            f"{logit / ln:.2f}·ln L unchanged. So Thm 3.1's printed hypotheses admit Thm 4.1's hard instances: "
            "the theorems contradict each other under SETH unless the threshold is on the logits"
        ),
    }


def _e6_rescaling_outcomes(record: dict, symbolic: bool) -> list:
    if "rescaling" not in record:
        return []
    res = evaluate_e6_rescaling(record["rescaling"], symbolic)
    out = [{"name": "Thm 3.1 vs 4.1: rescaled hard instance", "role": "literal", "holds": not res["inconsistent"],
            "measured": res["summary"], "data": res["numeric"]},
           {"name": "Thm 3.1 vs 4.1: the logits are unchanged (threshold on max|S|)", "role": "claim",
            "holds": res["logits_unchanged"],
            "measured": f"max|S| = {res['numeric']['max_logit_over_lnL']:.2f}·ln L on both instances; "
                        "the logit bound λB²/ln L = κ² -> ∞: outside max|S| = o(log L), no contradiction"}]
    if res["exact"] is not None:
        out.insert(1, {"name": "Thm 3.1 vs 4.1: rescaling identity (exact)", "role": "literal",
                       "holds": not res["exact"],
                       "measured": "SymPy, symbolic t: S, ∂L/∂A_Q, ∂L/∂B_Q of (C1/t, t C2) equal those of (C1, C2): "
                                   + str(res["exact"])})
    return out


# ---------------------------------------------------------------------------------------------
# O1 (ours): the low-rank chain is NOT the gradient of the approximate loss
#
# The chain computes the exact gradient formulas at F~ = p(S)/rowsum p(S) (lowrank_proofs (d)). The
# gradient of the approximate loss L~ = 1/2 ||F~ C3 - Y||^2 differs: dF~_ik/dS_ij = F~_ik (δ_jk - F~_ij)
# p'(S_ij)/p(S_ij), so dL~/dS = (p'(S)/p(S)) ∘ P~, and p' != p for a polynomial. The loss and dW_V agree
# (F~ does not depend on W_V).


def _host(p):
    h = testing.host_inputs(p)
    X, Xkv, Y = h["X"][0], h["X_kv"][0], h["Y"][0]
    W = {m: h["W"][m] + p.scale * h["B"][m] @ h["A"][m] if m in h["A"] else h["W"][m] for m in "QKV"}
    return h, X, Xkv, Y, W


def formulas_at(F, X, Xkv, Y, W, A, B, scale, beta) -> tuple:
    """Loss and {A_mu, B_mu} of the exact gradient formulas with the attention F given (any entries:
    floats, mpmath or SymPy numbers in object arrays)."""
    C1, C2, C3 = X @ W["Q"], Xkv @ W["K"], Xkv @ W["V"]
    c = F @ C3 - Y
    G = c @ C3.T
    p1 = F * G
    P = p1 - p1.sum(axis=1, keepdims=True) * F
    dW = {"Q": beta * X.T @ P @ C2, "K": beta * Xkv.T @ P.T @ C1, "V": Xkv.T @ F.T @ c}
    grads = {}
    for m in A:
        grads[f"A_{m}"] = scale * B[m].T @ dW[m]
        grads[f"B_{m}"] = scale * dW[m] @ A[m].T
    return (c * c).sum() / 2, grads


def _poly_attention(S, coeffs):
    E = sum(c * S**i for i, c in enumerate(coeffs))
    return E / E.sum(axis=1, keepdims=True)


def approx_loss_autograd(p, coeffs) -> tuple[float, dict]:
    """PyTorch autograd (float64) of L~ = 1/2 ||F~ X' W_V - Y||^2, F~ = p(S)/rowsum p(S) with
    p(s) = sum_i coeffs[i] s^i: the gradient of the approximate loss (test-only oracle)."""
    import torch  # noqa: PLC0415 - the test-only oracle, as testing.torch_gradients

    h, *_ = _host(p)
    leaf = lambda v: torch.tensor(v, dtype=torch.float64, requires_grad=True)  # noqa: E731
    A, B = {m: leaf(v) for m, v in h["A"].items()}, {m: leaf(v) for m, v in h["B"].items()}
    W = {m: torch.tensor(h["W"][m]) + (p.scale * B[m] @ A[m] if m in A else 0) for m in "QKV"}
    X, Xkv, Y = (torch.tensor(h[k][0]) for k in ("X", "X_kv", "Y"))
    S = p.beta * (X @ W["Q"]) @ (Xkv @ W["K"]).T
    E = sum(float(c) * S**i for i, c in enumerate(coeffs))
    loss = (((E / E.sum(-1, keepdim=True)) @ (Xkv @ W["V"]) - Y) ** 2).sum() / 2
    loss.backward()
    return float(loss.detach()), {f"A_{m}": A[m].grad.numpy() for m in A} | {f"B_{m}": B[m].grad.numpy() for m in B}


def _rel_max(a, b) -> float:
    scale = max(maxnorm(b), 1e-300)
    return maxnorm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) / scale


def _exact_directional(p, coeffs) -> tuple:
    """Exact rationals: d/dt L~(A_Q + t e_00) at t = 0 by SymPy, and entry (0, 0) of the exact
    formulas' dL/dA_Q at F~ (the chain's object)."""
    h, X, Xkv, Y, _ = _host(p)
    R = lambda M: sp.Matrix(np.asarray(M).shape[0], np.asarray(M).shape[1],  # noqa: E731
                            [sp.Rational(float(x)) for x in np.asarray(M).flat])
    t = sp.Symbol("t")
    s, beta = sp.Rational(p.scale), sp.Rational(p.beta)
    A = {m: R(v) for m, v in h["A"].items()}
    B = {m: R(v) for m, v in h["B"].items()}
    Xs, Xks, Ys = R(X), R(Xkv), R(Y)
    cs = [sp.Rational(c) for c in coeffs]

    def loss_at(AQ):
        W = {m: R(h["W"][m]) + (s * B[m] * (AQ if m == "Q" else A[m]) if m in A else sp.zeros(p.d, p.d))
             for m in "QKV"}
        S = beta * Xs * W["Q"] * W["K"].T * Xks.T
        E = S.applyfunc(lambda x: sum(c * x**i for i, c in enumerate(cs)))
        F = sp.Matrix(E.rows, E.cols, lambda i, j: E[i, j] / sum(E[i, :]))
        c = F * Xks * W["V"] - Ys
        return sum(x**2 for x in c) / 2, F, W

    delta = sp.zeros(*A["Q"].shape)
    delta[0, 0] = 1
    loss_t, _, _ = loss_at(A["Q"] + t * delta)
    directional = sp.diff(loss_t, t).subs(t, 0)
    _, F, W = loss_at(A["Q"])
    obj = lambda M: np.array(M.tolist(), dtype=object)  # noqa: E731
    _, grads = formulas_at(obj(F), obj(Xs), obj(Xks), obj(Ys), {m: obj(v) for m, v in W.items()},
                           {m: obj(v) for m, v in A.items()}, {m: obj(v) for m, v in B.items()}, s, beta)
    return sp.nsimplify(directional), sp.nsimplify(grads["A_Q"][0, 0])


def evaluate_o1(record, symbolic=True):
    """Our old wording "the chain is exactly the gradient of the approximate softmax": on a degree-g Taylor
    instance the chain's loss and V gradients equal autograd's through the same F~, its Q/K gradients do
    not; they equal the exact formulas at F~ (what `lowrank_proofs` proves)."""
    p = problem_from_json(record["instance"])
    poly = exp_polynomial(1.0, degree=record["degree"], method=record["method"])
    loss, dW = lowrank_weight_gradients(p, poly, "".join(p.adapted))  # the plain chain at one polynomial
    res = SimpleNamespace(loss=loss, grads=lora_factor_gradients(p, dW))
    coeffs = poly.coefficients_float()
    auto_loss, auto = approx_loss_autograd(p, coeffs)
    h, X, Xkv, Y, W = _host(p)
    S = p.beta * (X @ W["Q"]) @ (Xkv @ W["K"]).T
    f_loss, at_F = formulas_at(_poly_attention(S, coeffs), X, Xkv, Y, W, h["A"], h["B"], p.scale, p.beta)
    chain_loss = float(res.loss)
    loss_rel = abs(chain_loss - auto_loss) / abs(auto_loss)
    vs_auto = {k: _rel_max(res.grads[k], auto[k]) for k in sorted(auto)}
    vs_formulas = max([_rel_max(res.grads[k], at_F[k]) for k in at_F] + [abs(chain_loss - f_loss) / abs(f_loss)])
    qk = min(vs_auto[k] for k in vs_auto if k[-1] in "QK")
    v = max(vs_auto[k] for k in vs_auto if k[-1] == "V")
    sym = None
    if symbolic:
        directional, formula = _exact_directional(p, coeffs)
        gap = abs(directional - formula) / abs(directional)
        sym = {"paper_fails": bool(gap > sp.Rational(1, 10**6)),
               "detail": f"exact rationals: dL~/dA_Q[0,0] = {float(directional):.12g} (SymPy derivative of the "
                         f"approximate loss), the chain's object {float(formula):.12g} (relative gap {float(gap):.3g})"}
    return {
        "paper_fails": loss_rel <= HOLD_REL and v <= HOLD_REL * 10 and qk > FAIL_REL,
        "ours_holds": vs_formulas <= HOLD_REL * 10,
        "numeric": {"loss_chain": chain_loss, "loss_autograd_approx": auto_loss, "loss_rel_diff": loss_rel,
                    "rel_diff_vs_autograd_approx": vs_auto, "min_qk_rel_diff": qk, "max_v_rel_diff": v,
                    "rel_diff_vs_formulas_at_F_tilde": vs_formulas, "max_abs_logit": maxnorm(S)},
        "symbolic": sym,
        "summary": (
            f"degree-{record['degree']} {record['method']} features, L={p.L}, d={p.d}, Q/K/V adapted: the chain's loss "
            f"equals the approximate loss (autograd through F~) to {loss_rel:.1e} and its V gradients to {v:.1e}, "
            f"but its Q/K gradients differ by {qk:.0%}-{max(vs_auto[k] for k in vs_auto if k[-1] in 'QK'):.0%}; "
            f"they equal the exact gradient formulas at F~ to {vs_formulas:.1e}"
        ),
    }


def evaluate_e6_all(record, symbolic=True):
    """E6: the missing 1/d (the logits reach dΓ²) and, second, the rescaling inconsistency of Thms 3.1/4.1."""
    out = evaluate_e6(record, symbolic)
    extra = _e6_rescaling_outcomes(record, symbolic)
    if extra:
        out["outcomes"] = extra
        out["summary"] += ". Second: " + extra[0]["measured"]
    return out


EVALUATORS = {
    "E1": evaluate_e1,
    "E2": evaluate_e2,
    "E3": evaluate_e3,
    "E4": evaluate_e4,
    "E5": evaluate_e5,
    "E6": evaluate_e6_all,
    "E7": evaluate_e7,
    "O1": evaluate_o1,
}
