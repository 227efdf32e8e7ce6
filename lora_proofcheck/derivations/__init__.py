"""Stage 1 of the pipeline: SymPy derivations of every term, and their exact proofs.

`decomposition` holds the gradient decomposition of the paper (u, alpha, f, c, G, p1, p2, p,
dL/dW), `adapter` the LoRA chain rule (dL/dA, dL/dB), `lowrank_chain` the chained low-rank
approximation (Lemmas 3.3-3.7, fused as the kernels run it: the plug-in gradient), `peers` the
model gradient of a low-rank approximate attention (the derivative of the approximate loss) and
FAVOR+'s feature map, `nodes` the matrix nodes SymPy lacks
and the `Derivation` record, `interpreter` the evaluator on explicit matrices that the proofs use.
`decomposition_proofs` and `lowrank_proofs` prove the identities, each at the size `sufficiency`
computes from its two sides, which proves it for every size (`peer_proofs`: the peers' identities, at fixed sizes); `negative_controls` are wrong forms
the old fixed sizes accepted and these proofs reject; `registry` lists every proof with its tier. `lora-proofcheck regen` (`codegen`) prints the derivations into `lora_proofcheck.kernels`
and writes their human-readable records to the checkout's top-level `derivations/` folder.
"""
