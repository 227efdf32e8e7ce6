"""The examples in the public API's docstrings run and print what they say (numpydoc `Examples`)."""

from __future__ import annotations

import doctest
import importlib

import pytest

PUBLIC_MODULES = (
    "lora_proofcheck",
    "lora_proofcheck.problem",
    "lora_proofcheck.gradients.exact_path",
    "lora_proofcheck.gradients.approx",
    "lora_proofcheck.gradients.a_posteriori",
    "lora_proofcheck.gradients.peers",
    "lora_proofcheck.gradients.planner",
    "lora_proofcheck.gradients.costs",
    "lora_proofcheck.derivations.registry",
    "lora_proofcheck._lib.validate",
    "lora_proofcheck._lib.jsonable",
)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
    assert result.attempted > 0, f"{name} has no examples"


@pytest.mark.parametrize("name", ["a_posteriori_bound", "approx_gradients", "audit_model", "exact_gradients", "loss", "plan", "threshold_report",
                                  "logit_bound", "LoRAProblem", "peer_gradients"])
def test_public_api_has_numpydoc_sections(name):
    import lora_proofcheck as lp

    doc = getattr(lp, name).__doc__ or ""
    assert "Parameters\n    ----------" in doc and "Examples\n    --------" in doc, name
