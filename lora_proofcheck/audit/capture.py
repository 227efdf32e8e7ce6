"""What one forward pass of a transformers model computes in every attention layer, recorded per head.

transformers runs the model; the audit only records:

* forward hooks on the Q/K/V projections (`nn.Linear` children named query/key/value or
  q_proj/k_proj/v_proj) record the projection input X (the hidden state the heads read, after any
  input norm) and the outputs X W + b;
* an attention function registered with transformers' `AttentionInterface` (and an eager entry in
  `AttentionMaskInterface`, so masks are explicit) records q and k exactly as the attention kernel
  receives them (after RoPE or any other position transform, before the GQA repeat), the mask
  (causal and sliding-window masks are read, not assumed) and the scaling. With the softmax it then
  runs transformers' own SDPA kernel, so the model's outputs are unchanged; with Softmax_1
  (`ATTENTIONS["softmax_1"]`, normaliser offset n = 1) it computes e^S / (n + sum e^S) V itself,
  which changes every later layer's input.

torch is imported only inside the functions that run a model (the audit extra).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import numpy as np

from .._lib.xp import to_host64
from ..errors import InvalidInputError

__all__ = [
    "ATTENTIONS",
    "ATTENTION_NAME",
    "POSITION_TOLERANCE",
    "Capture",
    "LayerCapture",
    "Recorder",
    "recording",
    "register",
    "softmax_n_attention",
]

#: name registered with transformers' AttentionInterface / AttentionMaskInterface
ATTENTION_NAME = "lora_proofcheck_capture"
#: attention variants the audit can run a model with -> normaliser offset n of e^S / (n + sum e^S)
ATTENTIONS = {"softmax": 0.0, "softmax_1": 1.0}
#: a position transform inside attention shows as q differing from the projection output by more
#: than this relative amount (float32 rounding of a RoPE-free pass is ~1e-7)
POSITION_TOLERANCE = 1e-5


@dataclass
class LayerCapture:
    """What one attention layer computed on one sequence (float64 host copies, batch dimension gone).

    X        (L, D)        input of the Q projection: the hidden state the heads read
    q_proj   (H, L, d_h)   X W_Q + b_Q per head (the paper's X'W'_Q; before RoPE)
    k_proj, v_proj (H_kv, L, d_h)
    q        (H, L, d_h)   queries as the attention kernel received them (after RoPE, if any)
    k, v     (H_kv, L, d_h)
    visible  (L, L) bool, or None when every key is visible to every query
    scaling  the logit scale beta (S = beta q k^T)
    output   (H, L, d_h)   the attention kernel's output per head (softmax_n(S) v)
    """

    layer: int
    X: np.ndarray
    q_proj: np.ndarray
    k_proj: np.ndarray
    v_proj: np.ndarray
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    visible: np.ndarray | None
    scaling: float
    output: np.ndarray

    @property
    def n_heads(self) -> int:
        return self.q.shape[0]

    @property
    def n_kv_heads(self) -> int:
        return self.k.shape[0]

    def kv_head(self, head: int) -> int:
        """The KV head query head `head` reads (GQA: transformers' repeat_kv order)."""
        return head // (self.n_heads // self.n_kv_heads)

    @property
    def position_inside(self) -> bool:
        """Whether attention transforms q after the projection (RoPE): then no fixed W_Q gives q."""
        scale = max(float(np.abs(self.q_proj).max()), 1e-30)
        return float(np.abs(self.q - self.q_proj).max()) > POSITION_TOLERANCE * scale


@dataclass
class Capture:
    """One forward pass on L tokens: every layer's capture and the sanity figures."""

    L: int
    token_ids: list
    layers: list
    attention: str = "softmax"
    sanity: dict = field(default_factory=dict)

    @property
    def position_inside(self) -> bool:
        return any(lc.position_inside for lc in self.layers)


def softmax_n_attention(query, key, value, mask, scaling: float, n: float):
    """softmax_n(S) V with S = scaling q k^T + mask and softmax_n(S)_ij = e^S_ij / (n + sum_l e^S_il).

    torch tensors (batch, heads, L, d_h); key/value may have fewer heads (GQA: repeated in
    repeat_kv order). Stable form: m = max(0, max_j S_ij), e^(S - m) / (sum e^(S - m) + n e^-m)
    (shifting by the row max alone could overflow n e^-m). Returns (output (batch, L, heads, d_h),
    weights)."""
    import torch  # noqa: PLC0415 - the audit extra; never imported by the core package

    rep = query.shape[1] // key.shape[1]
    if rep > 1:
        key, value = key.repeat_interleave(rep, dim=1), value.repeat_interleave(rep, dim=1)
    S = torch.matmul(query, key.transpose(2, 3)) * scaling
    if mask is not None:
        S = S + mask[..., : key.shape[-2]]
    m = S.amax(dim=-1, keepdim=True).clamp(min=0.0)
    E = torch.exp(S - m)
    P = E / (E.sum(dim=-1, keepdim=True) + n * torch.exp(-m))
    return torch.matmul(P, value).transpose(1, 2).contiguous(), P


class Recorder:
    """Collects the projection hooks' and the attention function's tensors, per layer, and says which
    normaliser offset the attention function applies while it is active."""

    def __init__(self, layer_of: dict, normalizer_offset: float = 0.0):
        self.layer_of = layer_of
        self.normalizer_offset = float(normalizer_offset)
        self.proj: dict = {}
        self.attn: dict = {}
        self.out: dict = {}

    def projection(self, layer: int, which: str, inp, out) -> None:
        if which == "Q":
            self.proj[(layer, "X")] = inp[0].detach()
        self.proj[(layer, which)] = out.detach()

    def attention(self, module, query, key, value, mask, scaling) -> None:
        self.attn[self.layer_of[id(module)]] = (
            query.detach(),
            key.detach(),
            value.detach(),
            None if mask is None else mask.detach(),
            scaling,
            module,
        )

    def attention_output(self, module, out) -> None:
        self.out[self.layer_of[id(module)]] = out.detach()

    # -- what was recorded, as host arrays ------------------------------------------------------
    def layer(self, i: int) -> LayerCapture:
        query, key, value, mask, scaling, module = self.attn[i]
        d_h = query.shape[-1]
        q, k, v = (to_host64(t)[0] for t in (query, key, value))  # (n, L, d_h)
        visible = None
        if mask is not None:
            m = to_host64(mask)
            m = m.reshape(-1, m.shape[-2], m.shape[-1])[0]
            visible = m == 0.0  # eager masks: 0 where visible, the dtype's min where masked
            if bool(visible.all()):
                visible = None
        elif getattr(module, "is_causal", False):
            visible = np.tril(np.ones((q.shape[1], k.shape[1]), dtype=bool))
        if scaling is None:
            scaling = 1.0 / math.sqrt(d_h)
        out = to_host64(self.out[i])[0]  # (L, n, d_h)
        return LayerCapture(
            layer=i,
            X=to_host64(self.proj[(i, "X")])[0],
            q_proj=_heads(self.proj[(i, "Q")], d_h),
            k_proj=_heads(self.proj[(i, "K")], d_h),
            v_proj=_heads(self.proj[(i, "V")], d_h),
            q=q,
            k=k,
            v=v,
            visible=visible,
            scaling=float(scaling),
            output=np.ascontiguousarray(out.transpose(1, 0, 2)),
        )


_ACTIVE: list = []  # the recorder of the capture in progress (at most one)


@contextlib.contextmanager
def recording(recorder: Recorder):
    """Make `recorder` the one the registered attention function reports to (and takes n from)."""
    if _ACTIVE:
        raise InvalidInputError("model (--model): one capture at a time (a capture is already running)")
    _ACTIVE.append(recorder)
    try:
        yield recorder
    finally:
        _ACTIVE.remove(recorder)


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention function: record what the kernel sees, then run softmax_n attention."""
    import transformers  # noqa: PLC0415 - the audit extra

    rec = _ACTIVE[-1] if _ACTIVE else None
    if rec is not None:
        rec.attention(module, query, key, value, attention_mask, scaling)
    if rec is None or rec.normalizer_offset == 0.0:
        sdpa = transformers.modeling_utils.ALL_ATTENTION_FUNCTIONS["sdpa"]
        out = sdpa(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    else:
        scale = 1.0 / math.sqrt(query.shape[-1]) if scaling is None else scaling
        out = softmax_n_attention(query, key, value, attention_mask, scale, rec.normalizer_offset)
    if rec is not None:
        rec.attention_output(module, out[0])
    return out


def register() -> None:
    """Register the capturing attention function (and eager masks) under ATTENTION_NAME."""
    import transformers  # noqa: PLC0415 - the audit extra
    from transformers.masking_utils import eager_mask  # noqa: PLC0415

    transformers.AttentionInterface.register(ATTENTION_NAME, _attention)
    # eager masks are explicit additive (L, L) masks: causal/sliding structure is read off them
    transformers.AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)


def _heads(t, d_h: int) -> np.ndarray:
    """(1, L, n d_h) projection output -> (n, L, d_h)."""
    a = to_host64(t)[0]
    return np.ascontiguousarray(a.reshape(a.shape[0], -1, d_h).transpose(1, 0, 2))
