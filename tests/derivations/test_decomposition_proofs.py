"""The symbolic proofs hold, and fail for the paper's uncorrected forms (so they can fail)."""

import pytest
import sympy as sp
from sympy.matrices.expressions.diagonal import DiagMatrix

from lora_proofcheck.derivations import decomposition
from lora_proofcheck.derivations import decomposition_proofs as proofs
from lora_proofcheck.derivations.nodes import Derivation


@pytest.mark.parametrize("prove", [proofs.prove_shift_invariance, proofs.prove_G_is_dL_dF,
                                   proofs.prove_p_is_dL_dS, proofs.prove_rowwise_form])
def test_term_identities(prove):
    proof = prove()
    assert proof.holds, proof


@pytest.mark.parametrize("module", "QKV")
@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_lora_gradients_end_to_end(module, cross):
    proof = proofs.prove_lora_gradients(module, cross=cross, L_kv=3 if cross else None)
    assert proof.holds, proof


def _self_attention_variant(replace: dict) -> Derivation:
    """The exact derivation with L_kv = L and some steps replaced (the paper's literal forms)."""
    D = decomposition.build()
    out = Derivation("variant", [i.xreplace({decomposition.L_kv: decomposition.L}) for i in D.inputs])
    syms = {}
    for s in D.steps:
        expr = s.expr.xreplace({decomposition.L_kv: decomposition.L})
        expr = replace[s.name](syms) if s.name in replace else expr
        syms[s.name] = out.let(s.name, expr)
    return out


def test_paper_column_scaled_p2_is_refuted():
    """Erratum E2: the paper's p2 = F diag(r) (U4 = U1, V4 = diag(r) V1) is not dL/dS."""
    wrong = _self_attention_variant({"p2": lambda s: s["F"] * DiagMatrix(s["r"])})
    assert not proofs.prove_p_is_dL_dS(L=2, L_kv=2, derivation=wrong).holds


def test_paper_q_orientation_is_refuted():
    """Erratum E1: p1 = F ∘ (C3 c^T) (the paper's q, untransposed) gives a wrong gradient."""
    wrong = _self_attention_variant({"G": lambda s: s["C3"] * s["c"].T})
    assert not proofs.prove_lora_gradients("Q", L=2, derivation=wrong).holds


def test_dropped_softmax_correction_is_refuted():
    """Without p2 (p = F ∘ G) the closed form is not the derivative: the proof detects it."""
    wrong = _self_attention_variant({"p": lambda s: s["p1"]})
    assert not proofs.prove_p_is_dL_dS(L=2, L_kv=2, derivation=wrong).holds


@pytest.mark.xfail(strict=True, reason="SymPy 1.14 returns a silent 0 for d(tr(E^T E) + 1)/dE (sympy#26561)")
def test_sympy_matrix_diff_canary():
    """Why the proofs use explicit matrices: MatrixSymbol.diff is wrong here in SymPy 1.14.

    Strict xfail: a SymPy upgrade that fixes it makes this XPASS and fail, so we notice."""
    E = sp.MatrixSymbol("E", 3, 3)
    got = (sp.Trace(E.T * E) + 1).diff(E)  # a ZeroMatrix in 1.14
    assert sp.Matrix(got.as_explicit()) == sp.Matrix((2 * E).as_explicit())
