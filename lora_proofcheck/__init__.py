"""lora_proofcheck: machine-checked verification of 'Computational Limits of LoRA' (Hu et al.).

Pipeline: `derivations` (SymPy, proved) -> `codegen` -> `kernels` (generated, array-API
generic) -> checks (tests, `lora-proofcheck check`) -> reports (`lora-proofcheck report`).
"""

from .approx import ApproxResult, Plan, approx_gradients, logit_bound, plan, threshold_report
from .errors import AboveThresholdError, InvalidInputError, InvalidTypeError, ProofcheckError
from .exact import exact_gradients, loss
from .problem import MODULES, LoRAProblem

__version__ = "0.1.0"

__all__ = [
    "AboveThresholdError",
    "ApproxResult",
    "Plan",
    "approx_gradients",
    "logit_bound",
    "plan",
    "threshold_report",
    "InvalidInputError",
    "InvalidTypeError",
    "LoRAProblem",
    "MODULES",
    "ProofcheckError",
    "exact_gradients",
    "loss",
    "__version__",
]
