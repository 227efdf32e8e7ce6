"""Generated files of the approximate (polynomial-method) path: the chained low-rank kernels."""

from __future__ import annotations

from pathlib import Path

from ..derivations import lowrank
from .regen import _subsets
from .render import Kernel, render_module

LOWRANK_ARGS = ("U1", "U2", "X_q", "X_kv", "W_Q", "W_K", "W_V", "Y", "beta")
HELPERS = "from ._ops import face_split_matmul, face_split_t_matmul"


def lowrank_module() -> str:
    D = lowrank.build()
    kernels = [Kernel("lowrank_terms", D, LOWRANK_ARGS, lowrank.TERMS,
                      "Intermediate terms of the low-rank chain (O(L k + L d^2) memory; for checks).")]
    for mods in _subsets():
        outs = ("loss",) + tuple(lowrank.WEIGHT_GRADIENTS[m] for m in mods)
        kernels.append(Kernel(f"lowrank_gradients_{mods}", D, LOWRANK_ARGS, outs,
                              f"Per-sample loss and dL/dW for modules {', '.join(mods)} from features U1, U2 "
                              "with U1 U2^T ≈ exp(beta C1 C2^T); never forms an L x L_kv array."))
    return render_module("Chained low-rank O(L k d^2) loss and weight gradients of one attention head.",
                         kernels, [D], helpers=HELPERS)


def targets(kernels_dir) -> dict:
    return {Path(kernels_dir) / "_generated_lowrank.py": lowrank_module()}


def derivations() -> list:
    return [lowrank.build()]
