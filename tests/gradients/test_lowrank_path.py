"""The low-rank path's runtime: the chunked row passes against the one-call chain, batch means, chunk
sizes and threads, memory (never an L x L array; chunk-sized), float32, the error falling with the
degree, and argument checks."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lora_proofcheck import InvalidInputError, InvalidTypeError, LoRAProblem
from lora_proofcheck._lib.xp import to_host64
from lora_proofcheck.certification.polynomial import exp_polynomial
from lora_proofcheck.codegen.targets import module_subsets
from lora_proofcheck.gradients import costs, lowrank_path
from lora_proofcheck.gradients.exact_path import weight_gradients
from lora_proofcheck.gradients.lowrank_path import lowrank_weight_gradients, problem_features
from lora_proofcheck.kernels import _generated_lowrank as gen
from lora_proofcheck.kernels.features import feature_rank
from lora_proofcheck.testing import exact_features, kernel_inputs
from lora_proofcheck.testing.strategies import small_problems

EPS64 = np.finfo(np.float64).eps

SUBSETS = tuple(module_subsets())


def test_weight_gradients_batch_mean_and_exact_features():
    problem = LoRAProblem.random(13, 4, 2, adapt="QKV", N=3, cross=True, L_kv=9, logit_bound=3.0, seed=2)
    U1, U2 = exact_features(problem, problem.xp)
    loss, dW = lowrank_weight_gradients(problem, None, "VQK", features=(U1, U2))
    loss_e, dW_e = weight_gradients(problem, "QKV")
    assert set(dW) == {"Q", "K", "V"} and getattr(loss, "ndim", None) == 0
    assert abs(float(loss) - float(loss_e)) <= 1e-13 * max(1.0, abs(float(loss_e)))
    for m in "QKV":
        assert np.max(np.abs(dW[m] - dW_e[m])) <= 1e-13 * max(1.0, np.max(np.abs(dW_e[m])))


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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
    U1, U2 = (to_host64(U) for U in features)
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
        a, b = to_host64(dW[m]), to_host64(dW_w[m])
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
    from lora_proofcheck._lib.blocks import MALLOC_THRESHOLD_BYTES

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
    peak -= MALLOC_THRESHOLD_BYTES  # the allocator's untouched ballast (`decomposition._recycle_block_memory`)
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
    assert all(v.dtype == xp.float32 for v in gen.lowrank_terms(U1, U2, *kernel_inputs(problem, "lowrank")).values())
    ref = LoRAProblem.random(40, 4, 2, adapt="QKV", N=2, logit_bound=1.0, seed=3)
    _, dW64 = lowrank_weight_gradients(ref, poly, "QKV")
    for m in "QKV":  # same features in float64: agreement to float32 rounding
        assert np.max(np.abs(to_host64(dW[m]) - dW64[m])) <= 1e-4 * np.max(np.abs(dW64[m]))


def test_never_allocates_an_L_by_L_array(monkeypatch):
    # the chunked passes first malloc one untouched 24 MiB ballast (`_lib.blocks.recycle_block_memory`:
    # it raises glibc's trim threshold, never paged in); tracemalloc would count it as the peak
    monkeypatch.setattr(lowrank_path, "recycle_block_memory", lambda xp: None)
    L, d, g = 8192, 4, 2
    problem = LoRAProblem.random(L, d, 2, adapt="QKV", logit_bound=1.0, seed=0)
    poly = exp_polynomial(1.0, degree=g)
    U1, U2 = problem_features(problem, poly)
    args = kernel_inputs(problem, "lowrank")
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

