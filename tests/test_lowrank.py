"""The chained low-rank kernel: proofs, runtime face-split ops, generated kernels, costs, memory.

Oracles: exact SymPy identities (`lowrank_proofs`), the explicit face split, and the generated
EXACT kernels (themselves checked against finite differences and PyTorch in test_exact.py), fed
with exact features U1 = exp(S), U2 = I so that the low-rank chain must reproduce them.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lora_proofcheck import InvalidInputError, InvalidTypeError, LoRAProblem, _xp, costs
from lora_proofcheck.codegen import approx_targets, regen
from lora_proofcheck.derivations import exact, lowrank, lowrank_proofs
from lora_proofcheck.derivations.polynomial import exp_polynomial
from lora_proofcheck.exact import weight_gradients
from lora_proofcheck.kernels import _generated_exact as gen_exact
from lora_proofcheck.kernels import _generated_lowrank as gen
from lora_proofcheck.kernels import _ops
from lora_proofcheck.kernels.features import feature_rank
from lora_proofcheck.lowrank import lowrank_weight_gradients, problem_features

SUBSETS = ("Q", "K", "V", "QK", "QV", "KV", "QKV")
EPS64 = np.finfo(np.float64).eps


def host(a):
    return np.asarray(_xp.to_numpy(a), dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# proofs


def test_all_lowrank_proofs_hold():
    proofs = lowrank_proofs.all_lowrank_proofs()
    assert len(proofs) == 6
    assert all(p.holds for p in proofs), [p.name for p in proofs if not p.holds]


def test_papers_column_scaled_p2_is_refuted():
    """p~2 = F~ diag(r~) (the paper's V4 = diag(r~) V1, erratum E2) must make the proof fail."""
    wrong = lowrank.build("columns")
    assert not lowrank_proofs.prove_chain_exact_features(L=3, derivation=wrong).holds


def test_unknown_p2_variant():
    with pytest.raises(ValueError, match="p2"):
        lowrank.build("diagonal")


# ----------------------------------------------------------------------------------------------
# runtime ops


@st.composite
def face_split_operands(draw):
    lead = draw(st.sampled_from([(), (1,), (3,)]))
    L, k_a, k_b, e = (draw(st.integers(1, n)) for n in (9, 6, 6, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return (rng.standard_normal(lead + (L, k_a)), rng.standard_normal(lead + (L, k_b)),
            rng.standard_normal(lead + (k_a * k_b, e)), rng.standard_normal(lead + (L, e)))


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(face_split_operands())
def test_face_split_ops_match_the_explicit_product(xp, ops):
    A, B, M, N = ops
    explicit = np.einsum("...ia,...ib->...iab", A, B).reshape(A.shape[:-1] + (-1,))
    assert np.array_equal(host(_ops.face_split(*(xp.asarray(a) for a in (A, B)))), explicit)
    got = host(_ops.face_split_matmul(xp.asarray(A), xp.asarray(B), xp.asarray(M)))
    got_t = host(_ops.face_split_t_matmul(xp.asarray(A), xp.asarray(B), xp.asarray(N)))
    want, want_t = explicit @ M, np.swapaxes(explicit, -1, -2) @ N
    scale = ((np.abs(explicit) @ np.abs(M)).max(initial=0),
             (np.abs(explicit).swapaxes(-1, -2) @ np.abs(N)).max(initial=0))
    n = max(A.shape[-1] * B.shape[-1], A.shape[-2])
    assert np.max(np.abs(got - want), initial=0) <= 4 * n * EPS64 * scale[0]
    assert np.max(np.abs(got_t - want_t), initial=0) <= 4 * n * EPS64 * scale[1]


@pytest.mark.parametrize("k_a, k_b", [(3, 2), (2, 3), (2, 2)])
def test_face_split_ops_exact_on_symbols(k_a, k_b):
    """Index bookkeeping proved exactly: the ops on object arrays of SymPy symbols (both routes)."""
    L, e = 3, 2
    def sym(name, rows, cols):
        entries = [[sp.Symbol(f"{name}{i}_{j}") for j in range(cols)] for i in range(rows)]
        return np.array(entries, dtype=object)

    A, B, M, N = sym("a", L, k_a), sym("b", L, k_b), sym("m", k_a * k_b, e), sym("n", L, e)
    F = sp.Matrix(L, k_a * k_b, lambda i, j: A[i, j // k_b] * B[i, j % k_b])
    diff = sp.Matrix(_ops.face_split_matmul(A, B, M).tolist()) - F * sp.Matrix(M.tolist())
    diff_t = sp.Matrix(_ops.face_split_t_matmul(A, B, N).tolist()) - F.T * sp.Matrix(N.tolist())
    assert all(sp.expand(x) == 0 for x in [*diff, *diff_t])


# ----------------------------------------------------------------------------------------------
# generated kernels


def test_generated_module_is_current_and_never_materialises():
    path = regen.KERNELS / "_generated_lowrank.py"
    assert approx_targets.targets(regen.KERNELS) == {path: path.read_text(encoding="utf-8")}
    text = path.read_text()
    assert f"derivation lowrank sha256: {lowrank.build().digest()}" in text
    body = text.split('"""', 2)[2]
    # a bare face split (L x k d) or diag(r) (L x L) would mean CSE hoisted an operator out of its product
    assert "face_split(" not in body and "diagflat" not in body and "xp.eye" not in body
    for mods in SUBSETS:
        assert f"def lowrank_gradients_{mods}(U1, U2, X_q, X_kv, W_Q, W_K, W_V, Y, beta):" in text


def test_printer_prints_face_split_products_as_ops():
    from lora_proofcheck.codegen.printer import XPPrinter
    from lora_proofcheck.derivations.nodes import FaceSplit

    A, B = sp.MatrixSymbol("A", 5, 3), sp.MatrixSymbol("B", 5, 2)
    M, N = sp.MatrixSymbol("M", 6, 4), sp.MatrixSymbol("N", 5, 4)
    p = XPPrinter()
    assert p.doprint(FaceSplit(A, B) * M) == "face_split_matmul(A, B, M)"
    assert p.doprint(FaceSplit(A, B).T * N) == "face_split_t_matmul(A, B, N)"


def exact_features(problem, xp):
    """U1 = exp(S) (dense, unshifted: logits are bounded), U2 = I: U1 U2^T = exp(S) exactly."""
    W = {m: host(w) for m, w in problem.weights().items()}
    X, Xkv = host(problem.X3), host(problem.Xkv3)
    S = problem.beta * (X @ W["Q"]) @ np.swapaxes(Xkv @ W["K"], -1, -2)
    U2 = np.broadcast_to(np.eye(problem.L_kv), (problem.N, problem.L_kv, problem.L_kv))
    return _xp.from_numpy(np.exp(S), xp), _xp.from_numpy(np.ascontiguousarray(U2), xp)


def kernel_args(problem):
    W = problem.weights()
    return (problem.X3, problem.Xkv3, W["Q"], W["K"], W["V"], problem.Y3, problem.beta)


@st.composite
def small_problems(draw, xp=None):
    cross = draw(st.booleans())
    return LoRAProblem.random(
        draw(st.integers(1, 12)), draw(st.integers(1, 5)), draw(st.integers(1, 2)), adapt="QKV",
        N=draw(st.integers(1, 3)), cross=cross, L_kv=draw(st.integers(1, 12)) if cross else None,
        logit_bound=draw(st.sampled_from([0.1, 1.0, 4.0])), seed=draw(st.integers(0, 2**31)), xp=xp,
    )


def rounding_scales(problem) -> dict:
    """Entrywise sums of |terms| of each output (the exact formulas on absolute values): two
    float64 evaluations of one quantity differ by at most 2 gamma_n times this (Higham), whatever
    their summation order; the scale stays honest where terms cancel (dW_K = 0 when L_kv = 1)."""
    e = {k: host(v) for k, v in gen_exact.exact_terms(*kernel_args(problem)).items()}
    X, Xkv, Y = (np.abs(host(a)) for a in (problem.X3, problem.Xkv3, problem.Y3))
    F, C1, C2, C3 = (np.abs(e[k]) for k in ("F", "C1", "C2", "C3"))
    T = lambda a: np.swapaxes(a, -1, -2)  # noqa: E731
    c = F @ C3 + Y
    FG = F * (c @ T(C3))
    P = FG + FG.sum(-1, keepdims=True) * F
    return {"loss": 0.5 * np.sum(c * c, axis=(-2, -1)), "dW_Q": problem.beta * T(X) @ P @ C2,
            "dW_K": problem.beta * T(Xkv) @ T(P) @ C1, "dW_V": T(Xkv) @ T(F) @ c}


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_exact_features_reproduce_the_exact_kernels(xp, data):
    """Every module subset, batched, self and cross attention, numpy and array_api_strict."""
    problem = data.draw(small_problems(xp=xp))
    mods = data.draw(st.sampled_from(SUBSETS))
    U1, U2 = exact_features(problem, xp)
    got = getattr(gen, f"lowrank_gradients_{mods}")(U1, U2, *kernel_args(problem))
    want = getattr(gen_exact, f"exact_gradients_{mods}")(*kernel_args(problem))
    assert set(got) == set(want)
    scales = rounding_scales(problem)
    n = problem.L + problem.L_kv * (problem.d + 1) + problem.d + 8  # longest chain of rounded sums
    gamma = n * EPS64 / (1 - n * EPS64)
    for key in want:
        w = host(want[key])
        assert host(got[key]).shape == w.shape
        err = np.abs(host(got[key]) - w)
        assert np.all(err <= 2 * gamma * scales[key]), (key, np.max(err / np.maximum(scales[key], 1e-300)))


def test_terms_kernel_matches_exact_terms(xp):
    problem = LoRAProblem.random(11, 3, 2, adapt="QKV", N=2, cross=True, L_kv=7, logit_bound=2.0, seed=8,
                                 xp=xp)
    U1, U2 = exact_features(problem, xp)
    t = {k: host(v) for k, v in gen.lowrank_terms(U1, U2, *kernel_args(problem)).items()}
    e = {k: host(v) for k, v in gen_exact.exact_terms(*kernel_args(problem)).items()}
    assert set(t) == set(lowrank.TERMS)
    pairs = {"U1n": e["F"], "O": e["F"] @ e["C3"], "c": e["c"], "r": e["r"], "loss": e["loss"],
             "pC2": e["p"] @ e["C2"], "pTC1": np.swapaxes(e["p"], -1, -2) @ e["C1"],
             "FTc": np.swapaxes(e["F"], -1, -2) @ e["c"], "C1": e["C1"], "C2": e["C2"], "C3": e["C3"]}
    for key, want in pairs.items():
        assert np.max(np.abs(t[key] - want)) <= 1e-13 * max(1.0, np.max(np.abs(want))), key
    # alpha~ is the unshifted row sum of exp(S); the exact kernel's is shifted by the row max
    S = e["S"]
    assert np.allclose(t["alpha"][..., 0], np.exp(S).sum(-1), rtol=1e-14, atol=0)


def test_weight_gradients_batch_mean_and_exact_features():
    problem = LoRAProblem.random(13, 4, 2, adapt="QKV", N=3, cross=True, L_kv=9, logit_bound=3.0, seed=2)
    U1, U2 = exact_features(problem, problem.xp)
    loss, dW = lowrank_weight_gradients(problem, None, "VQK", features=(U1, U2))
    loss_e, dW_e = weight_gradients(problem, "QKV")
    assert set(dW) == {"Q", "K", "V"} and getattr(loss, "ndim", None) == 0
    assert abs(float(loss) - float(loss_e)) <= 1e-13 * max(1.0, abs(float(loss_e)))
    for m in "QKV":
        assert np.max(np.abs(dW[m] - dW_e[m])) <= 1e-13 * max(1.0, np.max(np.abs(dW_e[m])))


def test_unbatched_problem_accepts_2d_features():
    problem = LoRAProblem.random(10, 3, 1, adapt="QV", logit_bound=1.0, seed=4)
    U1, U2 = exact_features(problem, problem.xp)
    a = lowrank_weight_gradients(problem, None, "QV", features=(U1[0], U2[0]))
    b = lowrank_weight_gradients(problem, None, "QV", features=(U1, U2))
    assert all(np.array_equal(a[1][m], b[1][m]) for m in "QV") and float(a[0]) == float(b[0])


def test_error_decreases_with_degree_to_rounding():
    """Polynomial features: the gradient error vs the exact path falls with the degree g (the
    certified delta falls) until it reaches float64 rounding."""
    R = 1.0
    problem = LoRAProblem.random(200, 4, 2, adapt="QKV", N=2, cross=True, L_kv=150, logit_bound=R, seed=11)
    _, dW_e = weight_gradients(problem, "QKV")
    scale = max(np.max(np.abs(dW_e[m])) for m in "QKV")
    errors, deltas = [], []
    for g in (1, 2, 4, 6, 8, 10, 13):
        poly = exp_polynomial(R, degree=g)
        _, dW = lowrank_weight_gradients(problem, poly, "QKV")
        errors.append(max(np.max(np.abs(dW[m] - dW_e[m])) for m in "QKV") / scale)
        deltas.append(poly.rel_error)
    assert all(b < a for a, b in zip(errors[:-1], errors[1:-1])), errors  # strictly falling
    assert errors[0] > 1e-3 and errors[-1] < 1e-12, errors
    # above rounding the relative gradient error tracks delta (a sanity band; observed err/delta <= 0.7)
    assert all(err < 10 * dl for err, dl in zip(errors[:-1], deltas[:-1])), (errors, deltas)


def test_float32_stays_float32(xp):
    problem = LoRAProblem.random(40, 4, 2, adapt="QKV", N=2, logit_bound=1.0, seed=3, dtype="float32", xp=xp)
    poly = exp_polynomial(1.0, degree=4)
    loss, dW = lowrank_weight_gradients(problem, poly, "QKV")
    assert loss.dtype == xp.float32 and all(v.dtype == xp.float32 for v in dW.values())
    U1, U2 = problem_features(problem, poly)
    assert all(v.dtype == xp.float32 for v in gen.lowrank_terms(U1, U2, *kernel_args(problem)).values())
    ref = LoRAProblem.random(40, 4, 2, adapt="QKV", N=2, logit_bound=1.0, seed=3)
    _, dW64 = lowrank_weight_gradients(ref, poly, "QKV")
    for m in "QKV":  # same features in float64: agreement to float32 rounding
        assert np.max(np.abs(host(dW[m]) - dW64[m])) <= 1e-4 * np.max(np.abs(dW64[m]))


# ----------------------------------------------------------------------------------------------
# memory and costs


def test_never_allocates_an_L_by_L_array():
    L, d, g = 8192, 4, 2
    problem = LoRAProblem.random(L, d, 2, adapt="QKV", logit_bound=1.0, seed=0)
    poly = exp_polynomial(1.0, degree=g)
    U1, U2 = problem_features(problem, poly)
    args = kernel_args(problem)
    tracemalloc.start()
    try:
        gen.lowrank_gradients_QKV(U1, U2, *args)
        _, kernel_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        lowrank_weight_gradients(problem, poly, "QKV")
        _, total_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    k = feature_rank(d, g)
    predicted = costs.lowrank_bytes(L, L, d, k, "QKV", inputs=False)
    assert 0.8 * predicted <= kernel_peak <= 1.25 * predicted, (kernel_peak, predicted)  # the model is tight
    assert total_peak < L * L * 8 / 50, total_peak  # features included


def test_flop_formulas_have_the_expected_leading_terms():
    L, L_kv, d, k = exact.L, exact.L_kv, exact.d, lowrank.k
    outs = ("loss", "dW_Q", "dW_K", "dW_V")
    fe = costs.flops_formula(exact.build(), outs)
    # six L x L_kv x d products (S, O, G, pC2, pTC1, FTc) and nine elementwise L x L_kv passes
    assert fe.coeff(L * L_kv * d) == 12 and fe.coeff(L * L_kv).subs(d, 0) == 9
    fl = costs.flops_formula(lowrank.build(), outs).subs({sp.Max(d, k): k, sp.Min(d, k): d})
    fl = sp.expand(fl)
    assert fl.coeff(L * k * d**2) == 4 and fl.coeff(L_kv * k * d**2) == 4  # the four face-split GEMMs
    assert sp.Poly(fl, L, L_kv).total_degree() == 1  # linear in the sequence lengths
    assert sp.Poly(fe, L, L_kv).total_degree() == 2


def test_flop_formula_matches_a_hand_count():
    """lowrank_gradients_V, step by step: C3 2 L'd^2, s L'k, alpha 2Lk, U1n Lk, U2^T C3 2kL'd,
    O 2Lkd, c Ld, loss 2Ld + 1, U1n^T c 2kLd, U2 (.) 2L'kd, X'^T (.) 2dL'd."""
    L, L_kv, d, k = exact.L, exact.L_kv, exact.d, lowrank.k
    hand = (2 * L_kv * d**2 + L_kv * k + 2 * L * k + L * k + 2 * k * L_kv * d + 2 * L * k * d + L * d
            + 2 * L * d + 1 + 2 * k * L * d + 2 * L_kv * k * d + 2 * d * L_kv * d)
    assert sp.expand(costs.flops_formula(lowrank.build(), ("loss", "dW_V")) - hand) == 0


def test_cost_functions_evaluate_the_formulas():
    assert costs.exact_flops(64, 48, 4, "QK", N=3) == 3 * costs.exact_flops(64, 48, 4, "KQ")
    f = costs.lowrank_flops
    # at L = 4096, d = 8 the chain is cheaper than exact at degree 3 (k = 165), dearer at 5 (k = 1287)
    exact_4096 = costs.exact_flops(4096, 4096, 8, "QKV")
    assert f(4096, 4096, 8, 165, "QKV") < exact_4096 < f(4096, 4096, 8, 1287, "QKV")
    steps = [f(L, 500, 8, 45, "QKV") for L in (1000, 2000, 3000)]
    assert steps[2] - steps[1] == steps[1] - steps[0]  # linear in L
    assert costs.lowrank_bytes(8192, 8192, 8, 165, "QKV") < costs.exact_bytes(8192, 8192, 8, "QKV") / 50
    b = costs.lowrank_bytes
    assert 2 * b(100, 100, 4, 15, "Q", itemsize=4) == b(100, 100, 4, 15, "Q")
    assert costs.feature_flops(10, 10, 2, 2) == 2 * 20 * 4 + 20 + 20 * 11


@pytest.mark.parametrize("call, exc, word", [
    (lambda: costs.lowrank_flops(0, 4, 4, 4, "Q"), InvalidInputError, "L"),
    (lambda: costs.lowrank_flops(4, 4, 4, 2.5, "Q"), InvalidTypeError, "k"),
    (lambda: costs.exact_flops(4, 4, 4, "QX"), InvalidInputError, "modules"),
    (lambda: costs.exact_flops(4, 4, 4, ["Q"]), InvalidTypeError, "modules"),
    (lambda: costs.lowrank_bytes(4, 4, 4, 4, "Q", N=True), InvalidTypeError, "N"),
])
def test_cost_input_validation(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


@pytest.fixture(scope="module")
def small():
    return LoRAProblem.random(6, 3, 1, adapt="QV", N=2, logit_bound=1.0, seed=1)


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(poly="taylor", modules="QV"), InvalidTypeError, "poly"),
    (dict(poly=None, modules="QV"), InvalidTypeError, "poly"),
    (dict(poly=None, modules="QQ"), InvalidInputError, "modules"),
    (dict(poly=None, modules=""), InvalidInputError, "modules"),
    (dict(poly=None, modules="QV", features=(np.ones((2, 6, 4)),)), InvalidTypeError, "features"),
    (dict(poly=None, modules="QV", features=(np.ones((2, 6, 4)), np.ones((2, 6, 5)))),
     InvalidInputError, "U2"),
    (dict(poly=None, modules="QV", features=(np.ones((2, 5, 4)), np.ones((2, 6, 4)))),
     InvalidInputError, "U1"),
    (dict(poly=None, modules="QV", features=(np.ones((2, 6, 4), np.float32), np.ones((2, 6, 4)))),
     InvalidTypeError, "U1"),
    (dict(poly=None, modules="QV", features=(np.full((2, 6, 4), np.nan), np.ones((2, 6, 4)))),
     InvalidInputError, "U1"),
])
def test_lowrank_input_validation(small, kwargs, exc, word):
    kwargs = dict(kwargs)
    with pytest.raises(exc, match=word):
        lowrank_weight_gradients(small, kwargs.pop("poly"), kwargs.pop("modules"), **kwargs)


def test_problem_type_checked():
    with pytest.raises(InvalidTypeError, match="problem"):
        lowrank_weight_gradients("not a problem", exp_polynomial(1.0, degree=2), "Q")


def test_mixed_libraries_rejected(small):
    import array_api_strict as xps

    U = xps.asarray(np.ones((2, 6, 4)))
    with pytest.raises(InvalidTypeError, match="U1"):
        lowrank_weight_gradients(small, None, "QV", features=(U, U))
    assert math.isfinite(float(lowrank_weight_gradients(small, exp_polynomial(1.0, degree=3), "QV")[0]))
