"""The generated exact path against independent oracles.

Oracles: exact SymPy (brute-force derivatives lambdified), central finite differences of a
plain SciPy forward pass, and PyTorch autograd. None of them uses the generated kernels.
"""

import os

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import softmax

from lora_proofcheck import InvalidInputError, InvalidTypeError, LoRAProblem, exact_gradients, loss, testing
from lora_proofcheck._lib.blocks import EXACT_BLOCKS, blas_threads, worker_threads
from lora_proofcheck._lib.xp import to_numpy
from lora_proofcheck.derivations.decomposition_proofs import Exp
from lora_proofcheck.derivations.interpreter import symbol_matrix
from lora_proofcheck.gradients.exact_path import blocked_rows, choose_block_rows
from lora_proofcheck.kernels import _generated_exact as gen
from lora_proofcheck.testing.oracles import attention_weights

if os.environ.get("CI"):
    import torch  # CI installs the oracle extra: a missing torch must fail, not skip
else:
    torch = pytest.importorskip("torch")


@st.composite
def problems(draw, max_L=24):
    cross = draw(st.booleans())
    L = draw(st.integers(1, max_L))
    return LoRAProblem.random(
        L, draw(st.integers(1, 6)), draw(st.integers(1, 3)),
        adapt=draw(st.sampled_from(["Q", "K", "V", "QV", "QK", "KV", "QKV"])),
        N=draw(st.integers(1, 3)), cross=cross, L_kv=draw(st.integers(1, max_L)) if cross else None,
        logit_bound=draw(st.sampled_from([None, 0.1, 2.0, 20.0])), seed=draw(st.integers(0, 2**31)),
        normalizer_offset=draw(st.sampled_from([0.0, 1.0, 7.5])),  # softmax and Softmax_1
    )


@settings(deadline=None)
@given(problems())
def test_against_finite_differences(p):
    fd = testing.finite_difference_gradients(p, step=1e-6)
    got = exact_gradients(p)
    assert set(got) == {f"{k}_{m}" for k in "AB" for m in p.adapted}
    scale = testing.max_abs(fd) + 1.0
    # central differences: truncation h^2 f''' and cancellation eps |L| / h
    tol = 1e-6 * scale + 1e-10 * (abs(float(loss(p))) + 1) / 1e-6
    assert testing.max_abs_error(got, fd) <= tol


def term_scale(p) -> float:
    """Bound on the sum of |terms| of any gradient entry (what rounding error scales with).

    |dW_mu|_ab <= beta L max|X| (2 max_i ||c_i||_1 max|C3|) max|C2 or C1| (and the V analogue);
    dA, dB add a factor (alpha/r) d max(|A|, |B|)."""
    h = testing.host_inputs(p)
    W = {m: h["W"][m] + p.scale * h["B"][m] @ h["A"][m] if m in h["A"] else h["W"][m] for m in "QKV"}
    C1, C2, C3 = h["X"] @ W["Q"], h["X_kv"] @ W["K"], h["X_kv"] @ W["V"]
    S = p.beta * C1 @ np.swapaxes(C2, -1, -2)
    c = attention_weights(S, p.normalizer_offset) @ C3 - h["Y"]
    m = lambda a: float(np.max(np.abs(a)))  # noqa: E731
    c1 = float(np.max(np.sum(np.abs(c), axis=-1)))
    dW = max(p.beta * 2 * c1 * m(C3) * max(p.L * m(h["X"]) * m(C2), p.L_kv * m(h["X_kv"]) * m(C1)),
             p.L * m(h["X_kv"]) * m(c))
    ab = max(max(m(h["A"][k]), m(h["B"][k])) for k in p.adapted)
    return p.scale * p.d * ab * dW


@settings(deadline=None)
@given(problems(max_L=64))
def test_against_torch_autograd(p):
    torch_loss, tg = testing.torch_gradients(p)
    got = exact_gradients(p)
    assert float(loss(p)) == pytest.approx(torch_loss, rel=1e-12, abs=1e-300)
    # relative 1e-12 of the operand magnitude, not of a possibly cancelled result
    assert testing.max_abs_error(got, tg) <= 1e-12 * (testing.max_abs(tg) + term_scale(p))
    for key, value in got.items():
        assert value.shape == tg[key].shape and value.dtype == np.float64


