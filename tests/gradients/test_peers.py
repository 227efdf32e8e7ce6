"""`peer_gradients` in both modes against independent oracles.

Oracles (`lora_proofcheck.testing.peer_oracles`, dense and first principles, never the generated
kernels): central finite differences of the approximate loss and PyTorch autograd through the same
approximate attention (the model mode), the exact gradient formulas at the dense F~ (the plug-in
mode). The proofs themselves are tested in tests/derivations/test_peer_proofs.py, FAVOR+'s
unbiasedness in tests/kernels/test_peer_features.py.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

import lora_proofcheck as lp
from lora_proofcheck import InvalidInputError, InvalidTypeError, LoRAProblem, testing
from lora_proofcheck._lib.xp import to_host64
from lora_proofcheck.certification.polynomial import exp_polynomial
from lora_proofcheck.errors import ProofcheckError
from lora_proofcheck.gradients import peers
from lora_proofcheck.gradients.exact_path import lora_factor_gradients, weight_gradients
from lora_proofcheck.gradients.lowrank_path import lowrank_weight_gradients
from lora_proofcheck.kernels import _generated_exact as gen_exact
from lora_proofcheck.kernels import _generated_peers as gen

EPS64 = np.finfo(np.float64).eps
# float64 rounding allowance for two computations of one function in different orders: sums over
# <= 20 keys and <= 165 features, divided by the row sums alpha~; relative to max |g| (times the row
# sums' condition number where polynomials may cancel, `row_sum_condition`)
ROUNDING = 1e3 * EPS64
SETTINGS = [("taylor", {}), ("taylor", {"degree": 1}), ("taylor", {"degree": 3}), ("chebyshev", {"degree": 3}),
            ("favor+", {"features": 16}), ("support-basis", {"threshold": 0.4})]


def row_sum_condition(problem, kern) -> float:
    """max_i (sum_j |E~|_ij + n) / |alpha~_i|, |E~| = sum_t |a_t| |S_ij|^t for a polynomial (its Horner
    sum's magnitude; exp where the support basis is exact; E~ itself for FAVOR+, a sum of positive
    terms): how much cancellation in the polynomial and in the row sums amplifies every rounding."""
    h = testing.host_inputs(problem)
    W = {m: h["W"][m] + problem.scale * h["B"][m] @ h["A"][m] if m in h["A"] else h["W"][m] for m in "QKV"}
    C1, C2 = h["X"] @ W["Q"], h["X_kv"] @ W["K"]
    E = testing.approx_kernel(kern, C1, C2, problem.beta)
    if kern.poly is None:
        magnitude = np.abs(E)
    else:
        S = np.abs(problem.beta * C1 @ np.swapaxes(C2, -1, -2))
        magnitude = sum(abs(a) * S**t for t, a in enumerate(kern.poly.coefficients_float()))
        if kern.rows is not None:
            big = kern.rows[:, :, None] | kern.cols[:, None, :]
            magnitude = np.where(big, np.exp(problem.beta * C1 @ np.swapaxes(C2, -1, -2)), magnitude)
    n = problem.normalizer_offset
    return float(np.max((magnitude.sum(-1) + n) / np.abs(E.sum(-1) + n)))


def grads(problem, kern, mode, **kw):
    loss, dW = peers.peer_weight_gradients(problem, kern, mode, **kw)
    return float(loss), {k: to_host64(v) for k, v in lora_factor_gradients(problem, dW).items()}


@st.composite
def instances(draw):
    """A small problem and a frozen peer kernel: every method, self or cross attention, N in {1, 2},
    logit bounds from benign to past the polynomials' useful range, and the Softmax_1 offset n in
    {0, 1} for the methods that support it."""
    method, kw = draw(st.sampled_from(SETTINGS))
    L, d = draw(st.integers(3, 20)), draw(st.integers(1, 3))
    cross = draw(st.booleans())
    L_kv = draw(st.integers(3, 20)) if cross else None
    R = draw(st.sampled_from([0.5, 1.3, 4.8]))
    adapt = draw(st.sampled_from(["QKV", "QV", "K"]))
    N = draw(st.integers(1, 2))
    n = 0.0 if method in peers.ROW_SCALED else draw(st.sampled_from([0.0, 1.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    note(f"{method} {kw} L={L} L_kv={L_kv} d={d} R={R} adapt={adapt} N={N} n={n} seed={seed}")
    p = LoRAProblem.random(L, d, 2, adapt=adapt, N=N, cross=cross, L_kv=L_kv, logit_bound=R, seed=seed,
                           normalizer_offset=n)
    if method == "support-basis" and d == 1:  # a smaller threshold makes some rows large at d = 1 too
        kw = {"threshold": 0.3}
    return p, peers.peer_kernel(p, method, **kw, seed=seed % 1000)


# ----------------------------------------------------------------------------------------------
# the model mode: the derivative of the approximate loss


@given(instances())
def test_model_mode_matches_pytorch_autograd(inst):
    problem, kern = inst
    loss, got = grads(problem, kern, "model")
    t_loss, want = testing.torch_approx_model_gradients(problem, kern)
    tol = ROUNDING * row_sum_condition(problem, kern)
    assert abs(loss - t_loss) <= tol * max(1.0, abs(t_loss))
    assert testing.max_abs_error(got, want) <= tol * max(testing.max_abs(want), 1.0)


@given(instances())
def test_model_mode_matches_finite_differences_of_the_approximate_loss(inst):
    """Central differences with step h: truncation c h^2 per entry, estimated by Richardson
    (FD(2h) - FD(h) = 3 c h^2 + rounding), plus the rounding of a difference of two losses,
    <= 10 eps cond |loss| / h per evaluation pair (both steps' share counted; cond the row sums'
    condition number, `row_sum_condition`)."""
    problem, kern = inst
    loss, got = grads(problem, kern, "model")
    step = 1e-6
    want = testing.approx_finite_difference_gradients(problem, kern, step)
    coarse = testing.approx_finite_difference_gradients(problem, kern, 2 * step)
    rounding = 20 * EPS64 * row_sum_condition(problem, kern) * max(1.0, abs(loss)) / step
    for key in want:
        truncation = np.abs(coarse[key] - want[key]) / 3
        assert np.all(np.abs(got[key] - want[key]) <= 2 * truncation + 2 * rounding), key


# ----------------------------------------------------------------------------------------------
# the plug-in mode and where the modes agree


@given(instances())
def test_plugin_mode_is_the_exact_formulas_at_the_dense_approximate_softmax(inst):
    problem, kern = inst
    _, got = grads(problem, kern, "plugin")
    want = testing.dense_plugin_gradients(problem, kern)
    tol = ROUNDING * row_sum_condition(problem, kern)
    assert testing.max_abs_error(got, want) <= tol * max(testing.max_abs(want), 1.0)


@given(instances())
def test_plugin_and_model_agree_on_V_and_on_the_loss(inst):
    problem, kern = inst
    l_plug, g_plug = grads(problem, kern, "plugin")
    l_model, g_model = grads(problem, kern, "model")
    tol = ROUNDING * row_sum_condition(problem, kern)
    assert abs(l_plug - l_model) <= tol * max(1.0, abs(l_plug))
    for key in ("A_V", "B_V"):
        if key in g_plug:
            assert np.max(np.abs(g_plug[key] - g_model[key])) <= tol * max(1.0, np.max(np.abs(g_plug[key])))


@pytest.mark.parametrize("n", [0.0, 1.0])
def test_with_exact_features_both_modes_are_the_exact_gradient(n):
    """E~ = exp(S) exactly (U1 = exp(S), U2 = I): route (b) with P' = P and the plug-in chain equal
    the exact path, and route (a)'s dl~/dU1 ∘ U1 (= dl~/dS, since dE~/dS = E~) is the exact p = dL/dS."""
    problem = LoRAProblem.random(11, 3, 2, adapt="QKV", N=2, cross=True, L_kv=7, logit_bound=2.0, seed=3,
                                 normalizer_offset=n)
    U1, U2 = testing.exact_features(problem, problem.xp)
    W = problem.weights()
    model = gen.model_poly_gradients_QKV(U1, U2, U1, U2, problem.X3, problem.Xkv3, W["Q"], W["K"], W["V"],
                                         problem.Y3, problem.beta, n)
    _, plug = lowrank_weight_gradients(problem, None, "QKV", features=(U1, U2))
    _, exact = weight_gradients(problem, "QKV")
    for m in "QKV":
        scale = max(1.0, np.max(np.abs(exact[m])))
        assert np.max(np.abs(np.sum(model[f"dW_{m}"], axis=0) / problem.N - exact[m])) <= ROUNDING * scale
        assert np.max(np.abs(plug[m] - exact[m])) <= ROUNDING * scale
    a = gen.model_lowrank_gradients(U1, U2, problem.Xkv3, W["V"], problem.Y3, n)
    p = gen_exact.exact_terms(problem.X3, problem.Xkv3, W["Q"], W["K"], W["V"], problem.Y3, problem.beta,
                              problem.log_n)["p"]
    assert np.max(np.abs(a["dU1"] * U1 - p)) <= ROUNDING * max(1.0, np.max(np.abs(p)))


