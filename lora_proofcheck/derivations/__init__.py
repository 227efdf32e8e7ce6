"""Stage 1 of the pipeline: SymPy derivations of every term, and their exact proofs.

`exact` holds the exact gradient decomposition (u, alpha, f, c, G, p1, p2, p, dL/dA, dL/dB),
`lora` the adapter chain rule, `proofs` the brute-force symbolic proofs; `lora-proofcheck regen`
prints these derivations into the kernels of `lora_proofcheck.kernels`.
"""
