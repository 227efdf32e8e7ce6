"""Four wrong closed forms that vanish at the old proofs' sizes and not one size up: what a proof at a
fixed small size cannot see, and the all-size proofs must reject (issue 11).

Each is the correct derivation with one step changed by a term that is identically zero at the old
sizes (L <= 3, d = 2, r = 1): a Cayley-Hamilton polynomial of a d x d (or L_kv x L_kv) matrix, a trace
identity at rank 1, or a column slice whose bounds agree at d = 2. `REJECTIONS` pairs each with the
all-size proof that rejects it: the counter computes the size from both sides, so the extra term's
indices are counted and the check runs where that term is not 0 (or the slice is refused as not
aligned for every d). The registry runs them in its full tier; tests/derivations also check that the
old fixed-size proofs accept them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import sympy as sp

from .._lib.records import Outcome
from . import adapter, decomposition, lowrank_chain
from . import decomposition_proofs as dp
from . import lowrank_proofs as lp
from .nodes import ColSlice, Derivation, FaceContract

__all__ = ["CONTROLS", "Control", "cayley_hamilton_2", "cayley_hamilton_3", "dA_plus_trace_term",
           "dW_Q_plus_cayley_hamilton", "fused_slice_2d", "p_plus_cayley_hamilton", "rejected", "variant"]


def variant(D: Derivation, replace: dict, name: str | None = None) -> Derivation:
    """D with the steps named in `replace` rebuilt by replace[name](symbols of earlier steps)."""
    out = Derivation(name or f"{D.name}_variant", list(D.inputs), source=D.source)
    syms = {str(i): i for i in D.inputs}
    for s in D.steps:
        expr = replace[s.name](syms) if s.name in replace else s.expr
        syms[s.name] = out.let(s.name, expr, s.paper)
    return out


def cayley_hamilton_2(M):
    """M^2 - tr(M) M + det(M) I with det written by traces: zero for every M of size <= 2."""
    n = M.shape[0]
    t1, t2 = sp.Trace(M), sp.Trace(M * M)
    return M * M - t1 * M + (t1**2 - t2) / 2 * sp.Identity(n)


def cayley_hamilton_3(M):
    """M^3 - e1 M^2 + e2 M - e3 I with e1, e2, e3 by Newton's identities: zero for size <= 3."""
    n = M.shape[0]
    p1, p2, p3 = sp.Trace(M), sp.Trace(M * M), sp.Trace(M * M * M)
    e1, e2, e3 = p1, (p1**2 - p2) / 2, (p1**3 - 3 * p1 * p2 + 2 * p3) / 6
    return M * M * M - e1 * M * M + e2 * M - e3 * sp.Identity(n)


def dW_Q_plus_cayley_hamilton() -> Derivation:
    """dW_Q + CH_2(W_K): right at d <= 2 only."""
    dc = decomposition
    return variant(dc.build(), {"dW_Q": lambda s: dc.beta * dc.X_q.T * s["pC2"] + cayley_hamilton_2(dc.W_K)},
                   "decomposition_dWQ_plus_CH2")


def p_plus_cayley_hamilton() -> Derivation:
    """p + F CH_3(C3 C3^T) (an L_kv x L_kv Cayley-Hamilton term): right with <= 3 keys only."""
    return variant(decomposition.build(),
                   {"p": lambda s: s["p1"] - s["p2"] + s["F"] * cayley_hamilton_3(s["C3"] * s["C3"].T)},
                   "decomposition_p_plus_CH3")


def dA_plus_trace_term() -> Derivation:
    """dA + (B^T B - tr(B^T B) I) A: right at r = 1 only."""
    B, A = adapter.B, adapter.A
    return variant(adapter.build(), {"dA": lambda s: adapter.scale * B.T * adapter.dW
                                     + (B.T * B - sp.Trace(B.T * B) * sp.Identity(adapter.r)) * A},
                   "adapter_dA_plus_trace")


def fused_slice_2d() -> Derivation:
    """The fused chain with the face-split block sliced [2d, 4d) instead of [2d, 2d + d^2): equal at d = 2."""
    d = decomposition.d
    return variant(lowrank_chain.build(), {"p1C2": lambda s: FaceContract(s["c"], ColSlice(s["Tn"], 2 * d, 4 * d))},
                   "lowrank_slice_2d")


@dataclass(frozen=True)
class Control:
    """A wrong derivation, the all-size proof that must reject it and the old fixed-size proof that
    accepted it (`old`, run at the old sizes; None where that run is impractical)."""

    name: str
    build: Callable[[], Derivation]
    new: Callable[[Derivation], Outcome]
    old: Callable[[Derivation], Outcome] | None
    old_size: str


CONTROLS = (
    Control("dW_Q + CH_2(W_K)", dW_Q_plus_cayley_hamilton,
            lambda D: dp.prove_logits_to_weight("Q", derivation=D),
            lambda D: dp.prove_lora_gradients("Q", L=2, d=2, derivation=D), "one piece, L=2, d=2, r=1 (self)"),
    # the old p = dL/dS (C3 = X' W_V explicit, L = 3) runs > 15 min on this term: the same identity with
    # free C3 at the old key count stands in for it
    Control("p + F CH_3(C3 C3^T)", p_plus_cayley_hamilton,
            lambda D: dp.prove_p_is_dL_dS(derivation=D),
            lambda D: dp.prove_p_is_dL_dS(derivation=D, at={"q": 2, "kv": 3, "d": 2}), "free C3, L=2, L_kv=3, d=2"),
    Control("dA + (B^T B - tr(B^T B) I) A", dA_plus_trace_term,
            lambda D: dp.prove_adapter_chain_rule(derivation=D),
            lambda D: dp.prove_lora_gradients("V", L=2, d=2, adapter_derivation=D), "one piece, L=2, d=2, r=1 (self)"),
    Control("fused chain sliced [2d, 4d) for [2d, 2d + d^2)", fused_slice_2d,
            lambda D: lp.prove_chain_exact_features(D),
            lambda D: lp.prove_chain_exact_features(D, at={"q": 3, "kv": 3, "d": 2}), "L=3, L_kv=3, d=2"),
)


def rejected(control: Control) -> Outcome:
    """The all-size proof on the wrong form, as a check that holds when the proof REJECTS it."""
    inner = control.new(control.build())
    why = inner.data.get("reason") or inner.measured
    return Outcome(f"negative control: {control.name}", not inner.holds,
                   f"{'rejected' if not inner.holds else 'ACCEPTED'} by '{inner.name}' at {inner.size} ({why})",
                   detail=f"a wrong form the old sizes accept ({control.old_size}) must fail the all-size proof",
                   paper="issue 11 (negative control)", size=inner.size,
                   data={"all_sizes": False, "sufficient": inner.data.get("sufficient"), "basis": "negative control",
                         "counts": inner.data.get("counts", {})},
                   seconds=inner.seconds)
