"""The degree table of issue 10: measured error, certified bound before and after, and time.

On issue 10's instance (L = 2^14 by default, d = 8, X ~ N(0, 0.2^2), W*_mu, A_mu ~ N(0, 1/d),
B_mu ~ N(0, 0.04), Y ~ N(0, 1), r = 4, alpha = 8, full Q/K/V) and each forced degree g:

- before: the global certificate (`certificate.certify`, one polynomial on [-R, R] with R the
  Cauchy-Schwarz bound) and the path it certifies (`lowrank_weight_gradients` at that polynomial);
- after: `approx_gradients(problem, degree=g, on_threshold="force")` (the row-adaptive certificate:
  centred, ellipsoidal enclosure, per-row polynomials, chunked rounding floor);

each against the exact path (blocked, float64): max over keys of the max-abs error, the max over
keys of the certified bound, their ratio (per key, then the median over keys) and the wall time.
`lora-proofcheck bench --tightness` runs it; a timing is one run (ratios in one run compare).

A POSTERIORI (the rows' `a_posteriori` entry): `gradients.a_posteriori.a_posteriori_bound` of the
"after" result against degree g + POSTERIORI_STEP (almost linear) and against "auto" (the cheaper
reference by the time model, often the exact path at 2^14): max|g~ - g~_ref| + the reference's
certified bound, which sees the cancellation the a priori chain cannot, at the reference's cost.

WHERE THE LOOSENESS IS (`looseness`, the "after" rows' `looseness` entry): a diagnostic in O(L^2),
in row and key blocks, that splits bound / error into three measured factors.  The loss is a sum
over query rows and each row's term depends on its attention row only, so the approximate path's
gradient is sum_i h_i(F~_i) and its error is sum_i delta_i, delta_i := h_i(F~_i) - h_i(F_i) (the
chain is the exact formulas at F~: `derivations/lowrank_proofs.py`).  Measured, per key:
  - lemma1 = median over rows of ||F~_i - F_i||_1 / kappa_{c(i)}: how tight Lemma 1 (R2) is;
  - cross_rows = max_ab sum_i |delta_i,ab| / max_ab |sum_i delta_i,ab| (median over keys): what any
    certificate that bounds each row's term and then adds them (R3 does) must lose at least, the
    rows' errors cancelling across rows;
  - within_rows = bound / max_ab sum_i |delta_i,ab| (median over keys): what the certificate loses
    inside a row, from ||F~_i - F_i||_1 to the row's gradient term;
  - theta_corr = median over rows of |Corr_{F_i}(theta, w)|, theta_ij = F~_ij / F_ij - 1, w_j the
    weights T_ij (C2_jb - mean C2_b) of dW_Q's row contraction (b = 0): Lemma 1's covariance step
    |Cov(theta, w)| <= sd(theta) sd(w) takes this correlation as 1.
Self-attention, one sample (N = 1), as `issue_instance`; the per-row terms are checked to add up to
the exact gradients (relative 1e-8) before anything is reported.
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np

from .._lib.xp import to_host64
from ..certification import adaptive
from ..certification import certificate as cert_mod
from ..certification.polynomial import exp_polynomial
from ..errors import InvalidInputError
from ..gradients.a_posteriori import a_posteriori_bound
from ..gradients.approx import approx_gradients
from ..gradients.exact_path import exact_gradients, lora_factor_gradients
from ..gradients.lowrank_path import lowrank_weight_gradients, plan_feature_functions
from ..problem import LoRAProblem

__all__ = ["DEGREES", "POSTERIORI_MAX", "POSTERIORI_STEP", "degree_table", "issue_instance", "looseness", "table_markdown"]

DEGREES = (4, 5, 6, 7, 8, 9)
#: the a posteriori column's reference: degree g + POSTERIORI_STEP, run only up to POSTERIORI_MAX
POSTERIORI_STEP, POSTERIORI_MAX = 3, 10


def issue_instance(L: int = 16384, seed: int = 0) -> LoRAProblem:
    """Issue 10's instance (module docstring): LoRAProblem.random's draws, X and B rescaled."""
    d, r = 8, 4
    p = LoRAProblem.random(L, d, r, adapt="QKV", seed=seed)
    f = lambda a: to_host64(a)  # noqa: E731
    B = {m: f(b) * (0.2 * math.sqrt(d)) for m, b in p.B.items()}  # N(0, 1/d) -> N(0, 0.04)
    return LoRAProblem(f(p.X) * 0.2, f(p.Y), {m: f(w) for m, w in p.W.items()}, {m: f(a) for m, a in p.A.items()},
                       B, alpha=p.alpha, beta=p.beta)


def _row_terms(p, F, rows, X, Xk, Y, Qp, Kp, V):
    """Per query row i of the block: h_i(F_i) for each LoRA key, shape (rows, a, b) (module docstring);
    Qp = X W_Q (without beta), Kp = X' W_K, V = X' W_V."""
    beta, Qp = p.beta, Qp[rows]
    O = F @ V
    C = O - Y[rows]
    dS = F * (C @ V.T - np.sum(C * O, axis=1, keepdims=True))      # dL/dS, row by row
    dW = {"Q": beta * np.einsum("na,nb->nab", X[rows], dS @ Kp),
          "K": beta * np.einsum("na,nb->nab", dS @ Xk, Qp),
          "V": np.einsum("na,nb->nab", F @ Xk, C)}
    out = {}
    for m in p.adapted:
        A, B = to_host64(p.A[m]), to_host64(p.B[m])
        out[f"A_{m}"] = p.scale * np.einsum("ke,nkl->nel", B, dW[m])
        out[f"B_{m}"] = p.scale * np.einsum("nkl,el->nke", dW[m], A)
    return out, dS


def looseness(p: LoRAProblem, degree: int, bound: dict, ref: dict, *, block: int = 1024, cert=None) -> dict:
    """The three measured factors of bound / error at `degree` (module docstring), O(L^2) in blocks;
    `cert`: the problem's row-adaptive certificate when already built (`ApproxResult.certificate`)."""
    if p.N != 1 or p.L != p.L_kv or p.normalizer_offset:
        raise InvalidInputError("looseness takes one-sample self-attention softmax problems")
    cert = adaptive.certify_adaptive(p, cert_mod.projections(p)) if cert is None else cert
    plan = cert.feature_plan(degree)
    kappa = np.array([c.kappa for c in cert.class_polys(degree)])[np.asarray(plan.cls)[0]]
    qf, kf = plan_feature_functions(p, plan)
    W = {m: to_host64(w) for m, w in p.weights().items()}
    X, Xk, Y = (to_host64(a).reshape(p.L, -1) for a in (p.X3, p.Xkv3, p.Y))
    Q0, Kp, V = X @ W["Q"], Xk @ W["K"], Xk @ W["V"]
    Qp = p.beta * Q0
    w_col = Kp[:, 0] - Kp[:, 0].mean()
    L = p.L
    total = {"exact": {}, "approx": {}}
    abs_delta = {}
    lemma1, corr = np.empty(L), np.empty(L)
    for a in range(0, L, block):
        rows = slice(a, min(a + block, L))
        S = Qp[rows] @ Kp.T
        E = np.exp(S - S.max(axis=1, keepdims=True))
        F = E / E.sum(axis=1, keepdims=True)
        U1 = to_host64(qf(rows))[0]
        Et = np.concatenate([U1 @ to_host64(kf(slice(b, min(b + 4 * block, L))))[0].T
                             for b in range(0, L, 4 * block)], axis=1)
        Ft = Et / Et.sum(axis=1, keepdims=True)
        lemma1[rows] = np.abs(Ft - F).sum(axis=1) / kappa[rows]
        h, dS = _row_terms(p, F, rows, X, Xk, Y, Q0, Kp, V)
        ht, _ = _row_terms(p, Ft, rows, X, Xk, Y, Q0, Kp, V)
        theta = Ft / F - 1.0
        wgt = (dS / np.where(F > 0, F, 1.0)) * w_col                    # T_ij (C2_j0 - mean)
        m_t, m_w = np.sum(F * theta, 1), np.sum(F * wgt, 1)
        cov = np.sum(F * theta * wgt, 1) - m_t * m_w
        sd = np.sqrt(np.maximum(np.sum(F * theta**2, 1) - m_t**2, 0) * np.maximum(np.sum(F * wgt**2, 1) - m_w**2, 0))
        corr[rows] = np.abs(cov) / np.where(sd > 0, sd, np.inf)
        for k in ref:
            total["exact"][k] = total["exact"].get(k, 0) + h[k].sum(axis=0)
            total["approx"][k] = total["approx"].get(k, 0) + ht[k].sum(axis=0)
            abs_delta[k] = abs_delta.get(k, 0) + np.abs(ht[k] - h[k]).sum(axis=0)
    for k in ref:
        scale = float(np.max(np.abs(ref[k])))
        if float(np.max(np.abs(total["exact"][k] - ref[k]))) > 1e-8 * scale:
            raise AssertionError(f"the per-row terms of {k} do not add up to the exact gradient")
    err = {k: float(np.max(np.abs(total["approx"][k] - total["exact"][k]))) for k in ref}
    oracle = {k: float(np.max(abs_delta[k])) for k in ref}
    keys = [k for k in ref if err[k] > 0 and oracle[k] > 0]
    return {"lemma1": float(np.median(lemma1)),
            "cross_rows": statistics.median(oracle[k] / err[k] for k in keys),
            "within_rows": statistics.median(bound[k] / oracle[k] for k in keys),
            "theta_corr": float(np.median(corr)),
            "per_key": {k: {"error_at_F~": err[k], "row_sum": oracle[k]} for k in ref}}


