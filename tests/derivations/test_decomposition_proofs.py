"""The symbolic proofs of the exact gradient hold for every size, the one-piece end-to-end identity
holds at its fixed sizes (and says so), and the proofs fail for the paper's uncorrected forms (so they
can fail)."""

import pytest
import sympy as sp
from sympy.matrices.expressions.diagonal import DiagMatrix

from lora_proofcheck.derivations import decomposition
from lora_proofcheck.derivations import decomposition_proofs as proofs
from lora_proofcheck.derivations.negative_controls import variant
from lora_proofcheck.derivations.nodes import Derivation

PIECES = {  # the sizes their counts give (issue 11): a regression check of the counter
    "projections": (proofs.prove_projections, "L=1, L_kv=1, d=3"),
    "softmax backward": (proofs.prove_p_is_dL_dS, "L=1, L_kv=3, d=1"),
    "logits to W_Q": (lambda: proofs.prove_logits_to_weight("Q"), "L=1, L_kv=1, d=3"),
    "logits to W_K": (lambda: proofs.prove_logits_to_weight("K"), "L=1, L_kv=1, d=3"),
    "values": (proofs.prove_value_gradient, "L=1, L_kv=2, d=3"),
    "adapter": (proofs.prove_adapter_chain_rule, "d=2, r=1"),
    "G": (proofs.prove_G_is_dL_dF, "L=1, L_kv=2, d=1"),
    "p rows": (proofs.prove_rowwise_form, "L=1, L_kv=2"),
}


@pytest.mark.parametrize("piece", sorted(PIECES))
def test_exact_gradient_pieces_hold_for_every_size(piece):
    prove, sufficient = PIECES[piece]
    proof = prove()
    assert proof.holds and proof.data["all_sizes"], proof
    assert proof.data["sufficient"] == sufficient


def test_shift_invariance():
    proof = proofs.prove_shift_invariance()
    assert proof.holds and proof.data["all_sizes"] and "row-shift" in proof.data["basis"]


def test_one_piece_needs_d_6_for_q_and_k():
    """dL/dA_mu in one piece: d = 6 for Q/K (3 from P, 3 from dS/dA), d = 3 and r = 2 for V, with the
    Softmax_1 offset n counted (it adds no index)."""
    q, k, v = (proofs.end_to_end_sizes(m) for m in "QKV")
    assert q.sizes["d"] == k.sizes["d"] == 6 and q.sizes["kv"] == k.sizes["kv"] == 3 and q.sizes["r"] == 1
    assert (v.sizes["d"], v.sizes["r"], v.sizes["kv"]) == (3, 2, 2)


@pytest.mark.parametrize("module", "QKV")
def test_one_piece_at_the_old_size_holds_for_that_size_only(module):
    proof = proofs.prove_lora_gradients(module)  # L = 2, d = 2, r = 1, self-attention
    assert proof.holds and not proof.data["all_sizes"], proof
    assert "L=2 d=2 r=1 self" in proof.size and "every size needs" in proof.measured


def test_one_piece_value_gradient_at_its_sufficient_size():
    """The one end-to-end identity cheap at its sufficient size (1-2 s): every size, in one piece."""
    proof = proofs.prove_lora_gradients("V", L=1, d=3, r=2, cross=True, L_kv=2)
    assert proof.holds and proof.data["all_sizes"], proof


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


SQUARE = {"q": 2, "kv": 2, "d": 2}  # the paper's square forms type-check only with L = L_kv


def test_paper_column_scaled_p2_is_refuted():
    """Erratum E2: the paper's p2 = F diag(r) (U4 = U1, V4 = diag(r) V1) is not dL/dS."""
    wrong = _self_attention_variant({"p2": lambda s: s["F"] * DiagMatrix(s["r"])})
    assert not proofs.prove_p_is_dL_dS(derivation=wrong, at=SQUARE).holds
    refused = proofs.prove_p_is_dL_dS(derivation=variant(decomposition.build(),
                                                          {"p2": lambda s: s["F"] * DiagMatrix(s["r"])}))
    assert not refused.holds and "contraction" in refused.data["reason"]  # ill-typed for cross shapes


def test_paper_q_orientation_is_refuted():
    """Erratum E1: p1 = F ∘ (C3 c^T) (the paper's q, untransposed) gives a wrong gradient."""
    wrong = _self_attention_variant({"G": lambda s: s["C3"] * s["c"].T})
    assert not proofs.prove_lora_gradients("Q", L=2, derivation=wrong).holds
    assert not proofs.prove_p_is_dL_dS(derivation=wrong, at=SQUARE).holds


def test_dropped_softmax_correction_is_refuted():
    """Without p2 (p = F ∘ G) the closed form is not the derivative: the proof detects it."""
    wrong = _self_attention_variant({"p": lambda s: s["p1"]})
    assert not proofs.prove_p_is_dL_dS(derivation=wrong, at=SQUARE).holds
    assert not proofs.prove_p_is_dL_dS(derivation=variant(decomposition.build(), {"p": lambda s: s["p1"]})).holds


def test_a_proof_run_below_its_sufficient_size_does_not_claim_every_size():
    proof = proofs.prove_logits_to_weight("Q", at={"q": 1, "kv": 1, "d": 2})
    assert proof.holds and not proof.data["all_sizes"] and proof.data["sufficient"] == "L=1, L_kv=1, d=3"


@pytest.mark.xfail(strict=True, reason="SymPy 1.14 returns a silent 0 for d(tr(E^T E) + 1)/dE (sympy#26561)")
def test_sympy_matrix_diff_canary():
    """Why the proofs use explicit matrices: MatrixSymbol.diff is wrong here in SymPy 1.14.

    Strict xfail: a SymPy upgrade that fixes it makes this XPASS and fail, so we notice."""
    E = sp.MatrixSymbol("E", 3, 3)
    got = (sp.Trace(E.T * E) + 1).diff(E)  # a ZeroMatrix in 1.14
    assert sp.Matrix(got.as_explicit()) == sp.Matrix((2 * E).as_explicit())