def test_shapes_follow_the_corrected_lemma():
    """Erratum E3: dL/dA is r x d and dL/dB is d x r (not the paper's d x r / r x d)."""
    p = LoRAProblem.random(6, 5, 2, adapt="QKV")
    g = exact_gradients(p)
    assert all(g[f"A_{m}"].shape == (2, 5) and g[f"B_{m}"].shape == (5, 2) for m in "QKV")


@pytest.mark.parametrize("n", [0.0, 1.0, 7.5], ids=["softmax", "softmax_1", "offset_7.5"])
def test_terms_against_exact_sympy(n):
    """Each generated term (u, alpha, F, c, G, p1, p2, p) against exact SymPy on a 3 x 3 head, for
    softmax and Softmax_1 (e^S_ij / (n + sum_l e^S_il))."""
    rng = np.random.default_rng(1)
    L, Lk, d = 3, 3, 2
    vals = {k: rng.standard_normal(s) for k, s in
            dict(X_q=(L, d), X_kv=(Lk, d), W_Q=(d, d), W_K=(d, d), W_V=(d, d), Y=(L, d)).items()}
    beta = 0.7
    t = gen.exact_terms(**vals, beta=beta, log_n=np.log(n) if n else -np.inf)
    S = beta * vals["X_q"] @ vals["W_Q"] @ vals["W_K"].T @ vals["X_kv"].T
    F = np.exp(S) / (np.exp(S).sum(axis=1, keepdims=True) + n)
    if n == 0:
        np.testing.assert_allclose(F, softmax(S, axis=-1), rtol=1e-14)
    shift = np.maximum(S.max(axis=1, keepdims=True), np.log(n) if n else -np.inf)
    np.testing.assert_allclose(t["S"], S, rtol=1e-14)
    np.testing.assert_allclose(t["u"] * np.exp(shift), np.exp(S), rtol=1e-14)
    np.testing.assert_allclose(t["alpha"] * np.exp(shift), np.exp(S).sum(axis=1, keepdims=True) + n, rtol=1e-14)
    np.testing.assert_allclose(t["F"], F, rtol=1e-14)
    C3 = vals["X_kv"] @ vals["W_V"]
    # brute-force SymPy gradients of the loss in free F and in free S, lambdified
    Fs, Ss = symbol_matrix("f", L, Lk), symbol_matrix("s", L, Lk)
    lossF = sum(x**2 for x in (Fs * sp.Matrix(C3) - sp.Matrix(vals["Y"]))) / 2
    U = Ss.applyfunc(sp.exp)
    lossS = sum(x**2 for x in (sp.Matrix(L, Lk, lambda i, j: U[i, j] / (sum(U[i, :]) + sp.Float(n)))
                               * sp.Matrix(C3) - sp.Matrix(vals["Y"]))) / 2
    G = sp.lambdify([list(Fs)], sp.Matrix(L, Lk, lambda i, j: sp.diff(lossF, Fs[i, j])))(list(F.ravel()))
    P = sp.lambdify([list(Ss)], sp.Matrix(L, Lk, lambda i, j: sp.diff(lossS, Ss[i, j])))(list(S.ravel()))
    np.testing.assert_allclose(t["c"], F @ C3 - vals["Y"], rtol=1e-13)
    np.testing.assert_allclose(t["G"], G, rtol=1e-12)
    np.testing.assert_allclose(t["p"], P, rtol=1e-10, atol=1e-14)
    # p1, p2 against the paper's per-row form p_j = diag(f_j) q_j - f_j (f_j^T q_j), q_j = G[j]
    for j in range(L):
        np.testing.assert_allclose(t["p1"][j], F[j] * G[j], rtol=1e-12)
        np.testing.assert_allclose(t["p2"][j], F[j] * (F[j] @ G[j]), rtol=1e-12)
    assert isinstance(Exp(sp.Symbol("x")).diff(sp.Symbol("x")), Exp)