def _err(grads, ref) -> dict:
    return {k: float(np.max(np.abs(to_host64(grads[k]) - ref[k]))) for k in ref}


def degree_table(L: int = 16384, degrees=DEGREES, *, seed: int = 0, progress=None, diagnose: bool = True,
                 a_posteriori: bool = True) -> dict:
    """The table (module docstring) as JSON-ready rows, one per degree; `diagnose`: with each degree's
    `looseness` (O(L^2): about the exact path's time per degree); `a_posteriori`: with each degree's
    `a_posteriori_bound` against degree g + POSTERIORI_STEP (<= POSTERIORI_MAX; almost linear) and
    against "auto" (the cheaper of a degree and the exact path, by the time model)."""
    if isinstance(L, bool) or not isinstance(L, int) or L < 16:
        raise InvalidInputError(f"L must be an int >= 16, got {L!r}")
    degrees = tuple(degrees)
    if not degrees or any(isinstance(g, bool) or not isinstance(g, int) or not 1 <= g <= 30 for g in degrees):
        raise InvalidInputError(f"degrees must be ints in 1..30, got {degrees!r}")
    p = issue_instance(L, seed)
    t0 = time.perf_counter()
    ref = {k: to_host64(v) for k, v in exact_gradients(p).items()}
    exact_s = time.perf_counter() - t0
    old = cert_mod.certify(p)
    S = to_host64(p.beta * (p.X3 @ p.weights()["Q"]) @ (p.Xkv3 @ p.weights()["K"]).mT)
    scale = max(float(np.max(np.abs(v))) for v in ref.values())
    rows = []
    for g in degrees:
        if progress:
            progress(f"degree {g}")
        poly = exp_polynomial(old.logit_bound, degree=g)
        t0 = time.perf_counter()
        _, dW = lowrank_weight_gradients(p, poly, "QKV")
        before = _err(lora_factor_gradients(p, dW), ref)
        before_s = time.perf_counter() - t0
        before_bound = old.bound(poly)
        t0 = time.perf_counter()
        res = approx_gradients(p, degree=g, on_threshold="force")
        after_s = time.perf_counter() - t0
        after = _err(res.grads, ref)
        rows.append({
            "degree": g,
            "before": {"error": max(before.values()), "bound": max(before_bound.values()), "seconds": before_s,
                       "ratio_median": statistics.median(before_bound[k] / before[k] for k in ref if before[k] > 0)},
            "after": {"error": max(after.values()), "bound": max(res.bound.values()), "seconds": after_s,
                      "floor": max(res.floor.values()),
                      "ratio_median": statistics.median(res.bound[k] / after[k] for k in ref if after[k] > 0),
                      "looseness": looseness(p, g, res.bound, ref, cert=res.certificate) if diagnose else None},
            "a_posteriori": _posteriori(p, res, g, after) if a_posteriori else None,
        })
    return {"L": L, "d": 8, "seed": seed, "max_abs_gradient": scale, "true_max_abs_logit": float(np.max(np.abs(S))),
            "cauchy_schwarz_R": float(old.logit_bound), "exact_seconds": exact_s, "rows": rows}


