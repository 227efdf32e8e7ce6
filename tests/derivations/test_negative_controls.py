"""Four wrong closed forms the old fixed-size proofs accept (they vanish at d = 2, r = 1 or with three
keys) and the all-size proofs reject: the proofs at the sufficient sizes can fail where the old ones
could not."""

from __future__ import annotations

import pytest

from lora_proofcheck.derivations import negative_controls as nc

BY_NAME = {c.name: c for c in nc.CONTROLS}


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_the_all_size_proof_rejects_it(name):
    """About 12 s for the CH_3 term (checked at the L_kv = 6, d = 3 its counts require), < 1 s the others."""
    control = BY_NAME[name]
    outcome = nc.rejected(control)
    assert outcome.holds, outcome.measured


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_the_old_fixed_size_proof_accepts_it(name):
    """What the old sizes could not see (1-6 s each; the CH_3 term with the old C3 = X' W_V runs > 15 min,
    so the same identity with free C3 at the old key count stands in)."""
    control = BY_NAME[name]
    old = control.old(control.build())
    assert old.holds and not old.data["all_sizes"], old


def test_the_sizes_that_reject_them():
    sizes = {c.name: nc.rejected(c).size for c in nc.CONTROLS if "CH_3" not in c.name}
    assert sizes["dW_Q + CH_2(W_K)"] == "L=1, L_kv=1, d=3"
    assert sizes["dA + (B^T B - tr(B^T B) I) A"] == "d=2, r=2"
    sliced = nc.rejected(BY_NAME["fused chain sliced [2d, 4d) for [2d, 2d + d^2)"])
    assert "block boundaries" in sliced.measured  # refused for every d, not tested at one