def test_plugin_and_model_differ_on_Q_and_K():
    """They must: the model gradient carries p'(S) where the plug-in carries p(S) (the issue's finding)."""
    p = LoRAProblem.random(64, 4, 2, adapt="QKV", logit_bound=1.3, seed=0)
    kern = peers.peer_kernel(p, "taylor", degree=2)
    _, g_plug = grads(p, kern, "plugin")
    _, g_model = grads(p, kern, "model")
    for key in ("A_Q", "A_K"):
        assert np.max(np.abs(g_plug[key] - g_model[key])) > 1e-3 * np.max(np.abs(g_plug[key]))


@pytest.mark.parametrize("mode", peers.MODES)
def test_both_modes_converge_to_the_exact_gradient_with_the_degree(mode):
    p = LoRAProblem.random(200, 3, 2, adapt="QKV", logit_bound=1.0, seed=8)
    exact = {k: to_host64(v) for k, v in lp.exact_gradients(p).items()}
    errors = [testing.max_abs_error(lp.peer_gradients(p, "taylor", mode=mode, degree=g), exact) for g in (2, 6, 12)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] <= ROUNDING * testing.max_abs(exact)  # exp itself to float64 at degree 12, |S| <= 1


@pytest.mark.parametrize("method, kw", [("taylor", {"degree": 2}), ("chebyshev", {"degree": 4})])
def test_routes_a_and_b_agree(method, kw):
    """Route (a) (low-rank backward + monomial VJP) and route (b) (derivative features): independent."""
    p = LoRAProblem.random(96, 4, 2, adapt="QKV", logit_bound=2.0, seed=5, normalizer_offset=1.0)
    kern = peers.peer_kernel(p, method, **kw)
    la, ga = grads(p, kern, "model", route="vjp")
    lb, gb = grads(p, kern, "model", route="derivative")
    assert abs(la - lb) <= ROUNDING * abs(la)
    assert testing.max_abs_error(ga, gb) <= ROUNDING * testing.max_abs(gb)


