"""The one list of exact proofs, with tiers: `lora-proofcheck check`, the report and the tests all
run their proofs from here.

Tiers nest: "fast" (seconds: the term identities and the five pieces of the exact gradient, all for
every size; the report's internal tiny mode), "quick" (adds the low-rank chains for every size, the
fused chain of every module subset included: `check` and `report --quick`), "full" (adds the old
fixed-size one-piece end-to-end proofs, labelled with their sizes, one-piece V at the size that
proves it for every size, and the negative controls: `check --full`, `report --full`). Within a
tier the proofs run in registry order.

Every entry says whether it claims its identity for EVERY size (`all_sizes`) and at which size that
follows (`sufficient`, what `sufficiency` computes from the identity's two sides; a regression
test compares). `prove` enforces the claim: an entry claiming every size whose proof ran below its
sufficient size fails, whatever its SymPy check said.

>>> [p.name for p in proofs("fast")][:2]
['softmax shift invariance', 'G = dL/dF']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .._lib.records import Outcome
from .._lib.validate import check_choice
from . import adaptive_proofs as ap
from . import decomposition_proofs as dp
from . import lowrank_chain
from . import lowrank_proofs as lp
from . import negative_controls as nc
from . import peer_proofs as pp

__all__ = ["PROOFS", "SUBSETS", "TIERS", "ProofEntry", "proofs", "prove", "run"]

TIERS = ("fast", "quick", "full")
#: the fused chain's module subsets besides QKV (every one has generated kernels)
SUBSETS = ("Q", "K", "V", "QK", "QV", "KV")


@dataclass(frozen=True)
class ProofEntry:
    """One proof: `prove()` returns its Outcome; `tier` is the cheapest tier that runs it; `all_sizes`
    whether it claims its identity for every size, `sufficient` the size that proves that."""

    name: str
    prove: Callable[[], Outcome]
    tier: str
    all_sizes: bool = True
    sufficient: str = ""
    module: str = ""  # the adapted module a LoRA-gradient proof is about ("" for the others)


def _one_piece(module: str, tier: str, *, L=2, d=2, r=1, cross=False, L_kv=None) -> ProofEntry:
    kind = f"L_kv={L_kv}" if cross else "self"
    every = module == "V" and (L, d, r, L_kv) == (1, 3, 2, 2) and cross
    label = f"one piece, L={L}, d={d}, r={r}, {kind}" + (": every size" if every else "")
    return ProofEntry(f"dL/dA_{module}, dL/dB_{module} ({label})",
                      lambda: dp.prove_lora_gradients(module, L=L, d=d, r=r, cross=cross, L_kv=L_kv), tier,
                      all_sizes=every, sufficient={"Q": "L=1, L_kv=3, d=6, r=1", "K": "L=1, L_kv=3, d=6, r=1",
                                                   "V": "L=1, L_kv=2, d=3, r=2"}[module], module=module)


def _subset_entries(mods: str) -> tuple:
    outs = ("loss",) + tuple(lowrank_chain.WEIGHT_GRADIENTS[m] for m in mods)
    small = mods == "V"  # no face split, no key-side softmax term: two keys, d = 2
    exact = "L=1, L_kv=2, d=2" if small else "L=1, L_kv=3, d=3"
    at_f = "L=1, L_kv=2, d=2, k=2" if small else "L=1, L_kv=3, d=3, k=3"
    return (
        ProofEntry(f"fused chain {mods} = exact (U1 = exp(S), U2 = I)",
                   lambda: lp.prove_chain_exact_features(lowrank_chain.build(mods), outputs=outs), "quick",
                   sufficient=exact),
        ProofEntry(f"fused chain {mods} = exact formulas at F~",
                   lambda: lp.prove_chain_equals_exact_formulas_at_F_tilde(lowrank_chain.build(mods), outputs=outs),
                   "quick", sufficient=at_f),
    )


PROOFS = (
    # the term identities
    ProofEntry("softmax shift invariance", dp.prove_shift_invariance, "fast", sufficient="any"),
    ProofEntry("G = dL/dF", dp.prove_G_is_dL_dF, "fast", sufficient="L=1, L_kv=2, d=1"),
    ProofEntry("p rows = Lemma 3.2 form", dp.prove_rowwise_form, "fast", sufficient="L=1, L_kv=2"),
    # the exact gradient for every size, in five pieces composed by the chain rule
    ProofEntry("S, C3 of the derivation", dp.prove_projections, "fast", sufficient="L=1, L_kv=1, d=3"),
    ProofEntry("p = dL/dS", dp.prove_p_is_dL_dS, "fast", sufficient="L=1, L_kv=3, d=1"),
    ProofEntry("dW_Q from dL/dS", lambda: dp.prove_logits_to_weight("Q"), "fast", sufficient="L=1, L_kv=1, d=3",
               module="Q"),
    ProofEntry("dW_K from dL/dS", lambda: dp.prove_logits_to_weight("K"), "fast", sufficient="L=1, L_kv=1, d=3",
               module="K"),
    ProofEntry("dW_V from F", dp.prove_value_gradient, "fast", sufficient="L=1, L_kv=2, d=3", module="V"),
    ProofEntry("LoRA chain rule", dp.prove_adapter_chain_rule, "fast", sufficient="d=2, r=1"),
    # the low-rank chain's pieces and the chains themselves
    ProofEntry("face-splitting identity", lp.prove_face_split_identity, "fast", sufficient="k1=1, k2=1, m=1, n=1"),
    ProofEntry("face-split operand swap", lp.prove_face_split_swap, "fast", sufficient="k1=1, k2=1, m=1, n=1"),
    ProofEntry("r~ = RowDot(c~, O~)", lp.prove_rowdot, "fast", sufficient="L=1, L_kv=2, d=1, k=2"),
    ProofEntry("fused chain = exact (U1 = exp(S), U2 = I)", lp.prove_chain_exact_features, "quick",
               sufficient="L=1, L_kv=3, d=3"),
    ProofEntry("lemma chain = exact (U1 = exp(S), U2 = I)",
               lambda: lp.prove_chain_exact_features(lowrank_chain.build_lemmas()), "quick",
               sufficient="L=1, L_kv=3, d=3"),
    ProofEntry("fused chain = exact formulas at F~", lp.prove_chain_equals_exact_formulas_at_F_tilde, "quick",
               sufficient="L=1, L_kv=3, d=3, k=3"),
    ProofEntry("lemma chain = exact formulas at F~",
               lambda: lp.prove_chain_equals_exact_formulas_at_F_tilde(lowrank_chain.build_lemmas()), "quick",
               sufficient="L=1, L_kv=3, d=3, k=3"),
    *(entry for mods in SUBSETS for entry in _subset_entries(mods)),
    # the row-adaptive certificate's identities (certification/adaptive.py, geometry.py): fixed sizes
    *(ProofEntry(f"certificate identity: {name} ({ap.STATEMENTS[name][1]})", lambda name=name: ap.outcome(name),
                 "quick", all_sizes=False) for name in ap.PROOFS),
    # full tier: the one-piece end-to-end identities at the old fixed sizes (integration checks of the
    # pieces), one-piece V where that is cheap enough to prove every size, and the negative controls
    _one_piece("Q", "full"), _one_piece("Q", "full", cross=True, L_kv=3), _one_piece("Q", "full", L=3),
    _one_piece("K", "full"), _one_piece("K", "full", cross=True, L_kv=3), _one_piece("K", "full", L=3),
    _one_piece("V", "full"), _one_piece("V", "full", cross=True, L_kv=3), _one_piece("V", "full", L=3),
    _one_piece("V", "full", L=1, d=3, r=2, cross=True, L_kv=2),
    *(ProofEntry(f"negative control: {c.name}", lambda c=c: nc.rejected(c), "full", all_sizes=False,
                 sufficient="") for c in nc.CONTROLS),
    # the peers' model gradient (derivations/peers.py): route (a), route (b), agreement, FAVOR+; fixed sizes
    ProofEntry("model gradient of the low-rank loss (route a; L=2, L_kv=2, k=2, d=1)",
               pp.prove_model_lowrank_is_gradient, "quick", all_sizes=False),
    ProofEntry("model gradient of the low-rank loss (route a; L=3, L_kv=2, k=1, d=1)",
               lambda: pp.prove_model_lowrank_is_gradient(L=3, L_kv=2, k=1, d=1), "quick", all_sizes=False),
    ProofEntry("model gradient of the low-rank loss (route a; L=2, L_kv=2, k=2, d=2)",
               lambda: pp.prove_model_lowrank_is_gradient(L=2, L_kv=2, k=2, d=2), "full", all_sizes=False),
    ProofEntry("model gradient of an entrywise kernel (route b, QKV; L=2, L_kv=3, d=2)",
               pp.prove_model_poly_is_gradient, "quick", all_sizes=False),
    ProofEntry("model gradient of an entrywise kernel (route b, QV; L=2, L_kv=2, d=2)",
               lambda: pp.prove_model_poly_is_gradient(L=2, L_kv=2, d=2, modules="QV"), "quick", all_sizes=False),
    ProofEntry("model gradient of an entrywise kernel (route b, QKV; L=3, L_kv=3, d=2)",
               lambda: pp.prove_model_poly_is_gradient(L=3, L_kv=3, d=2), "full", all_sizes=False),
    ProofEntry("model = plug-in when P' = P (L=2, L_kv=3, d=2)", pp.prove_model_is_plugin_for_exp, "quick",
               all_sizes=False),
    ProofEntry("plug-in and model agree on W_V (L=2, L_kv=2, k=2, d=2)", pp.prove_plugin_model_agree_on_V, "quick",
               all_sizes=False),
    ProofEntry("stabiliser gradients = n r~/alpha~ (L=2, L_kv=2, k=2, d=2)", pp.prove_shift_gradient, "quick",
               all_sizes=False),
    ProofEntry("FAVOR+ map and VJP (L=2, d=2, m=3)", pp.prove_favor_vjp, "quick", all_sizes=False),
    ProofEntry("FAVOR+ unbiased (d=2; independent coordinates)", pp.prove_favor_unbiased, "quick",
               all_sizes=False),
)


def proofs(tier: str = "quick") -> list[ProofEntry]:
    """The proofs a tier runs, in registry order."""
    rank = TIERS.index(check_choice("tier", tier, TIERS))
    return [p for p in PROOFS if TIERS.index(p.tier) <= rank]


def prove(entry: ProofEntry) -> Outcome:
    """Run one entry: its Outcome under the entry's name, failing if it claims every size and its
    proof did not reach the size that proves it (`data["all_sizes"]`)."""
    outcome = entry.prove()
    outcome.name = entry.name
    if entry.all_sizes and outcome.holds and not outcome.data.get("all_sizes"):
        outcome.holds = False
        outcome.measured = (f"claims every size but ran at {outcome.size or '?'} only "
                            f"(sufficient: {outcome.data.get('sufficient')}); {outcome.measured}")
    return outcome


def run(tier: str = "quick", progress=None) -> list[Outcome]:
    """Run a tier's proofs; `progress(outcome)` is called after each."""
    out = []
    for entry in proofs(tier):
        outcome = prove(entry)
        out.append(outcome)
        if progress is not None:
            progress(outcome)
    return out
