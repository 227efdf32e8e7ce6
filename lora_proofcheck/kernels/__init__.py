"""The kernels: printed by `lora-proofcheck regen` from the derivations (`_generated_exact`,
`_generated_lora`, `_generated_lowrank`, `_generated_peers`: never edit them by hand), the two
hand-written runtime ops they call (`_ops`: the face split and its contraction), the monomial feature
maps U1, U2 of the polynomial method and their VJP (`features`), and FAVOR+'s and the support basis's
features (`peer_features`). All array-API generic: NumPy, CuPy, array-api-strict."""