def test_chunked_route_a_equals_whole():
    p = LoRAProblem.random(300, 3, 2, adapt="QKV", N=2, logit_bound=1.0, seed=2)
    kern = peers.peer_kernel(p, "taylor", degree=3)
    _, whole = peers._model_monomial(p, kern.poly, "QKV", rows=10**6)
    _, chunked = peers._model_monomial(p, kern.poly, "QKV", rows=64, threads=2)
    for m in "QKV":
        assert np.max(np.abs(whole[m] - chunked[m])) <= ROUNDING * np.max(np.abs(whole[m]))


def test_taylor_plugin_is_the_papers_chain():
    p = LoRAProblem.random(128, 4, 2, adapt="QV", logit_bound=1.0, seed=1)
    kern = peers.peer_kernel(p, "taylor", degree=2)
    _, dW = peers.peer_weight_gradients(p, kern, "plugin")
    _, ref = lowrank_weight_gradients(p, kern.poly, "QV")
    assert all(np.array_equal(dW[m], ref[m]) for m in "QV")


def test_balanced_projections_give_the_logits():
    r = LoRAProblem.random(9, 3, 2, adapt="QK", N=2, cross=True, L_kv=5, logit_bound=2.0, seed=1)
    # a negative temperature: the sign goes to the queries
    p = LoRAProblem(r.X, r.Y, r.W, r.A, r.B, alpha=r.alpha, beta=-0.7, X_kv=r.X_kv)
    q, k = peers.balanced_projections(p)
    W = p.weights()
    S = p.beta * (p.X3 @ W["Q"]) @ np.swapaxes(p.Xkv3 @ W["K"], -1, -2)
    assert np.allclose(q @ np.swapaxes(k, -1, -2), S, rtol=1e-14, atol=1e-14)


