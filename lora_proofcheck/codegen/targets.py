"""Every generated file, and the derivation it is printed from: the four kernel modules under
`lora_proofcheck/kernels/` and the human-readable records under the checkout's `derivations/`.

Per module subset the exact kernels (`exact_gradients_<mods>`), the fused low-rank chain in one call
(`lowrank_gradients_<mods>`) and its three row passes (`lowrank_chain.PHASES`) that the chunked
runtime calls once per row chunk, adding up Vq and Vk (sums over key and query rows) and the weight
gradients (sums over rows) between passes. The peers' module holds the model gradient of a low-rank
approximate attention (route (a), whole and as its three row passes; route (b) per module subset)
and the FAVOR+ feature map and its vector-Jacobian product (`derivations/peers.py`).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import sympy as sp

from ..derivations import adapter, decomposition, lowrank_chain, peers
from .render import Kernel, render_module

__all__ = ["KERNELS", "RECORDS", "derivation_record", "module_subsets", "peers_module", "phase_outputs", "targets"]

PACKAGE = Path(__file__).resolve().parent.parent
KERNELS = PACKAGE / "kernels"
RECORDS = PACKAGE.parent / "derivations"  # human-readable records, in a source checkout only

EXACT_ARGS = ("X_q", "X_kv", "W_Q", "W_K", "W_V", "Y", "beta", "log_n")
LOWRANK_ARGS = ("U1", "U2", "X_q", "X_kv", "W_Q", "W_K", "W_V", "Y", "beta", "n")
#: fixed signatures of the row passes (an argument a subset does not need is accepted and unused)
PHASE_ARGS = {
    "key_moments": ("U2", "X_kv", "W_K", "W_V"),
    "query_pass": ("U1", "Vq", "X_q", "W_Q", "Y", "beta", "n"),
    "key_pass": ("U2", "Vk", "X_kv", "W_V", "beta"),
}
LOWRANK_HELPERS = "from ._ops import face_contract, face_split"
MODEL_LOWRANK_ARGS = ("U1", "U2", "X_kv", "W_V", "Y", "n")
MODEL_POLY_ARGS = ("U1", "U2", "U1d", "U2d", "X_q", "X_kv", "W_Q", "W_K", "W_V", "Y", "beta", "n")


def module_subsets():
    """Every non-empty subset of "QKV", in canonical order: Q, K, V, QK, QV, KV, QKV."""
    for n in (1, 2, 3):
        yield from ("".join(c) for c in itertools.combinations("QKV", n))


def exact_module() -> str:
    D = decomposition.build()
    kernels = [Kernel("exact_terms", D, EXACT_ARGS, decomposition.TERMS + ("loss",),
                      "Every term of the exact decomposition (O(L L_kv) memory; for checks).")]
    for mods in module_subsets():
        outs = ("loss",) + tuple(decomposition.WEIGHT_GRADIENTS[m] for m in mods)
        kernels.append(Kernel(f"exact_gradients_{mods}", D, EXACT_ARGS, outs,
                              f"Per-sample loss and dL/dW for modules {', '.join(mods)} (rows of X_q may be a block)."))
    return render_module("Exact O(L^2 d) loss and weight gradients of one attention head.", kernels, [D])


def lora_module() -> str:
    D = adapter.build()
    kernels = [
        Kernel("lora_weight", D, ("W0", "A", "B", "scale"), ("W",), "Effective weight W* + (alpha/r) B A."),
        Kernel("lora_gradients", D, ("dW", "A", "B", "scale"), ("dA", "dB"), "dL/dA and dL/dB from dL/dW."),
    ]
    return render_module("LoRA chain rule (adapter factors from weight gradients).", kernels, [D])


def phase_outputs(mods: str) -> dict:
    """{phase: outputs} of the row passes a module subset runs (no key pass without K or V)."""
    grads = tuple(lowrank_chain.WEIGHT_GRADIENTS[m] for m in mods)
    key_side = tuple(g for g in grads if g != "dW_Q")
    out = {"key_moments": ("Vq",), "query_pass": ("loss",) + tuple(g for g in grads if g == "dW_Q")
           + (("Vk",) if key_side else ())}
    if key_side:
        out["key_pass"] = key_side
    return out


def lowrank_module() -> str:
    derivations = [lowrank_chain.build(mods) for mods in module_subsets()]
    full = next(D for D in derivations if D.name == "lowrank_QKV")
    kernels = [Kernel("lowrank_terms", full, LOWRANK_ARGS, lowrank_chain.TERMS,
                      "Intermediate terms of the fused low-rank chain (O(L k + L d^2) memory; for checks).")]
    for mods, D in zip(module_subsets(), derivations):
        outs = ("loss",) + tuple(lowrank_chain.WEIGHT_GRADIENTS[m] for m in mods)
        kernels.append(Kernel(f"lowrank_gradients_{mods}", D, LOWRANK_ARGS, outs,
                              f"Per-sample loss and dL/dW for modules {', '.join(mods)} from features U1, U2 "
                              "with U1 U2^T ≈ exp(beta C1 C2^T); never forms an L x L_kv array."))
        for phase, phase_outs in phase_outputs(mods).items():
            kernels.append(Kernel(f"lowrank_{phase}_{mods}", D, PHASE_ARGS[phase], phase_outs,
                                  f"Row pass {phase!r} of the fused chain for modules {', '.join(mods)}: "
                                  "its outputs are sums over the rows given (add them up over row chunks)."))
    return render_module("Fused low-rank O(L k d^2) loss and weight gradients of one attention head.",
                         kernels, derivations, helpers=LOWRANK_HELPERS)


def peers_module() -> str:
    a = peers.build_model_lowrank()
    kernels = [
        Kernel("model_lowrank_terms", a, MODEL_LOWRANK_ARGS, peers.MODEL_TERMS,
               "Intermediate terms of the low-rank loss backward (route (a); for checks)."),
        Kernel("model_lowrank_gradients", a, MODEL_LOWRANK_ARGS, ("loss", "dU1", "dU2", "dW_V"),
               "Per-sample loss of the approximate attention E~ = U1 U2^T and its gradients in U1, U2 and "
               "W_V (route (a)); O((L + L_kv) k d), never an L x L_kv array."),
    ]
    for phase, (args, outs) in peers.MODEL_PHASES.items():
        kernels.append(Kernel(f"model_lowrank_{phase}", a, args, outs,
                              f"Row pass {phase!r} of route (a): Vq / Vk / dW_V are sums over the rows given "
                              "(add them up over row chunks); dU1 / dU2 are per row."))
    derivations = [a]
    for mods in module_subsets():
        D = peers.build_model_poly(mods)
        derivations.append(D)
        outs = ("loss",) + tuple(lowrank_chain.WEIGHT_GRADIENTS[m] for m in mods)
        kernels.append(Kernel(f"model_poly_gradients_{mods}", D, MODEL_POLY_ARGS, outs,
                              f"Per-sample loss and MODEL dl~/dW for modules {', '.join(mods)} of E~ = U1 U2^T "
                              "≈ P(S), with U1d U2d^T ≈ P'(S) (route (b)); never forms an L x L_kv array."))
    f = peers.build_favor()
    derivations.append(f)
    kernels += [
        Kernel("favor_exponents", f, ("Xf", "Omega"), ("Zf",), "FAVOR+ exponents w_l . x - ||x||²/2 (L x m)."),
        Kernel("favor_map", f, ("Zf", "shift", "ratio"), ("phi",),
               "FAVOR+ features m^-1/2 exp(Zf - shift) for a per-row (or global) stabiliser shift."),
        Kernel("favor_vjp", f, ("Xf", "Omega", "phi", "Ubar"), ("dXf",),
               "Vector-Jacobian product of the FAVOR+ map at fixed shift: (Ubar ∘ phi) Omega - rowsum(Ubar ∘ phi) x."),
    ]
    return render_module("Model-gradient kernels of the peer approximations (routes (a), (b)) and FAVOR+ features.",
                         kernels, derivations, helpers=LOWRANK_HELPERS)


def recorded_derivations() -> list:
    """The derivations recorded under derivations/, in index order."""
    return [decomposition.build(), adapter.build(), lowrank_chain.build("QKV"), lowrank_chain.build_lemmas(),
            peers.build_model_lowrank(), peers.build_model_poly("QKV"), peers.build_favor()]


def derivation_record(D) -> str:
    lines = [f"# Derivation `{D.name}`", "",
             "GENERATED by `lora-proofcheck regen` -- DO NOT EDIT.", "",
             f"sha256 `{D.digest()}`; source `{D.source.replace('.', '/')}.py`.", "",
             "| step | definition | paper |", "|---|---|---|"]
    for s in D.steps:
        paper = s.paper.replace("|", "\\|")  # a bare | would end the table cell
        latex = sp.latex(s.expr).replace("|", r"\vert ")
        lines.append(f"| `{s.name}` | ${latex}$ | {paper} |")
    return "\n".join(lines) + "\n"


def records_index(derivations) -> str:
    lines = ["# Derivation records", "",
             "GENERATED by `lora-proofcheck regen` -- DO NOT EDIT.", "",
             "Each file is one SymPy derivation of `lora_proofcheck/derivations/`, step by step as the kernels",
             "evaluate it (LaTeX of each step, and where the paper states it). `regen` rewrites them with the",
             "kernels; `regen --check` (run by the tests) proves both current.", "",
             "| record | derivation | source | kernels |", "|---|---|---|---|"]
    kernel_of = {"decomposition": "_generated_exact.py", "adapter": "_generated_lora.py",
                 "lowrank_QKV": "_generated_lowrank.py", "model_lowrank": "_generated_peers.py",
                 "model_poly_QKV": "_generated_peers.py", "favor": "_generated_peers.py"}
    for D in derivations:
        kernel = kernel_of.get(D.name, "(proofs only)")
        lines.append(f"| [`{D.name}.md`]({D.name}.md) | `{D.name}` | `{D.source.replace('.', '/')}.py` | {kernel} |")
    return "\n".join(lines) + "\n"


def targets() -> dict:
    """Every generated file: path -> text. Deterministic."""
    out = {
        KERNELS / "_generated_exact.py": exact_module(),
        KERNELS / "_generated_lora.py": lora_module(),
        KERNELS / "_generated_lowrank.py": lowrank_module(),
        KERNELS / "_generated_peers.py": peers_module(),
    }
    if RECORDS.is_dir():
        derivations = recorded_derivations()
        for D in derivations:
            out[RECORDS / f"{D.name}.md"] = derivation_record(D)
        out[RECORDS / "README.md"] = records_index(derivations)
    return out