def _posteriori(p, res, g, err) -> dict:
    """`a_posteriori_bound` of the degree-g result against g + POSTERIORI_STEP and "auto"."""
    out = {}
    for name, ref in (("degree", g + POSTERIORI_STEP if g + POSTERIORI_STEP <= POSTERIORI_MAX else None),
                      ("auto", "auto")):
        if ref is None:
            out[name] = None
            continue
        post = a_posteriori_bound(p, res, reference=ref)
        out[name] = {"reference": post.reference, "bound": max(post.bound.values()), "seconds": post.seconds,
                     "reason": post.reason, "holds": all(post.bound[k] >= err[k] for k in err),
                     "ratio_median": statistics.median(post.bound[k] / err[k] for k in err if err[k] > 0)}
    return out


def table_markdown(table: dict) -> str:
    """The table as Markdown (README / closing notes)."""
    out = [f"L = {table['L']}, d = 8, max|g| = {table['max_abs_gradient']:.3g}, true max|S| = "
           f"{table['true_max_abs_logit']:.3g}, Cauchy-Schwarz R = {table['cauchy_schwarz_R']:.3g}, exact path "
           f"{table['exact_seconds']:.2f} s", "",
           "| g | error before | bound before | bound/error before | time before (s) | error after | bound after "
           "| bound/error after | time after (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        b, a = r["before"], r["after"]
        out.append(f"| {r['degree']} | {b['error']:.2g} | {b['bound']:.2g} | {b['ratio_median']:.3g} | "
                   f"{b['seconds']:.2f} | {a['error']:.2g} | {a['bound']:.2g} | {a['ratio_median']:.3g} | "
                   f"{a['seconds']:.2f} |")
    post = [r for r in table["rows"] if r.get("a_posteriori")]
    if post:
        out += ["", "A posteriori (`a_posteriori_bound`: the difference to a certified reference run plus the "
                "reference's bound; it costs the reference run):", "",
                f"| g | reference g + {POSTERIORI_STEP} | bound/error | reference time (s) | reference \"auto\" "
                "| bound/error | reference time (s) |", "|---|---|---|---|---|---|---|"]
        for r in post:
            cells = []
            for name in ("degree", "auto"):
                x = r["a_posteriori"][name]
                cells += (["—", "—", "—"] if x is None else
                          [str(x["reference"]), f"{x['ratio_median']:.3g}", f"{x['seconds']:.2f}"])
            out.append(f"| {r['degree']} | " + " | ".join(cells) + " |")
    diag = [r for r in table["rows"] if r["after"].get("looseness")]
    if diag:
        out += ["", "Where the bound/error after comes from (measured factors, `tightness.looseness`):", "",
                "| g | Lemma 1: row l1 error / kappa_i | cross-row cancellation | within-row slack "
                "| corr(theta, w) |", "|---|---|---|---|---|"]
        for r in diag:
            x = r["after"]["looseness"]
            out.append(f"| {r['degree']} | {x['lemma1']:.2f} | {x['cross_rows']:.3g} | {x['within_rows']:.3g} | "
                       f"{x['theta_corr']:.2g} |")
    return "\n".join(out)