def test_support_basis_default_threshold_keeps_at_most_sqrt_L_rows():
    p = LoRAProblem.random(400, 4, 2, adapt="QKV", logit_bound=2.0, seed=9)
    kern = peers.peer_kernel(p, "support-basis")
    assert 0 < kern.rows.sum() <= 20 and 0 < kern.cols.sum() <= 20
    assert kern.rank == 35 + int(kern.rows.sum() + kern.cols.sum())


def test_favor_model_mode_drops_the_stabilisers_and_autograd_agrees():
    """Autograd differentiates through Performer's amax shifts; our model route holds them fixed
    (their gradient is n r~/alpha~ = 0 for softmax, proved): both agree to rounding."""
    p = LoRAProblem.random(30, 3, 2, adapt="QKV", logit_bound=3.0, seed=11)
    kern = peers.peer_kernel(p, "favor+", features=24, seed=3)
    _, got = grads(p, kern, "model")
    _, want = testing.torch_approx_model_gradients(p, kern)
    assert testing.max_abs_error(got, want) <= ROUNDING * testing.max_abs(want)


# ----------------------------------------------------------------------------------------------
# types, namespaces, memory, errors


@pytest.mark.parametrize("method, kw", [("taylor", {}), ("favor+", {"features": 16}), ("support-basis", {})])
def test_float32_stays_float32(method, kw):
    p = LoRAProblem.random(64, 4, 2, adapt="QKV", logit_bound=1.0, seed=0, dtype="float32")
    for mode in peers.MODES:
        g = lp.peer_gradients(p, method, mode=mode, **kw)
        assert all(v.dtype == np.float32 for v in g.values())


@pytest.mark.parametrize("method", ["taylor", "chebyshev", "favor+"])
def test_array_api_strict(method):
    xps = pytest.importorskip("array_api_strict")
    p = LoRAProblem.random(32, 3, 2, adapt="QKV", logit_bound=1.0, seed=0)
    q = LoRAProblem.random(32, 3, 2, adapt="QKV", logit_bound=1.0, seed=0, xp=xps)
    kw = {"features": 8} if method == "favor+" else {}
    for mode in peers.MODES:
        a, b = lp.peer_gradients(p, method, mode=mode, **kw), lp.peer_gradients(q, method, mode=mode, **kw)
        assert testing.max_abs_error(b, {k: to_host64(v) for k, v in a.items()}) <= ROUNDING * testing.max_abs(a)


