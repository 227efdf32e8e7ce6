"""The attention capture with Softmax_1 switched in: the kernel against NumPy, and whole models run with
e^S / (1 + sum e^S) in every layer against NumPy forward passes with the same normaliser."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lora_proofcheck.audit import capture, loaders
from lora_proofcheck.errors import InvalidInputError

TOL32 = 128 * 2.0**-24


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.mark.parametrize("n", [0.0, 1.0, 7.5])
@pytest.mark.parametrize("causal", [False, True])
def test_softmax_n_attention_matches_numpy(oracles, n, causal):
    """GQA (4 query heads on 2 KV heads), an additive eager mask, logits up to ~40 (e^S overflows float32
    without the max shift; with n > 0 the shift must be max(0, row max))."""
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((1, h, 12, 8)) * s for h, s in ((4, 4.0), (2, 4.0), (2, 1.0)))
    mask = None
    if causal:
        mask = np.where(np.tril(np.ones((12, 12), bool)), 0.0, np.finfo(np.float64).min)[None, None]
    out, P = capture.softmax_n_attention(
        *(torch.tensor(a) for a in (q, k, v)), None if mask is None else torch.tensor(mask), 0.5, n
    )
    kk, vv = np.repeat(k, 2, axis=1), np.repeat(v, 2, axis=1)
    S = 0.5 * q @ kk.transpose(0, 1, 3, 2)
    if causal:
        S = np.where(mask == 0.0, S, -np.inf)
    want = oracles.softmax_n(S, n)
    assert np.abs(S).max() > 20
    assert np.allclose(P.numpy(), want, rtol=1e-13, atol=1e-300)
    assert np.allclose(out.numpy(), (want @ vv).transpose(0, 2, 1, 3), rtol=1e-12, atol=1e-14)
    rows = want.sum(-1)
    assert np.all(rows <= 1.0 + 1e-15) and (n == 0.0) == bool(np.allclose(rows, 1.0, rtol=1e-14))
    if n == 0.0:  # the softmax path agrees with torch's own kernel
        ref = torch.nn.functional.scaled_dot_product_attention(
            torch.tensor(q),
            torch.tensor(kk),
            torch.tensor(vv),
            scale=0.5,
            attn_mask=None if mask is None else torch.tensor(mask),
        )
        assert np.allclose(out.numpy(), ref.transpose(1, 2).numpy(), rtol=1e-12, atol=1e-14)


def _weights(folder):
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def test_tiny_bert_with_softmax_1_matches_numpy(tiny_bert_dir, text, oracles):
    lm = loaders.load_model(tiny_bert_dir)
    ids = lm.tokenize(text, 48)
    base, alt = lm.capture(ids), lm.capture(ids, attention="softmax_1")
    ref = oracles.bert_forward(_weights(tiny_bert_dir), ids, n_heads=4, n=1.0)
    assert alt.attention == "softmax_1" and base.attention == "softmax"
    for lc, r in zip(alt.layers, ref, strict=True):
        for name in ("X", "q", "k", "v", "output"):
            assert _rel(getattr(lc, name), r["ctx" if name == "output" else name]) <= TOL32, (lc.layer, name)
    # layer 0 reads the embeddings either way; the switch changes everything after its attention
    assert np.array_equal(alt.layers[0].q, base.layers[0].q) and np.array_equal(
        alt.layers[0].k, base.layers[0].k
    )
    assert _rel(alt.layers[0].output, base.layers[0].output) > 1e-4
    assert _rel(alt.layers[1].X, base.layers[1].X) > 1e-4
    assert alt.sanity["mean_pooled_norm"] != base.sanity["mean_pooled_norm"]


def test_tiny_llama_with_softmax_1_matches_numpy(tiny_llama, text, oracles):
    folder, model, _ = tiny_llama
    lm = loaders.load_model(folder)
    ids = lm.tokenize(text, 40)
    alt = lm.capture(ids, attention="softmax_1")
    sd = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    ref = oracles.llama_forward(sd, ids, n_heads=4, n_kv_heads=2, theta=10000.0, eps=1e-5, n=1.0)
    for lc, r in zip(alt.layers, ref["layers"], strict=True):
        assert lc.visible is not None  # the causal mask is still the model's
        for name in ("X", "q", "k", "v"):
            assert _rel(getattr(lc, name), r[name]) <= TOL32, (lc.layer, name)
        assert _rel(lc.output, r["ctx"]) <= TOL32
    assert alt.sanity["nll_per_token"] == pytest.approx(ref["nll_per_token"], rel=1e-5)


def test_one_capture_at_a_time():
    rec = capture.Recorder({})
    with capture.recording(rec):
        with pytest.raises(InvalidInputError, match="one capture at a time"):
            with capture.recording(capture.Recorder({})):
                pass
    with capture.recording(rec):  # released after the first
        pass
