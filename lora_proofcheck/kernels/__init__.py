"""The kernels: printed by `lora-proofcheck regen` from the derivations (`_generated_exact`,
`_generated_lora`, `_generated_lowrank`: never edit them by hand), the two hand-written runtime ops
they call (`_ops`: the face split and its contraction) and the monomial feature maps U1, U2 of the
polynomial method (`features`). All array-API generic: NumPy, CuPy, array-api-strict."""
