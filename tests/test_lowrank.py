"""The fused low-rank kernels: proofs, runtime ops, generated kernels, chunked runtime, costs, memory.

Oracles: exact SymPy identities (`lowrank_proofs`), the explicit face split, and the generated
EXACT kernels (themselves checked against finite differences and PyTorch in test_exact.py), fed
with exact features U1 = exp(S), U2 = I so that the low-rank chain must reproduce them.
"""

from __future__ import annotations

import math
import re
import tracemalloc

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, assume, given, settings
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
    assert len(proofs) == 8
    assert all(p.holds for p in proofs), [p.name for p in proofs if not p.holds]


def test_papers_column_scaled_p2_is_refuted():
    """p~2 = F~ diag(r~) (the paper's V4 = diag(r~) V1, erratum E2) must make the proof fail."""
    wrong = lowrank.build_lemmas("columns")
    assert not lowrank_proofs.prove_chain_exact_features(L=3, derivation=wrong).holds


def test_unknown_variants():
    with pytest.raises(ValueError, match="p2"):
        lowrank.build_lemmas("diagonal")
    for bad in ("", "VQ", "QX", "QQ"):
        with pytest.raises(ValueError, match="modules"):
            lowrank.build(bad)


@pytest.mark.parametrize("mods", ["Q", "V", "QK"])
def test_module_subsets_are_proved_too(mods):
    """Each subset stacks other blocks (other column offsets): proved like the full chain."""
    D = lowrank.build(mods)
    outs = ("loss",) + tuple(lowrank.WEIGHT_GRADIENTS[m] for m in mods)
    assert lowrank_proofs.prove_chain_exact_features(L=2, d=2, derivation=D, outputs=outs).holds


# ----------------------------------------------------------------------------------------------
# runtime ops


