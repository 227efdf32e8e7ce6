"""The peers' exact proofs hold, and fail where they must: the paper's plug-in chain is not the model
gradient, a sign slip in route (a) is caught, and the FAVOR+ stabilisers' gradient vanishes only for
softmax (n = 0)."""

from __future__ import annotations

import pytest
import sympy as sp

from lora_proofcheck.derivations import lowrank_chain, peer_proofs, peers, registry
from lora_proofcheck.derivations.interpreter import Interpreter, symbol_matrix
from lora_proofcheck.derivations.nodes import HStack, Step, divide_rows

PEERS = [p for p in registry.PROOFS if p.prove.__module__ == peer_proofs.__name__
         or "route" in p.name or "FAVOR+" in p.name or "plug-in" in p.name or "stabiliser" in p.name]


@pytest.mark.parametrize("entry", [p for p in PEERS if p.tier != "full"], ids=lambda p: p.name)
def test_every_peer_proof_of_the_quick_tier_holds(entry):
    proof = entry.prove()
    assert proof.holds, proof


def test_registry_holds_the_peer_proofs_in_two_tiers():
    assert len(PEERS) == 11 and {p.tier for p in PEERS} == {"quick", "full"}
    assert sum(p.tier == "full" for p in PEERS) == 2


def test_the_plugin_chain_is_not_the_model_gradient():
    """The paper's chain fed in as route (b) must fail the model proof: it is a different object."""
    assert not peer_proofs.prove_model_poly_is_gradient(derivation=lowrank_chain.build("QKV")).holds


def test_a_wrong_step_fails_the_route_a_proof():
    D = peers.build_model_lowrank()
    i = [s.name for s in D.steps].index("Z")
    r, c, alpha = (sp.MatrixSymbol(name, peers.L, w) for name, w in (("r", 1), ("c", peers.d), ("alpha", 1)))
    D.steps[i] = Step("Z", divide_rows(HStack(r, c), alpha), "sign of r flipped")
    assert not peer_proofs.prove_model_lowrank_is_gradient(L=2, L_kv=2, k=1, d=1, derivation=D).holds


def test_stabiliser_gradient_does_not_vanish_for_softmax_1():
    """rowdot(dU1, U1) = n r~/alpha~ (proved): for n > 0 it is not identically 0, which is why FAVOR+
    and the support basis refuse a normaliser offset."""
    n = sp.Symbol("n", positive=True)
    U1, U2 = symbol_matrix("u", 2, 2), symbol_matrix("w", 2, 2)
    env = {"U1": U1, "U2": U2, "C3": symbol_matrix("v", 2, 1), "Y": symbol_matrix("y", 2, 1), "n": n}
    sizes = {peers.L: 2, peers.L_kv: 2, peers.d: 1, lowrank_chain.k: 2}
    I = Interpreter(env, sizes)
    I.run(peers.build_model_lowrank(), ["dU1"], given=("C3",))
    row = sum(I.env["dU1"][0, m] * U1[0, m] for m in range(2))
    values = {s: sp.Rational(i + 2, 3) for i, s in enumerate(sorted(row.free_symbols - {n}, key=str))}
    assert sp.simplify(row.subs(n, 0)) == 0
    assert row.subs(values).subs(n, 1) != 0


def test_unknown_module_subsets():
    for bad in ("", "VQ", "QX", "QQ"):
        with pytest.raises(ValueError, match="modules"):
            peers.build_model_poly(bad)


@pytest.mark.parametrize("mods", ["Q", "K", "V", "QK", "KV"])
def test_route_b_module_subsets_are_proved_too(mods):
    """Each subset stacks other blocks: proved like the full route (b)."""
    assert peer_proofs.prove_model_poly_is_gradient(L=2, L_kv=2, d=2, modules=mods).holds
