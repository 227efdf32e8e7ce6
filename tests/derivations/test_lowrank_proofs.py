"""The low-rank chain's exact proofs hold for every size, and fail for the paper's column-scaled p~2
(so they can fail)."""

from __future__ import annotations

import pytest

from lora_proofcheck.derivations import lowrank_chain, lowrank_proofs


@pytest.mark.parametrize("build", [lowrank_chain.build, lowrank_chain.build_lemmas], ids=["fused", "lemmas"])
def test_chain_with_exact_features_holds_for_every_size(build):
    proof = lowrank_proofs.prove_chain_exact_features(build())
    assert proof.holds and proof.data["all_sizes"], proof
    assert proof.data["sufficient"] == "L=1, L_kv=3, d=3"


def test_chain_at_the_old_size_holds_there_only():
    """The old proof's size (L = 3, d = 2) is below the d = 3 the face-split blocks need."""
    proof = lowrank_proofs.prove_chain_exact_features(at={"q": 3, "kv": 3, "d": 2})
    assert proof.holds and not proof.data["all_sizes"]


def test_chain_equals_exact_formulas_at_F_tilde_for_every_size():
    """The lemma chain (the fused one is in the registry's quick tier, tests/derivations/test_registry):
    the k = 3, d = 3, L_kv = 3 instance its counts require, step (i) counted too."""
    proof = lowrank_proofs.prove_chain_equals_exact_formulas_at_F_tilde(lowrank_chain.build_lemmas())
    assert proof.holds and proof.data["all_sizes"], proof
    assert proof.data["sufficient"] == "L=1, L_kv=3, d=3, k=3"
    assert {"(i) alpha~", "(i) U1n"} <= set(proof.data["counts"])


def test_papers_column_scaled_p2_is_refuted():
    """p~2 = F~ diag(r~) (the paper's V4 = diag(r~) V1, erratum E2) must make the proof fail: refused
    as ill-typed for cross shapes, and wrong where it type-checks (L = L_kv)."""
    wrong = lowrank_chain.build_lemmas("columns")
    assert not lowrank_proofs.prove_chain_exact_features(wrong).holds
    assert not lowrank_proofs.prove_chain_exact_features(wrong, at={"q": 3, "kv": 3, "d": 2}).holds


def test_unknown_variants():
    with pytest.raises(ValueError, match="p2"):
        lowrank_chain.build_lemmas("diagonal")
    for bad in ("", "VQ", "QX", "QQ"):
        with pytest.raises(ValueError, match="modules"):
            lowrank_chain.build(bad)
