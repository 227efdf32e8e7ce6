"""Independent NumPy forward passes (test-only oracles): BERT/MiniLM and Llama from raw weights, with the
softmax or Softmax_1 (normaliser offset n) in every layer, and llama.cpp's GGUF Q/K permutation.

Written from the architectures' definitions, not from transformers' or the package's code: float64
throughout. Test modules reach them through the `oracles` fixture (conftest.py).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf, log_softmax


def softmax_n(S, n: float = 0.0):
    """e^S_ij / (n + sum_l e^S_il) row-wise (n = 0: softmax); masked entries are -inf. Shifted by
    m = max(0, row max), so that n e^-m cannot overflow."""
    m = np.maximum(np.max(S, axis=-1, keepdims=True), 0.0 if n else -np.inf)
    E = np.exp(S - m)
    return E / (E.sum(axis=-1, keepdims=True) + n * np.exp(-m))


def _ln(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _split(x, d_h):
    """(L, n d_h) -> (n, L, d_h)."""
    return x.reshape(x.shape[0], -1, d_h).transpose(1, 0, 2)


def bert_forward(weights: dict, ids, *, n_heads: int, eps: float = 1e-12, n: float = 0.0) -> list:
    """Post-LN BERT encoder (absolute positions, token type 0, exact-erf GELU). Per layer:
    X (the attention input), q, k, v per head (bias included), ctx (softmax(S) v per head)."""
    W = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    ids = np.asarray(ids)
    L = len(ids)
    x = (
        W["embeddings.word_embeddings.weight"][ids]
        + W["embeddings.position_embeddings.weight"][:L]
        + W["embeddings.token_type_embeddings.weight"][0]
    )
    x = _ln(x, W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"], eps)
    out, i = [], 0
    while f"encoder.layer.{i}.attention.self.query.weight" in W:
        p = f"encoder.layer.{i}."
        lin = lambda name, h: h @ W[p + name + ".weight"].T + W[p + name + ".bias"]  # noqa: E731
        D = x.shape[1]
        d_h = D // n_heads
        q, k, v = (_split(lin(f"attention.self.{n}", x), d_h) for n in ("query", "key", "value"))
        P = softmax_n(q @ k.transpose(0, 2, 1) / math.sqrt(d_h), n)
        ctx = P @ v
        out.append({"X": x, "q": q, "k": k, "v": v, "ctx": ctx})
        a = lin("attention.output.dense", ctx.transpose(1, 0, 2).reshape(L, D))
        x = _ln(
            a + x, W[p + "attention.output.LayerNorm.weight"], W[p + "attention.output.LayerNorm.bias"], eps
        )
        h = lin("intermediate.dense", x)
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
        x = _ln(
            lin("output.dense", h) + x, W[p + "output.LayerNorm.weight"], W[p + "output.LayerNorm.bias"], eps
        )
        i += 1
    return out


def _rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def llama_forward(
    weights: dict,
    ids,
    *,
    n_heads: int,
    n_kv_heads: int,
    theta: float,
    eps: float,
    n: float = 0.0,
    n_layers: int | None = None,
) -> dict:
    """Pre-RMSNorm Llama decoder with RoPE (rotate-half convention, inv_freq = theta^(-2i/d_h)),
    GQA (query head h reads KV head h // (n_heads / n_kv_heads)), causal mask, SiLU-gated MLP.
    Returns per-layer X, q/k before and after RoPE, v, and the next-token NLL per token (all layers, or
    the first `n_layers` without the NLL). `weights` may lack any tensor the layers run do not read."""
    W = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    ids = np.asarray(ids)
    L = len(ids)
    x = W["model.embed_tokens.weight"][ids]
    D = x.shape[1]
    d_h = D // n_heads
    inv_freq = 1.0 / theta ** (np.arange(0, d_h, 2) / d_h)
    ang = np.outer(np.arange(L), inv_freq)
    cos, sin = np.cos(np.concatenate([ang, ang], 1)), np.sin(np.concatenate([ang, ang], 1))
    rot = lambda t: t * cos + np.concatenate([-t[..., d_h // 2 :], t[..., : d_h // 2]], -1) * sin  # noqa: E731
    causal = np.tril(np.ones((L, L), dtype=bool))
    layers, i = [], 0
    while f"model.layers.{i}.self_attn.q_proj.weight" in W:
        p = f"model.layers.{i}."
        h = _rms(x, W[p + "input_layernorm.weight"], eps)
        qp, kp, v = (_split(h @ W[p + f"self_attn.{m}_proj.weight"].T, d_h) for m in "qkv")
        q, k = rot(qp), rot(kp)
        rep = n_heads // n_kv_heads
        kk, vv = np.repeat(k, rep, axis=0), np.repeat(v, rep, axis=0)
        S = np.where(causal, q @ kk.transpose(0, 2, 1) / math.sqrt(d_h), -np.inf)
        ctx = softmax_n(S, n) @ vv
        layers.append({"X": h, "q_proj": qp, "k_proj": kp, "q": q, "k": k, "v": v, "ctx": ctx})
        if n_layers is not None and len(layers) == n_layers:
            return {"layers": layers}  # the first n_layers only: no output head
        x = x + ctx.transpose(1, 0, 2).reshape(L, D) @ W[p + "self_attn.o_proj.weight"].T
        h = _rms(x, W[p + "post_attention_layernorm.weight"], eps)
        g = h @ W[p + "mlp.gate_proj.weight"].T
        x = (
            x
            + ((g / (1 + np.exp(-g))) * (h @ W[p + "mlp.up_proj.weight"].T)) @ W[p + "mlp.down_proj.weight"].T
        )
        i += 1
    x = _rms(x, W["model.norm.weight"], eps)
    head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    logp = log_softmax(x @ head.T, axis=-1)
    nll = float(-logp[np.arange(L - 1), ids[1:]].mean())
    return {"layers": layers, "nll_per_token": nll}


def gguf_unpermute(w, n_head: int):
    """Inverse of llama.cpp's convert permute of the Q/K weights (GGUF stores them permuted)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_permute(w, n_head: int):
    """llama.cpp's convert permute (HF -> GGUF) of the Q/K weights."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
