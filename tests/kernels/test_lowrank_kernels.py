"""The generated low-rank kernels and their runtime ops: face split and contraction, the generated module,
and the fused chain against the generated EXACT kernels (themselves checked against finite differences and
PyTorch in gradients/test_exact_path.py), fed with exact features U1 = exp(S), U2 = I."""

from __future__ import annotations

import re

import numpy as np
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lora_proofcheck import LoRAProblem
from lora_proofcheck._lib.xp import to_host64
from lora_proofcheck.codegen import targets
from lora_proofcheck.codegen.targets import module_subsets
from lora_proofcheck.derivations import lowrank_chain
from lora_proofcheck.kernels import _generated_exact as gen_exact
from lora_proofcheck.kernels import _generated_lowrank as gen
from lora_proofcheck.kernels import _ops
from lora_proofcheck.testing import exact_features, kernel_inputs
from lora_proofcheck.testing.strategies import small_problems

SUBSETS = tuple(module_subsets())


EPS64 = np.finfo(np.float64).eps


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
    assert np.array_equal(to_host64(_ops.face_split(xp.asarray(U), xp.asarray(c))), explicit)
    k, d = U.shape[-1], c.shape[-1]
    M2 = M.reshape(M.shape[:-2] + (k, -1))  # rows a d + b -> row a, columns b e + f
    got = to_host64(_ops.face_contract(xp.asarray(c), xp.asarray(U @ M2)))
    want = explicit @ M
    scale = (np.abs(explicit) @ np.abs(M)).max(initial=0)
    assert np.max(np.abs(got - want), initial=0) <= 4 * (k * d) * EPS64 * scale


def test_face_contract_exact_on_symbols():
    """Index bookkeeping proved exactly: the op on object arrays of SymPy symbols vs the node's
    definition as the Interpreter evaluates it."""
    from lora_proofcheck.derivations.interpreter import Interpreter, symbol_matrix
    from lora_proofcheck.derivations.nodes import FaceContract

    L, d, e = 3, 2, 3
    c, T = symbol_matrix("c", L, d), symbol_matrix("t", L, d * e)
    got = _ops.face_contract(np.array(c.tolist(), dtype=object), np.array(T.tolist(), dtype=object))
    cs, Ts = sp.MatrixSymbol("c", L, d), sp.MatrixSymbol("T", L, d * e)
    want = Interpreter({"c": c, "T": T}, {})(FaceContract(cs, Ts))
    assert all(sp.expand(x) == 0 for x in sp.Matrix(got.tolist()) - want)
    assert all(want[i, f] == sum(c[i, b] * T[i, b * e + f] for b in range(d)) for i in range(L) for f in range(e))


def test_generated_module_is_current_and_never_materialises():
    path = targets.KERNELS / "_generated_lowrank.py"
    assert targets.targets()[path] == path.read_text(encoding="utf-8")
    text = path.read_text()
    for mods in SUBSETS:
        assert f"derivation lowrank_{mods} sha256: {lowrank_chain.build(mods).digest()}" in text
    body = text.split('"""', 2)[2]
    # diag(r) (L x L) would mean CSE hoisted an operator out of its product; face splits only of
    # the narrow data factors (L x d^2), never of a feature factor (L x k d)
    assert "diagflat" not in body and "xp.eye" not in body
    splits = re.findall(r"face_split\(([^)]*)\)", body)
    assert splits and all(set(a.split(", ")) <= {"C1", "C2", "C3", "c"} for a in splits), splits
    for mods in SUBSETS:
        assert f"def lowrank_gradients_{mods}(U1, U2, X_q, X_kv, W_Q, W_K, W_V, Y, beta, n):" in text


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


def rounding_scales(problem) -> dict:
    """Entrywise sums of |terms| of each output (the exact formulas on absolute values): two
    float64 evaluations of one quantity differ by at most 2 gamma_n times this (Higham), whatever
    their summation order; the scale stays honest where terms cancel (dW_K = 0 when L_kv = 1)."""
    e = {k: to_host64(v) for k, v in gen_exact.exact_terms(*kernel_inputs(problem)).items()}
    X, Xkv, Y = (np.abs(to_host64(a)) for a in (problem.X3, problem.Xkv3, problem.Y3))
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
    got = getattr(gen, f"lowrank_gradients_{mods}")(U1, U2, *kernel_inputs(problem, "lowrank"))
    want = getattr(gen_exact, f"exact_gradients_{mods}")(*kernel_inputs(problem))
    assert set(got) == set(want)
    scales = rounding_scales(problem)
    n = problem.L + problem.L_kv * (problem.d + 1) + problem.d + 8  # longest chain of rounded sums
    gamma = n * EPS64 / (1 - n * EPS64)
    for key in want:
        w = to_host64(want[key])
        assert to_host64(got[key]).shape == w.shape
        err = np.abs(to_host64(got[key]) - w)
        assert np.all(err <= 2 * gamma * scales[key]), (key, np.max(err / np.maximum(scales[key], 1e-300)))


def test_terms_kernel_matches_exact_terms(xp):
    problem = LoRAProblem.random(11, 3, 2, adapt="QKV", N=2, cross=True, L_kv=7, logit_bound=2.0, seed=8,
                                 xp=xp)
    U1, U2 = exact_features(problem, xp)
    t = {k: to_host64(v) for k, v in gen.lowrank_terms(U1, U2, *kernel_inputs(problem, "lowrank")).items()}
    e = {k: to_host64(v) for k, v in gen_exact.exact_terms(*kernel_inputs(problem)).items()}
    assert set(t) == set(lowrank_chain.TERMS)
    pairs = {"O": e["F"] @ e["C3"], "c": e["c"], "r": e["r"], "loss": e["loss"],
             "pC2": e["p"] @ e["C2"], "pTC1": np.swapaxes(e["p"], -1, -2) @ e["C1"],
             "FTc": np.swapaxes(e["F"], -1, -2) @ e["c"], "C1": e["C1"], "C2": e["C2"], "C3": e["C3"]}
    for key, want in pairs.items():
        assert np.max(np.abs(t[key] - want)) <= 1e-13 * max(1.0, np.max(np.abs(want))), key
    # alpha~ is the unshifted row sum of exp(S); the exact kernel's is shifted by the row max
    S = e["S"]
    assert np.allclose(t["alpha"][..., 0], np.exp(S).sum(-1), rtol=1e-14, atol=0)

