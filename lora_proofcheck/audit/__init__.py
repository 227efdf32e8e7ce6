"""Where real attention heads sit: a per-head audit of real pretrained transformers against the paper's
norm threshold (`lora-proofcheck audit`, `lp.audit_model`).

`loaders` finds and loads the models (offline, hash-checked), `capture` records what transformers
computes in every attention layer (optionally with Softmax_1 switched in), `figures` turns one head's
q and k into the paper's norms, the certificate's logit bound and what the certified path would need,
`gradient` builds the paper's LoRA problem of one real head, `api` runs it all, `output` writes
audit.json / audit.md / audit.html. Importing it imports no model library: torch and transformers
(the `audit` extra) load when a model does.
"""

from .api import (
    DEFAULT_ATTENTION,
    DEFAULT_LENGTHS,
    DEFAULT_MODEL,
    SCHEMA_VERSION,
    SOFTMAX_1_SCOPE,
    audit_model,
)
from .capture import ATTENTIONS
from .figures import certifiable_frontier, certified_requirement, head_figures, head_problem, regime
from .gradient import gradient_check, head_lora_problem, real_head_problem
from .loaders import KNOWN_MODELS, LoadedModel, load_model, resolve_model

__all__ = [
    "ATTENTIONS",
    "DEFAULT_ATTENTION",
    "DEFAULT_LENGTHS",
    "DEFAULT_MODEL",
    "KNOWN_MODELS",
    "SCHEMA_VERSION",
    "SOFTMAX_1_SCOPE",
    "LoadedModel",
    "audit_model",
    "certifiable_frontier",
    "certified_requirement",
    "gradient_check",
    "head_figures",
    "head_lora_problem",
    "head_problem",
    "load_model",
    "real_head_problem",
    "regime",
    "resolve_model",
]
