"""Generated files of the approximate (polynomial-method) path: the fused low-rank kernels.

Per module subset: the whole chain in one call (`lowrank_gradients_<mods>`), and its three row
passes (`lowrank.PHASES`) that the chunked runtime calls once per row chunk, adding up Vq and Vk
(sums over key and query rows) and the weight gradients (sums over rows) between passes.
"""

from __future__ import annotations

from pathlib import Path

from ..derivations import lowrank
from .regen import _subsets
from .render import Kernel, render_module

LOWRANK_ARGS = ("U1", "U2", "X_q", "X_kv", "W_Q", "W_K", "W_V", "Y", "beta")
#: fixed signatures of the row passes (an argument a subset does not need is accepted and unused)
PHASE_ARGS = {
    "key_moments": ("U2", "X_kv", "W_K", "W_V"),
    "query_pass": ("U1", "Vq", "X_q", "W_Q", "Y", "beta"),
    "key_pass": ("U2", "Vk", "X_kv", "W_V", "beta"),
}
HELPERS = "from ._ops import face_contract, face_split"


def phase_outputs(mods: str) -> dict:
    """{phase: outputs} of the row passes a module subset runs (no key pass without K or V)."""
    grads = tuple(lowrank.WEIGHT_GRADIENTS[m] for m in mods)
    key_side = tuple(g for g in grads if g != "dW_Q")
    out = {"key_moments": ("Vq",), "query_pass": ("loss",) + tuple(g for g in grads if g == "dW_Q")
           + (("Vk",) if key_side else ())}
    if key_side:
        out["key_pass"] = key_side
    return out


def lowrank_module() -> str:
    derivations = [lowrank.build(mods) for mods in _subsets()]
    full = next(D for D in derivations if D.name == "lowrank_QKV")
    kernels = [Kernel("lowrank_terms", full, LOWRANK_ARGS, lowrank.TERMS,
                      "Intermediate terms of the fused low-rank chain (O(L k + L d^2) memory; for checks).")]
    for mods, D in zip(_subsets(), derivations):
        outs = ("loss",) + tuple(lowrank.WEIGHT_GRADIENTS[m] for m in mods)
        kernels.append(Kernel(f"lowrank_gradients_{mods}", D, LOWRANK_ARGS, outs,
                              f"Per-sample loss and dL/dW for modules {', '.join(mods)} from features U1, U2 "
                              "with U1 U2^T ≈ exp(beta C1 C2^T); never forms an L x L_kv array."))
        for phase, phase_outs in phase_outputs(mods).items():
            kernels.append(Kernel(f"lowrank_{phase}_{mods}", D, PHASE_ARGS[phase], phase_outs,
                                  f"Row pass {phase!r} of the fused chain for modules {', '.join(mods)}: "
                                  "its outputs are sums over the rows given (add them up over row chunks)."))
    return render_module("Fused low-rank O(L k d^2) loss and weight gradients of one attention head.",
                         kernels, derivations, helpers=HELPERS)


def targets(kernels_dir) -> dict:
    return {Path(kernels_dir) / "_generated_lowrank.py": lowrank_module()}


def derivations() -> list:
    """The derivations recorded under derivations/: the fused chain (all modules) and the lemmas'."""
    return [lowrank.build("QKV"), lowrank.build_lemmas()]
