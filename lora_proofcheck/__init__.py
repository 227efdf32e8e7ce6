"""lora_proofcheck: machine-checked verification of *Computational Limits of Low-Rank Adaptation
(LoRA) for Transformer-Based Models* (Hu, Su, Kuo, Song, Liu; arXiv 2406.03136, ICLR 2025).

Pipeline: `derivations` (SymPy, proved) -> `codegen` -> `kernels` (generated, array-API generic)
-> `certification` and `gradients` (the certified paths) -> `checks` (`lora-proofcheck check`, the
tests) -> `report` (`lora-proofcheck report`) -> `audit` (`lora-proofcheck audit`: real pretrained
heads). `cli` is the command line, `benchmarks` the timings.

>>> import lora_proofcheck as lp
>>> p = lp.LoRAProblem.random(L=256, d=4, r=2, adapt="QKV", logit_bound=1.0, seed=0)
>>> sorted(lp.exact_gradients(p))
['A_K', 'A_Q', 'A_V', 'B_K', 'B_Q', 'B_V']
"""

from ._lib.version import __version__
from .audit.api import audit_model
from .errors import AboveThresholdError, InvalidInputError, InvalidTypeError, ProofcheckError
from .gradients.a_posteriori import APosterioriBound, a_posteriori_bound
from .gradients.approx import ApproxResult, approx_gradients
from .gradients.exact_path import exact_gradients, loss
from .gradients.peers import peer_gradients
from .gradients.planner import Plan, logit_bound, plan, threshold_report
from .problem import MODULES, LoRAProblem

__all__ = [
    "APosterioriBound",
    "AboveThresholdError",
    "ApproxResult",
    "InvalidInputError",
    "InvalidTypeError",
    "LoRAProblem",
    "MODULES",
    "Plan",
    "ProofcheckError",
    "a_posteriori_bound",
    "approx_gradients",
    "audit_model",
    "exact_gradients",
    "logit_bound",
    "loss",
    "peer_gradients",
    "plan",
    "threshold_report",
    "__version__",
]