def test_model_mode_never_allocates_an_L_by_L_array(monkeypatch):
    # the chunked passes first malloc one untouched 24 MiB ballast (`_lib.blocks.recycle_block_memory`:
    # it raises glibc's trim threshold, never paged in); tracemalloc would count it as the peak
    from lora_proofcheck.gradients import lowrank_path, peers

    for mod in (lowrank_path, peers):
        monkeypatch.setattr(mod, "recycle_block_memory", lambda xp: None)
    L = 8192
    p = LoRAProblem.random(L, 4, 2, adapt="QKV", logit_bound=1.0, seed=0)
    tracemalloc.start()
    try:
        lp.peer_gradients(p, "taylor", mode="model", degree=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < L * L * 8 / 50, peak


@pytest.mark.parametrize("mode", peers.MODES)
def test_non_finite_results_are_refused_not_returned(mode):
    """Taylor-1 at logits S = -1 everywhere: E~ = 1 + S = 0, every row sum vanishes; both modes refuse
    (ProofcheckError), never return inf / NaN."""
    X = np.ones((3, 1))
    W = {"Q": np.ones((1, 1)), "K": -np.ones((1, 1)), "V": np.ones((1, 1))}
    p = LoRAProblem(X, np.zeros((3, 1)), W, {"V": np.zeros((1, 1))}, {"V": np.ones((1, 1))}, alpha=1.0, beta=1.0)
    with pytest.raises(ProofcheckError, match="non-finite"):
        lp.peer_gradients(p, "taylor", degree=1, mode=mode)


@pytest.mark.parametrize("kwargs, exc, word", [
    ({"method": "performer"}, InvalidInputError, "method"),
    ({"method": 3}, InvalidInputError, "method"),
    ({"method": "taylor", "mode": "autograd"}, InvalidInputError, "mode"),
    ({"method": "taylor", "features": 8}, InvalidInputError, "features"),
    ({"method": "favor+", "degree": 2}, InvalidInputError, "degree"),
    ({"method": "favor+", "features": 0}, InvalidInputError, "features"),
    ({"method": "favor+", "features": 2.5}, InvalidTypeError, "features"),
    ({"method": "taylor", "degree": -1}, InvalidInputError, "degree"),
    ({"method": "taylor", "degree": 1.5}, InvalidTypeError, "degree"),
    ({"method": "taylor", "degree": True}, InvalidTypeError, "degree"),
    ({"method": "taylor", "threshold": 0.5}, InvalidInputError, "threshold"),
    ({"method": "support-basis", "threshold": -1.0}, InvalidInputError, "threshold"),
    ({"method": "support-basis", "threshold": float("nan")}, InvalidInputError, "threshold"),
    ({"method": "favor+", "seed": -1}, InvalidInputError, "seed"),
    ({"method": "favor+", "seed": "0"}, InvalidTypeError, "seed"),
    ({"method": "taylor", "threads": 0}, InvalidInputError, "threads"),
])
def test_bad_arguments_name_themselves(kwargs, exc, word):
    p = LoRAProblem.random(8, 2, 1, adapt="QV", logit_bound=1.0, seed=0)
    method = kwargs.pop("method")
    with pytest.raises(exc, match=word):
        lp.peer_gradients(p, method, **kwargs)


def test_problem_type_checked():
    with pytest.raises(InvalidTypeError, match="problem"):
        lp.peer_gradients("not a problem", "taylor")


@pytest.mark.parametrize("method", peers.ROW_SCALED)
def test_softmax_1_refused_where_the_derivation_does_not_extend(method):
    p = LoRAProblem.random(8, 2, 1, adapt="QV", logit_bound=1.0, seed=0, normalizer_offset=1.0)
    for mode in peers.MODES:
        with pytest.raises(InvalidInputError, match="normalizer_offset"):
            lp.peer_gradients(p, method, mode=mode)


def test_chebyshev_refuses_radii_it_cannot_interpolate_on():
    p = LoRAProblem.random(8, 2, 1, adapt="QV", logit_bound=300.0, seed=0)
    with pytest.raises(InvalidInputError, match="chebyshev"):
        lp.peer_gradients(p, "chebyshev")
    assert peers.peer_kernel(p, "taylor").poly.rel_error == float("inf")  # Taylor runs, uncertified


def test_routes_checked():
    p = LoRAProblem.random(8, 2, 1, adapt="QV", logit_bound=1.0, seed=0)
    with pytest.raises(InvalidInputError, match="entrywise"):
        peers.peer_weight_gradients(p, peers.peer_kernel(p, "favor+", features=4), "model", route="derivative")
    with pytest.raises(InvalidInputError, match="route"):
        peers.peer_weight_gradients(p, peers.peer_kernel(p, "support-basis"), "model", route="vjp")
    with pytest.raises(InvalidInputError, match="route"):
        peers.peer_weight_gradients(p, peers.peer_kernel(p, "taylor"), "model", route="autograd")
    with pytest.raises(InvalidTypeError, match="kern"):
        peers.peer_weight_gradients(p, exp_polynomial(1.0, degree=2), "model")
