"""Testing helpers shared by the tests, `lora-proofcheck check` and the report (like opt_einsum.testing).

`oracles`: independent references (a SciPy forward pass, central finite differences, PyTorch
autograd, the dense exact formulas); `dense_chain`: the paper's chain materialised in its own
notation; `instances`: the adversarial families of test problems.
"""

from .instances import FAMILIES, aligned_problem, make_problem, upcast, with_dtype
from .oracles import (
                      dense_gradients,
                      exact_features,
                      finite_difference_gradients,
                      host_inputs,
                      kernel_inputs,
                      max_abs,
                      max_abs_error,
                      reference_loss,
                      torch_gradients,
)

__all__ = ["FAMILIES", "aligned_problem", "dense_gradients", "exact_features", "finite_difference_gradients",
           "host_inputs", "kernel_inputs", "make_problem", "max_abs", "max_abs_error", "reference_loss", "torch_gradients", "upcast", "with_dtype"]
