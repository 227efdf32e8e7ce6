"""The proof registry: every quick-tier proof holds for every size at the sufficient size it declares
(what the counter computes), the tiers hold what they say, and a generality claim fails when its
proof ran below the sufficient size."""

from __future__ import annotations

import pytest

from lora_proofcheck._lib.records import Outcome
from lora_proofcheck.derivations import registry

QUICK = registry.proofs("quick")


@pytest.mark.parametrize("entry", QUICK, ids=lambda p: p.name)
def test_every_quick_proof_holds_for_every_size(entry):
    """The quick tier (`check`, `report --quick`): every proof holds; those claiming every size at the
    sufficient size the counter computes, the fixed-size ones (the certificate's and the peers'
    identities, `all_sizes=False`) with their sizes in their names (about 60 s here)."""
    proof = registry.prove(entry)
    assert proof.holds, proof
    if entry.all_sizes:
        assert proof.data["all_sizes"], proof
        assert proof.data["sufficient"] == entry.sufficient, (proof.data["sufficient"], entry.sufficient)
    else:
        assert not proof.data.get("all_sizes") and "=" in entry.name, entry.name  # labelled with its sizes


def test_tiers():
    names = [p.name for p in QUICK]
    assert sum("chain" in n and "F~" in n for n in names) == 2 + len(registry.SUBSETS)
    fixed = [p.name for p in QUICK if not p.all_sizes]
    assert all(n.startswith(("certificate identity", "model gradient", "model = plug-in", "plug-in and model",
                             "stabiliser", "FAVOR+")) for n in fixed), fixed
    full = [p for p in registry.proofs("full") if p.tier == "full"]
    assert sum(p.name.startswith("negative control") for p in full) == 4
    one_piece = [p for p in full if "one piece" in p.name]
    assert [p.name for p in one_piece if p.all_sizes] == ["dL/dA_V, dL/dB_V (one piece, L=1, d=3, r=2, L_kv=2: every size)"]
    assert all(f"d={p.name.split('d=')[1][0]}" in p.name for p in one_piece)  # labelled with their sizes


def test_a_generality_claim_fails_below_its_sufficient_size():
    below = Outcome("x", True, "exactly 0", size="d=2", data={"all_sizes": False, "sufficient": "d=3"})
    claims = registry.ProofEntry("x", lambda: below, "fast", all_sizes=True, sufficient="d=3")
    fixed = registry.ProofEntry("x", lambda: Outcome("x", True, data={"all_sizes": False}), "fast", all_sizes=False)
    out = registry.prove(claims)
    assert out.holds is False and "claims every size" in out.measured
    assert registry.prove(fixed).holds is True


def test_full_tier_one_piece_entries_declare_what_their_counts_require():
    """The one-piece proofs are slow (up to ~25 s each): their declared sufficient sizes are checked
    against the counter alone, which is cheap."""
    from lora_proofcheck.derivations import decomposition_proofs as dp

    for entry in registry.proofs("full"):
        if "one piece" in entry.name:
            need = dp.end_to_end_sizes(entry.module)
            assert dp.size_label(need.sizes, need.query_rows, {s for c in need.counts.values() for s in c} | {"q"}) \
                == entry.sufficient, entry.name
