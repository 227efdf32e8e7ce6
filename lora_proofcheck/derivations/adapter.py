"""The LoRA chain rule: W = W* + s B A (s = alpha/r), so dL/dA = s B^T dL/dW, dL/dB = s dL/dW A^T.

The paper's Lemma 3.2 states dL/dB_Q = C1^T p A_Q C2, which is not even shape-consistent
(erratum E3); the form below is the corrected one, proved for every size in
`decomposition_proofs.prove_adapter_chain_rule` (and in one piece, at fixed sizes, in
`decomposition_proofs.prove_lora_gradients`).
"""

from __future__ import annotations

import sympy as sp

from .nodes import Derivation

d, r = sp.symbols("d r", integer=True, positive=True)
W0 = sp.MatrixSymbol("W0", d, d)
A = sp.MatrixSymbol("A", r, d)
B = sp.MatrixSymbol("B", d, r)
dW = sp.MatrixSymbol("dW", d, d)
scale = sp.Symbol("scale")

INPUTS = [W0, A, B, dW, scale]

__all__ = ["INPUTS", "build"]


def build() -> Derivation:
    D = Derivation("adapter", INPUTS, source=__name__)
    D.let("W", W0 + scale * B * A, "W = W* + (alpha/r) B A (Def. 1.1)")
    D.let("dA", scale * B.T * dW, "dL/dA = (alpha/r) B^T dL/dW (Lemma 3.2, r x d)")
    D.let("dB", scale * dW * A.T, "dL/dB = (alpha/r) dL/dW A^T (Lemma 3.2 corrected, d x r: E3)")
    return D
