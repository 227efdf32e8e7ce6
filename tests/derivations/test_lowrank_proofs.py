"""The low-rank chain's exact proofs hold, and fail for the paper's column-scaled p~2 (so they can fail)."""

from __future__ import annotations

import pytest

from lora_proofcheck.derivations import lowrank_chain, lowrank_proofs, registry

LOWRANK = [p for p in registry.PROOFS if p.prove.__module__ == lowrank_proofs.__name__
           or "chain" in p.name or "face-split" in p.name or "RowDot" in p.name]


@pytest.mark.parametrize("entry", LOWRANK, ids=lambda p: p.name)
def test_every_lowrank_proof_of_the_registry_holds(entry):
    proof = entry.prove()
    assert proof.holds, proof


def test_registry_holds_the_lowrank_proofs():
    assert len(LOWRANK) == 8 and {p.tier for p in LOWRANK} == {"fast", "quick"}


def test_papers_column_scaled_p2_is_refuted():
    """p~2 = F~ diag(r~) (the paper's V4 = diag(r~) V1, erratum E2) must make the proof fail."""
    wrong = lowrank_chain.build_lemmas("columns")
    assert not lowrank_proofs.prove_chain_exact_features(L=3, derivation=wrong).holds


def test_unknown_variants():
    with pytest.raises(ValueError, match="p2"):
        lowrank_chain.build_lemmas("diagonal")
    for bad in ("", "VQ", "QX", "QQ"):
        with pytest.raises(ValueError, match="modules"):
            lowrank_chain.build(bad)


@pytest.mark.parametrize("mods", ["Q", "V", "QK"])
def test_module_subsets_are_proved_too(mods):
    """Each subset stacks other blocks (other column offsets): proved like the full chain."""
    D = lowrank_chain.build(mods)
    outs = ("loss",) + tuple(lowrank_chain.WEIGHT_GRADIENTS[m] for m in mods)
    assert lowrank_proofs.prove_chain_exact_features(L=2, d=2, derivation=D, outputs=outs).holds

