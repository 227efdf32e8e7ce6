"""The one list of exact proofs, with tiers: `lora-proofcheck check`, the report and the tests all
run their proofs from here.

Tiers nest: "fast" (seconds: the report's internal tiny mode), "quick" (adds every end-to-end and
low-rank proof: `check` and `report --quick`), "full" (adds the larger instances: `check --full`,
`report --full`). Within a tier the proofs run in registry order.

>>> [p.name for p in proofs("fast")][:2]
['softmax shift invariance', 'G = dL/dF']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .._lib.records import Outcome
from .._lib.validate import check_choice
from . import decomposition_proofs as dp
from . import lowrank_chain
from . import lowrank_proofs as lp
from . import peer_proofs as pp

__all__ = ["PROOFS", "TIERS", "ProofEntry", "proofs", "run"]

TIERS = ("fast", "quick", "full")


@dataclass(frozen=True)
class ProofEntry:
    """One proof: `prove()` returns its Outcome; `tier` is the cheapest tier that runs it."""

    name: str
    prove: Callable[[], Outcome]
    tier: str
    module: str = ""  # the adapted module a LoRA-gradient proof is about ("" for the others)


def _lora(module: str, tier: str, label: str, **kw) -> ProofEntry:
    return ProofEntry(f"dL/dA_{module}, dL/dB_{module} ({label})",
                      lambda: dp.prove_lora_gradients(module, **kw), tier, module)


PROOFS = (
    ProofEntry("softmax shift invariance", dp.prove_shift_invariance, "fast"),
    ProofEntry("G = dL/dF", dp.prove_G_is_dL_dF, "fast"),
    ProofEntry("p = dL/dS", dp.prove_p_is_dL_dS, "quick"),
    ProofEntry("p rows = Lemma 3.2 form", dp.prove_rowwise_form, "fast"),
    _lora("Q", "quick", "self"), _lora("Q", "quick", "cross", cross=True, L_kv=3), _lora("Q", "full", "L=3", L=3),
    _lora("K", "quick", "self"), _lora("K", "quick", "cross", cross=True, L_kv=3), _lora("K", "full", "L=3", L=3),
    _lora("V", "fast", "self"), _lora("V", "quick", "cross", cross=True, L_kv=3), _lora("V", "full", "L=3", L=3),
    ProofEntry("face-splitting identity", lp.prove_face_split_identity, "fast"),
    ProofEntry("face-split operand swap", lp.prove_face_split_swap, "fast"),
    ProofEntry("r~ = RowDot(c~, O~)", lp.prove_rowdot, "fast"),
    ProofEntry("fused chain = exact (self)", lambda: lp.prove_chain_exact_features(L=3), "quick"),
    ProofEntry("fused chain = exact (cross)", lambda: lp.prove_chain_exact_features(L=2, L_kv=3), "quick"),
    ProofEntry("fused chain = exact formulas at F~", lp.prove_chain_is_gradient_of_approximate_softmax, "quick"),
    ProofEntry("lemma chain = exact (self)",
               lambda: lp.prove_chain_exact_features(L=3, derivation=lowrank_chain.build_lemmas()), "quick"),
    ProofEntry("lemma chain = exact formulas at F~",
               lambda: lp.prove_chain_is_gradient_of_approximate_softmax(derivation=lowrank_chain.build_lemmas()),
               "quick"),
    # the peers' model gradient (derivations/peers.py): route (a), route (b), agreement, FAVOR+
    ProofEntry("model gradient of the low-rank loss (route a, d=1)", pp.prove_model_lowrank_is_gradient, "quick"),
    ProofEntry("model gradient of the low-rank loss (route a, L=3)",
               lambda: pp.prove_model_lowrank_is_gradient(L=3, L_kv=2, k=1, d=1), "quick"),
    ProofEntry("model gradient of the low-rank loss (route a, d=2)",
               lambda: pp.prove_model_lowrank_is_gradient(L=2, L_kv=2, k=2, d=2), "full"),
    ProofEntry("model gradient of an entrywise kernel (route b, QKV)", pp.prove_model_poly_is_gradient, "quick"),
    ProofEntry("model gradient of an entrywise kernel (route b, QV)",
               lambda: pp.prove_model_poly_is_gradient(L=2, L_kv=2, d=2, modules="QV"), "quick"),
    ProofEntry("model gradient of an entrywise kernel (route b, L=3)",
               lambda: pp.prove_model_poly_is_gradient(L=3, L_kv=3, d=2), "full"),
    ProofEntry("model = plug-in when P' = P", pp.prove_model_is_plugin_for_exp, "quick"),
    ProofEntry("plug-in and model agree on W_V", pp.prove_plugin_model_agree_on_V, "quick"),
    ProofEntry("stabiliser gradients = n r~/alpha~", pp.prove_shift_gradient, "quick"),
    ProofEntry("FAVOR+ map and VJP", pp.prove_favor_vjp, "quick"),
    ProofEntry("FAVOR+ unbiased", pp.prove_favor_unbiased, "quick"),
)


def proofs(tier: str = "quick") -> list[ProofEntry]:
    """The proofs a tier runs, in registry order."""
    rank = TIERS.index(check_choice("tier", tier, TIERS))
    return [p for p in PROOFS if TIERS.index(p.tier) <= rank]


def run(tier: str = "quick", progress=None) -> list[Outcome]:
    """Run a tier's proofs; `progress(outcome)` is called after each."""
    out = []
    for entry in proofs(tier):
        outcome = entry.prove()
        out.append(outcome)
        if progress is not None:
            progress(outcome)
    return out
