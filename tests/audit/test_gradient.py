"""The paper's LoRA problem built from a real head (issue 12, item 3): the problem is the head, its exact
gradient matches two independent oracles, and what the approximate path and its certificate answer is
recorded (declines included, with their reason)."""

from __future__ import annotations

import numpy as np
import pytest

from lora_proofcheck.audit import api, gradient, loaders
from lora_proofcheck.errors import AboveThresholdError, InvalidInputError
from lora_proofcheck.gradients.approx import approx_gradients
from lora_proofcheck.gradients.exact_path import exact_gradients
from lora_proofcheck.testing import finite_difference_gradients, max_abs_error, torch_gradients


@pytest.fixture(scope="module")
def tiny_captures(tiny_bert_dir, text):
    lm = loaders.load_model(tiny_bert_dir, dtype="float64")
    ids = lm.tokenize(text, 24)
    return lm, {a: lm.capture(ids, attention=a) for a in ("softmax", "softmax_1")}


@pytest.mark.parametrize("attention,n", [("softmax", 0.0), ("softmax_1", 1.0)])
def test_the_problem_is_the_head(tiny_captures, oracles, attention, n):
    lm, caps = tiny_captures
    cap = caps[attention]
    lc = cap.layers[1]
    p, info = gradient.problem_from_capture(lm, cap, 1, 2, noise=0.0)
    X = np.asarray(p.X)
    S = p.beta * (X @ np.asarray(p.W["Q"])) @ (X @ np.asarray(p.W["K"])).T
    O = oracles.softmax_n(S, n) @ (X @ np.asarray(p.W["V"]))
    # with the pretrained weights the problem's attention output is the head's own (float64 pass)
    assert np.abs(O[:, :8] - lc.output[2]).max() <= 1e-12 * np.abs(lc.output[2]).max()
    assert not O[:, 8:].any() and np.allclose(np.asarray(p.Y), O, rtol=1e-14, atol=1e-15)  # noise 0: Y = O*
    assert info["d"] == 33 and p.adapted == ("Q", "V") and p.r == 4 and p.normalizer_offset == n
    assert info["q_rel_diff_vs_captured"] <= 1e-14 and info["attention"] == attention


@pytest.mark.parametrize("attention", ["softmax", "softmax_1"])
def test_exact_gradient_on_a_real_head_matches_finite_differences(tiny_captures, attention):
    """A second oracle besides autograd (the audit's gradient_check uses autograd)."""
    lm, caps = tiny_captures
    p, _ = gradient.problem_from_capture(lm, caps[attention], 0, 0, r=1)
    fd = finite_difference_gradients(p)
    scale = max(float(np.abs(v).max()) for v in fd.values())
    assert max_abs_error(exact_gradients(p), fd) <= 1e-6 * scale


def test_gradient_check_reports_oracle_agreement_and_the_approx_answer(tiny_captures):
    lm, caps = tiny_captures
    p, _ = gradient.problem_from_capture(lm, caps["softmax"], 0, 1)
    out = gradient.gradient_check(p)
    assert out["exact_vs_autograd_rel"] <= 1e-12 and out["threshold_report"] == "ran"
    assert [a["rtol"] for a in out["approx"]] == [1e-2, 1e-4]
    for a in out["approx"]:
        if a["path"] == "declined":
            assert a["reason"] and a["error"] == "AboveThresholdError"
        else:  # the certificate said yes: its bound must hold
            assert a["error_vs_exact"] <= a["bound"] <= a["eps"]
    f = out["forced"]
    assert "skipped" in f or f["bound_holds"] in (True, None)
    assert f.get("bound_holds") is not False


def test_softmax_1_gradient_check_runs_the_certificate(tiny_captures):
    """Softmax_1 (n > 0) is covered by the certificate (`certification/adaptive.py`, S1): the check
    records its answer (the exact path at this size, or a declined call with the real cause), a forced
    degree's finite bound holds, and the exact gradient matches autograd."""
    lm, caps = tiny_captures
    p, _ = gradient.problem_from_capture(lm, caps["softmax_1"], 0, 1)
    assert p.normalizer_offset > 0
    out = gradient.gradient_check(p)
    assert out["exact_vs_autograd_rel"] <= 1e-12 and out["logit_bound"] > 0
    for a in out["approx"]:
        assert a["path"] in ("approx", "exact", "declined")
        if a["path"] == "declined":
            assert a["error"] == "AboveThresholdError" and "normalizer_offset" not in a["reason"]
    f = out["forced"]
    assert "skipped" in f or f["bound_holds"] is (True if f["bound_finite"] else None)


def test_real_minilm_head_problem(minilm):
    """The exported builder on the real MiniLM, L = 128, layer 0, head 7: the head reproduced, the exact
    gradient against PyTorch autograd, and approx_gradients falling back to the exact path (and raising when asked to)."""
    p, info = gradient.real_head_problem(minilm, L=128, layer=0, head=7)
    assert (p.L, p.d, p.adapted, p.normalizer_offset) == (128, 385, ("Q", "V"), 0.0)
    assert info["q_rel_diff_vs_captured"] <= 128 * 2.0**-24 and info["target"].startswith("Y = O*")
    assert info["model"] == "minilm" and info["text"]["source"].startswith("lora_proofcheck/audit/")
    _, oracle = torch_gradients(p)
    scale = max(float(np.abs(v).max()) for v in oracle.values())
    assert max_abs_error(exact_gradients(p), oracle) <= 1e-12 * scale
    res = approx_gradients(p, rtol=1e-2)
    assert res.path == "exact" and res.reason and res.allclose
    with pytest.raises(AboveThresholdError, match="L = 128|above the threshold|rounding floor"):
        approx_gradients(p, rtol=1e-2, on_threshold="raise")


def test_real_head_problem_bad_input(minilm, tiny_llama):
    with pytest.raises(InvalidInputError, match=r"^layer must be < 6"):
        gradient.real_head_problem(minilm, L=16, layer=6)
    with pytest.raises(InvalidInputError, match=r"^head must be < 12"):
        gradient.real_head_problem(minilm, L=16, head=12)
    with pytest.raises(InvalidInputError, match=r"^L must be >= 2"):
        gradient.real_head_problem(minilm, L=1)
    with pytest.raises(InvalidInputError, match=r"--attention"):
        gradient.real_head_problem(minilm, L=16, attention="linear")
    with pytest.raises(InvalidInputError, match=r"--model.*not the paper's"):  # RoPE, causal
        gradient.real_head_problem(tiny_llama[0], L=16, head=0)


def test_no_gradient_problem_for_rope_models(tiny_llama):
    audit = api.audit_model(tiny_llama[0], lengths=(16,), progress=False)
    (g,) = audit["gradient_checks"]
    assert "skipped" in g and "RoPE" in g["skipped"]