@st.composite
def contract_operands(draw):
    lead = draw(st.sampled_from([(), (1,), (3,)]))
    L, k, d, e = (draw(st.integers(1, n)) for n in (9, 6, 4, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return tuple(rng.standard_normal(lead + shape) for shape in ((L, k), (L, d), (k * d, e)))


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(contract_operands())
def test_face_contract_undoes_a_face_split(xp, ops):
    """(U ⊘ c) M = face_contract(c, U M') with M'[a, b e + f] = M[a d + b, f], against the explicit
    face split (einsum)."""
    U, c, M = ops
    explicit = np.einsum("...ia,...ib->...iab", U, c).reshape(U.shape[:-1] + (-1,))
    assert np.array_equal(host(_ops.face_split(xp.asarray(U), xp.asarray(c))), explicit)
    k, d = U.shape[-1], c.shape[-1]
    M2 = M.reshape(M.shape[:-2] + (k, -1))  # rows a d + b -> row a, columns b e + f
    got = host(_ops.face_contract(xp.asarray(c), xp.asarray(U @ M2)))
    want = explicit @ M
    scale = (np.abs(explicit) @ np.abs(M)).max(initial=0)
    assert np.max(np.abs(got - want), initial=0) <= 4 * (k * d) * EPS64 * scale


def test_face_contract_exact_on_symbols():
    """Index bookkeeping proved exactly: the op on object arrays of SymPy symbols vs the node's
    definition as the Interpreter evaluates it."""
    from lora_proofcheck.derivations.explicit import Interpreter, symbol_matrix
    from lora_proofcheck.derivations.nodes import FaceContract

    L, d, e = 3, 2, 3
    c, T = symbol_matrix("c", L, d), symbol_matrix("t", L, d * e)
    got = _ops.face_contract(np.array(c.tolist(), dtype=object), np.array(T.tolist(), dtype=object))
    cs, Ts = sp.MatrixSymbol("c", L, d), sp.MatrixSymbol("T", L, d * e)
    want = Interpreter({"c": c, "T": T}, {})(FaceContract(cs, Ts))
    assert all(sp.expand(x) == 0 for x in sp.Matrix(got.tolist()) - want)
    assert all(want[i, f] == sum(c[i, b] * T[i, b * e + f] for b in range(d)) for i in range(L) for f in range(e))


# ----------------------------------------------------------------------------------------------
# generated kernels


def test_generated_module_is_current_and_never_materialises():
    path = regen.KERNELS / "_generated_lowrank.py"
    assert approx_targets.targets(regen.KERNELS) == {path: path.read_text(encoding="utf-8")}
    text = path.read_text()
    for mods in SUBSETS:
        assert f"derivation lowrank_{mods} sha256: {lowrank.build(mods).digest()}" in text
    body = text.split('"""', 2)[2]
    # diag(r) (L x L) would mean CSE hoisted an operator out of its product; face splits only of
    # the narrow data factors (L x d^2), never of a feature factor (L x k d)
    assert "diagflat" not in body and "xp.eye" not in body
    splits = re.findall(r"face_split\(([^)]*)\)", body)
    assert splits and all(set(a.split(", ")) <= {"C1", "C2", "C3", "c"} for a in splits), splits
    for mods in SUBSETS:
        assert f"def lowrank_gradients_{mods}(U1, U2, X_q, X_kv, W_Q, W_K, W_V, Y, beta):" in text


def test_printer_prints_the_fused_nodes():
    from lora_proofcheck.codegen.printer import XPPrinter
    from lora_proofcheck.derivations.nodes import ColSlice, FaceContract, FaceSplit, HStack

    n, d = sp.symbols("n d", integer=True, positive=True)
    A, B, T = sp.MatrixSymbol("A", n, d), sp.MatrixSymbol("B", n, d), sp.MatrixSymbol("T", n, d * d + 1)
    p = XPPrinter()
    assert p.doprint(FaceSplit(A, B)) == "face_split(A, B)"
    assert p.doprint(HStack(sp.OneMatrix(n, 1), A, FaceSplit(A, B))) == \
        "xp.concat([xp.ones_like(A[..., :1]), A, face_split(A, B)], axis=-1)"
    assert p.doprint(HStack(A)) == "A"
    assert p.doprint(ColSlice(T, 0, 1)) == "T[..., :1]"
    assert p.doprint(ColSlice(T, 1, d**2 + 1)) == "T[..., 1:d**2 + 1]"
    assert p.doprint(FaceContract(A, ColSlice(T, 1, d**2 + 1))) == "face_contract(A, T[..., 1:d**2 + 1])"


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
    pairs = {"O": e["F"] @ e["C3"], "c": e["c"], "r": e["r"], "loss": e["loss"],
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


@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_chunked_passes_equal_the_whole_chain(xp, data):
    """The three row passes over chunks (any chunk size, 1 or 2 threads) add up to the one-call
    kernel on the same features, to rounding: every module subset, batched, self and cross."""
    problem = data.draw(small_problems(xp=xp))
    mods = data.draw(st.sampled_from(SUBSETS))
    rows = data.draw(st.integers(1, 13))
    threads = data.draw(st.sampled_from([1, 2]))
    poly = exp_polynomial(1.0, degree=data.draw(st.integers(0, 4)))
    features = problem_features(problem, poly)
    U1, U2 = (host(U) for U in features)
    alpha = np.sum(U1 @ np.swapaxes(U2, -1, -2), axis=-1)
    assume(np.all(alpha > 0))  # a polynomial used past its radius may lose positivity
    # the row sums' condition number: cancellation in alpha~ amplifies every rounding difference
    cond = np.max(np.sum(np.abs(U1) @ np.abs(np.swapaxes(U2, -1, -2)), axis=-1) / alpha)
    loss, dW = lowrank_weight_gradients(problem, poly, mods, chunk_rows=rows, threads=threads)
    loss_w, dW_w = lowrank_weight_gradients(problem, None, mods, features=features)
    n = problem.L + problem.L_kv + problem.d**2 + 8
    tol = 4 * n * EPS64 * cond
    assert abs(float(loss) - float(loss_w)) <= tol * max(1.0, abs(float(loss_w)))
    for m in mods:  # dW sums L rows that may cancel: relative to max |dW| the rounding can grow with L
        a, b = host(dW[m]), host(dW_w[m])
        assert np.max(np.abs(a - b)) <= tol * max(1.0, np.max(np.abs(b))) * problem.L, m


def test_chunk_count_does_not_change_the_result_much_and_threads_not_at_all():
    problem = LoRAProblem.random(300, 4, 2, adapt="QKV", N=2, cross=True, L_kv=170, logit_bound=1.0, seed=5)
    poly = exp_polynomial(1.0, degree=3)
    one = lowrank_weight_gradients(problem, poly, "QKV", chunk_rows=1000)
    from threadpoolctl import threadpool_limits

    for rows in (1, 37, 64):
        with threadpool_limits(limits=1, user_api="blas"):  # the BLAS's own blocking stays fixed
            a = lowrank_weight_gradients(problem, poly, "QKV", chunk_rows=rows, threads=1)
        b = lowrank_weight_gradients(problem, poly, "QKV", chunk_rows=rows, threads=2)
        assert all(np.array_equal(a[1][m], b[1][m]) for m in "QKV")  # sums added in chunk order
        assert all(np.allclose(a[1][m], one[1][m], rtol=1e-12, atol=1e-12) for m in "QKV")


def test_chunked_path_memory_is_chunk_sized():
    """Peak memory of the chunked call: O(chunk k), far below the whole-array features."""
    from lora_proofcheck.exact import MALLOC_THRESHOLD_BYTES

    L, d, g = 8192, 8, 3
    problem = LoRAProblem.random(L, d, 2, adapt="QKV", logit_bound=1.0, seed=0)
    poly = exp_polynomial(1.0, degree=g)
    k = feature_rank(d, g)
    rows = 256
    lowrank_weight_gradients(problem, poly, "QKV", chunk_rows=rows, threads=1)  # warm caches
    tracemalloc.start()
    try:
        lowrank_weight_gradients(problem, poly, "QKV", chunk_rows=rows, threads=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    peak -= MALLOC_THRESHOLD_BYTES  # the allocator's untouched ballast (`exact._recycle_block_memory`)
    whole_features = 2 * L * k * 8
    chunk = 2 * rows * k * 8 + 4 * rows * (d * d + 2 * d + 1) * 8  # features, Z, T and friends
    data = 2 * L * d * 8  # Q = beta X W_Q and K = X' W_K, computed once for all chunks
    assert peak <= chunk + data, (peak, chunk, data)
    assert peak < whole_features / 4, (peak, whole_features)


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(chunk_rows=0), InvalidInputError, "chunk_rows"),
    (dict(chunk_rows="big"), InvalidInputError, "chunk_rows"),
    (dict(chunk_rows=True), InvalidInputError, "chunk_rows"),
    (dict(threads=0), InvalidInputError, "threads"),
    (dict(threads=1.5), InvalidTypeError, "threads"),
])
def test_chunking_arguments_checked(kwargs, exc, word):
    problem = LoRAProblem.random(20, 3, 1, adapt="QV", logit_bound=1.0, seed=1)
    with pytest.raises(exc, match=word):
        lowrank_weight_gradients(problem, exp_polynomial(1.0, degree=2), "QV", **kwargs)


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
    fl = sp.expand(costs.flops_formula(lowrank.build(), outs))
    # four GEMMs with the features, k x (1 + 2d + d^2) and k x (d^2 + 2d) on each side
    assert fl.coeff(L * k * d**2) == 4 and fl.coeff(L_kv * k * d**2) == 4
    assert fl.coeff(L * k * d) == 8 and fl.coeff(L_kv * k * d) == 8 and fl.coeff(L * k).subs(d, 0) == 2
    assert sp.Poly(fl, L, L_kv).total_degree() == 1  # linear in the sequence lengths
    assert sp.Poly(fe, L, L_kv).total_degree() == 2


def test_flop_formula_matches_a_hand_count():
    """lowrank_gradients_V, step by step: C3 2 L'd^2, Z2 = [1 | C3] 0, Vq = U2^T Z2 2kL'(1 + d),
    T = U1 Vq 2Lk(1 + d), T[:, 1:]/alpha Ld, c Ld, loss 2Ld + 1, Z1 = c/alpha Ld, Vk = U1^T Z1 2kLd,
    Tk = U2 Vk 2L'kd, dW_V = X'^T Tk 2dL'd."""
    L, L_kv, d, k = exact.L, exact.L_kv, exact.d, lowrank.k
    hand = (2 * L_kv * d**2 + 2 * k * L_kv * (1 + d) + 2 * L * k * (1 + d) + L * d + L * d + 2 * L * d + 1
            + L * d + 2 * k * L * d + 2 * L_kv * k * d + 2 * d * L_kv * d)
    assert sp.expand(costs.flops_formula(lowrank.build("V"), ("loss", "dW_V")) - hand) == 0


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
