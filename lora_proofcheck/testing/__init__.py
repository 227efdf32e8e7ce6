"""Testing helpers shared by the tests, `lora-proofcheck check`, the report and the stress campaign
(like opt_einsum.testing).

`oracles`: independent references (a SciPy forward pass, central finite differences, PyTorch
autograd, the dense exact formulas in float64, long double or mpmath); `dense_chain`: the paper's
chain materialised in its own notation; `instances`: the adversarial families of test problems;
`peer_oracles`: the dense approximate attention of a peer kernel, its loss, finite differences,
autograd and plug-in formulas.
"""

from .instances import FAMILIES, NOISE, aligned_problem, make_problem, upcast, with_dtype
from .oracles import (
                      allowance_for,
                      central_differences,
                      dense_gradients,
                      dense_reference,
                      exact_features,
                      finite_difference_gradients,
                      host_inputs,
                      kernel_inputs,
                      max_abs,
                      max_abs_diff,
                      max_abs_error,
                      reference_loss,
                      torch_gradients,
)
from .peer_oracles import (
                           approx_finite_difference_gradients,
                           approx_kernel,
                           approx_reference_loss,
                           dense_plugin_gradients,
                           torch_approx_model_gradients,
)

__all__ = ["FAMILIES", "NOISE", "aligned_problem", "allowance_for", "approx_finite_difference_gradients",
           "approx_kernel", "approx_reference_loss", "central_differences", "dense_gradients",
           "dense_plugin_gradients", "dense_reference", "exact_features", "finite_difference_gradients",
           "host_inputs", "kernel_inputs", "make_problem", "max_abs", "max_abs_diff", "max_abs_error",
           "reference_loss", "torch_approx_model_gradients", "torch_gradients", "upcast", "with_dtype"]