def test_array_namespaces_agree(xp):
    p_np = LoRAProblem.random(17, 4, 2, adapt="QKV", N=2, cross=True, L_kv=11, seed=7)
    p_xp = LoRAProblem.random(17, 4, 2, adapt="QKV", N=2, cross=True, L_kv=11, seed=7, xp=xp)
    want, got = exact_gradients(p_np), exact_gradients(p_xp)
    for key in want:
        assert type(got[key]) is type(p_xp.X)  # output stays in the input's namespace
        np.testing.assert_allclose(to_numpy(got[key]), want[key], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("adapt", ["QV", "QKV", "K"])
def test_float32(adapt):
    p32 = LoRAProblem.random(48, 8, 4, adapt=adapt, N=2, dtype="float32", seed=2)
    g32 = exact_gradients(p32)
    _, ref = testing.torch_gradients(p32)  # float64 oracle on the same float32-rounded inputs
    assert all(v.dtype == np.float32 for v in g32.values())
    assert testing.max_abs_error(g32, ref) <= 1e-4 * testing.max_abs(ref)
    assert loss(p32).dtype == np.float32


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_huge_logits_stay_finite(dtype):
    p = LoRAProblem.random(32, 4, 2, adapt="QKV", logit_bound=1e4, seed=3, dtype=dtype)
    g = exact_gradients(p)
    assert all(np.all(np.isfinite(v)) for v in g.values()) and np.isfinite(loss(p))
    if dtype == "float64":
        _, tg = testing.torch_gradients(p)
        assert testing.max_abs_error(g, tg) <= 1e-9 * (testing.max_abs(tg) + 1)


@pytest.mark.parametrize("rows", [1, 5, 16, 39, 40, 1000])
def test_blocked_equals_dense(rows):
    p = LoRAProblem.random(40, 5, 2, adapt="QKV", N=2, cross=True, L_kv=23, seed=8)
    dense, blocked = exact_gradients(p, block_rows=None), exact_gradients(p, block_rows=rows)
    assert testing.max_abs_error(blocked, dense) <= 1e-13 * testing.max_abs(dense)
    assert float(loss(p, block_rows=rows)) == pytest.approx(float(loss(p, block_rows=None)), rel=1e-13)


def test_block_rule():
    small = LoRAProblem.random(64, 4, 1)
    assert choose_block_rows(small) is None and choose_block_rows(small, 8) == 8
    assert choose_block_rows(small, 64) is None
    for bad in (0, -3, 2.5, "big", True):
        with pytest.raises(InvalidInputError, match="block_rows"):
            exact_gradients(small, block_rows=bad)


def test_problem_type_checked():
    with pytest.raises(InvalidTypeError, match="problem must be a LoRAProblem"):
        exact_gradients({"X": 1})


# ----------------------------------------------------------------------------------------------
# row blocks on threads


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threaded_blocks_equal_dense(threads):
    p = LoRAProblem.random(150, 6, 3, adapt="QKV", N=2, cross=True, L_kv=70, seed=11)
    dense = exact_gradients(p, block_rows=None)
    blocked = exact_gradients(p, block_rows=13, threads=threads)
    assert testing.max_abs_error(blocked, dense) <= 1e-13 * testing.max_abs(dense)
    again = exact_gradients(p, block_rows=13, threads=threads)  # fixed summation order
    assert all(np.array_equal(again[k], blocked[k]) for k in blocked)


def test_thread_count_follows_the_blas():
    from threadpoolctl import threadpool_limits

    p = LoRAProblem.random(40, 4, 2, adapt="Q")
    with threadpool_limits(limits=1, user_api="blas"):
        assert blas_threads() == 1 and worker_threads(p.xp) == 1
    assert worker_threads(p.xp, 3) == 3


def test_threads_only_on_numpy(xp):
    p = LoRAProblem.random(40, 4, 2, adapt="Q", xp=xp)
    from array_api_compat import is_numpy_namespace

    assert worker_threads(p.xp, 4) == (4 if is_numpy_namespace(p.xp) else 1)


@pytest.mark.parametrize("bad, error", [(0, InvalidInputError), (2.0, InvalidTypeError),
                                        (True, InvalidTypeError), ("2", InvalidTypeError)])
def test_bad_threads(bad, error):
    p = LoRAProblem.random(40, 4, 2, adapt="Q")
    with pytest.raises(error, match="threads"):
        exact_gradients(p, block_rows=8, threads=bad)


def test_block_rule_bounds_the_working_set():
    for L in (2**10, 2**14, 2**17):
        for dtype, size in (("float64", 8), ("float32", 4)):
            rows = blocked_rows(_Shape(L, dtype))
            assert 1 <= rows <= L
            assert rows * L * size <= max(EXACT_BLOCKS.budget_bytes, EXACT_BLOCKS.min_rows * L * size)
    small = LoRAProblem.random(64, 4, 1)
    assert choose_block_rows(small) is None  # one block would hold it all: dense


class _Shape:
    """Just the sizes `blocked_rows` reads (building a 2^17 instance would cost time, not insight)."""

    def __init__(self, L, dtype_name):
        self.N, self.L, self.L_kv, self.dtype_name = 1, L, L, dtype_name

