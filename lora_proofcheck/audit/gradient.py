"""The LoRA gradient on a real head (issue 12, item 3): the paper's problem built from real X and W.

For one head of a bidirectional model without a position transform inside attention (MiniLM:
absolute positions are added to the embeddings, so q = X'W'_Q exactly):

    X'    = [X, 1]                  (L, D + 1)  the layer's input hidden states, bias-augmented
    W'_mu = [W_mu^h ; b_mu^h | 0]   (D + 1, D + 1)  the head's d_h columns of the pretrained
                                    projection with its bias as the last row, zero-padded to the
                                    paper's square shape (so X'W'_mu = [X W^h + b^h | 0])
    beta  = the model's scaling 1/sqrt(d_h);  n = the attention's normaliser offset (0: softmax)

so the problem's logits and attention output are the head's own. LoRA adapts Q and V with rank
r = 4, alpha = 8, at a generic point (A ~ N(0, 1/d), B ~ 0.01 N(0, 1/d), seeded): at the usual
initialisation B = 0 the gradient in A vanishes identically, which would test nothing.

Target Y (stated in the output, `TARGET`): the head's pretrained attention output
O* = softmax_n(S) X'W'_V (float64, adapters off) plus Gaussian noise of `noise` times the RMS of O*
on the head's d_h columns, 0 on the padded columns: a denoising target that keeps the residual, and
so the gradient, at the scale of real activations.

`gradient_check` then computes the exact gradient (`exact_gradients`, the generated kernels),
PyTorch autograd (`testing.torch_gradients`, float64) as the independent oracle, and records what
`approx_gradients` and its certificate say at relative tolerances of the gradient's own scale
(declines are recorded with their reason, whatever raised them), the exact-path fallback, and a
forced low degree with its measured error next to its certified bound.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .._lib.validate import check_int
from ..certification import adaptive, polynomial
from ..errors import InvalidInputError, ProofcheckError
from ..gradients.approx import approx_gradients
from ..gradients.exact_path import exact_gradients, loss
from ..gradients.planner import largest_cheaper_degree, threshold_report
from ..kernels.features import feature_rank
from ..problem import LoRAProblem
from ..testing.oracles import attention_weights, max_abs, max_abs_error, torch_gradients
from . import capture as cap_mod
from . import loaders
from .inputs import check_attentions, read_text

__all__ = ["TARGET", "gradient_check", "head_lora_problem", "problem_from_capture", "real_head_problem"]

TARGET = (
    "Y = O* + noise * rms(O*) * Z on the head's d_h columns, 0 on the padded columns; O* = the head's "
    "pretrained attention output softmax_n(beta X'W'_Q (X'W'_K)^T) X'W'_V in float64 (n = the attention's "
    "normaliser offset, 0 for softmax), Z ~ N(0, 1) seeded"
)


def _head_block(W, b, cols, D: int) -> np.ndarray:
    out = np.zeros((D + 1, D + 1))
    out[:D, : len(cols)] = W[:, cols]
    if b is not None:
        out[D, : len(cols)] = b[cols]
    return out


def head_lora_problem(
    X,
    weights: dict,
    *,
    head: int,
    head_dim: int,
    kv_head: int | None = None,
    scaling: float,
    normalizer_offset: float = 0.0,
    noise: float = 0.1,
    r: int = 4,
    alpha: float = 8.0,
    adapt: str = "QV",
    seed: int = 0,
) -> tuple[LoRAProblem, dict]:
    """(LoRAProblem, info) for one head, from the layer input X (L, D) and the projections
    `weights` = {"Q": (W (D, n d_h), b or None), "K": ..., "V": ...} (see the module docstring)."""
    X = np.asarray(X, np.float64)
    if X.ndim != 2:
        raise InvalidInputError(f"X must be (L, D), got shape {X.shape}")
    L, D = X.shape
    kv_head = head if kv_head is None else kv_head
    cols = {"Q": np.arange(head * head_dim, (head + 1) * head_dim)}
    cols["K"] = cols["V"] = np.arange(kv_head * head_dim, (kv_head + 1) * head_dim)
    Xa = np.concatenate([X, np.ones((L, 1))], axis=1)
    W = {m: _head_block(weights[m][0], weights[m][1], cols[m], D) for m in "QKV"}
    d = D + 1
    S = scaling * (Xa @ W["Q"]) @ (Xa @ W["K"]).T
    O = attention_weights(S, normalizer_offset) @ (Xa @ W["V"])
    rng = np.random.default_rng(seed)
    rms = float(np.sqrt(np.mean(O[:, :head_dim] ** 2)))
    Y = O.copy()
    Y[:, :head_dim] += noise * rms * rng.standard_normal((L, head_dim))
    A = {m: rng.standard_normal((r, d)) / math.sqrt(d) for m in adapt}
    B = {m: 0.01 * rng.standard_normal((d, r)) / math.sqrt(d) for m in adapt}
    problem = LoRAProblem(
        Xa, Y, W, A, B, alpha=alpha, beta=float(scaling), normalizer_offset=normalizer_offset
    )
    info = {
        "L": L,
        "d": d,
        "head_dim": head_dim,
        "head": head,
        "kv_head": kv_head,
        "r": r,
        "alpha": alpha,
        "adapt": adapt,
        "beta": float(scaling),
        "normalizer_offset": float(normalizer_offset),
        "seed": seed,
        "noise": noise,
        "target": TARGET,
        "adapters": "A ~ N(0, 1/d), B ~ 0.01 N(0, 1/d) (seeded; B = 0 would make dL/dA vanish)",
        "X": "the layer's input hidden states (the Q projection's input), with a column of ones",
        "W": "W'_mu = [W_mu^h; b_mu^h] (the head's columns and bias), zero-padded to (d, d)",
        "rms_O_star": rms,
    }
    return problem, info


def real_head_problem(
    model="minilm",
    *,
    L: int = 128,
    layer: int = 0,
    head: int = 7,
    text=None,
    attention: str = "softmax",
    dtype: str = "float32",
    noise: float = 0.1,
    r: int = 4,
    alpha: float = 8.0,
    adapt: str = "QV",
    seed: int = 0,
) -> tuple[LoRAProblem, dict]:
    """The paper's LoRA problem of one real head: (LoRAProblem, info).

    Runs `model` ("minilm", a model folder or an already loaded `loaders.LoadedModel`) on the first L
    tokens of `text` (a file; None: the text shipped with the package) with its attention as
    `attention` ("softmax" or "softmax_1"), takes layer `layer`'s input X and the pretrained Q/K/V
    weights of head `head`, and builds the problem of `head_lora_problem` (target Y: info["target"]).
    Only for heads whose logits are X'W'_Q (X'W'_K)^T: bidirectional attention without a position
    transform inside it (no RoPE); other models raise InvalidInputError naming `model`.

    Examples
    --------
    >>> from lora_proofcheck.audit import real_head_problem
    >>> problem, info = real_head_problem("minilm", L=128, layer=0, head=7)  # doctest: +SKIP
    >>> problem.L, problem.d, problem.adapted                              # doctest: +SKIP
    (128, 385, ('Q', 'V'))
    """
    L = check_int("L", L, 2)
    layer = check_int("layer", layer, 0)
    head = check_int("head", head, 0)
    content, text_info = read_text(text)
    lm = model if isinstance(model, loaders.LoadedModel) else loaders.load_model(model, dtype=dtype)
    cap = lm.capture(lm.tokenize(content, L), attention=check_attentions(attention)[0])
    if layer >= lm.n_layers:
        raise InvalidInputError(
            f"layer must be < {lm.n_layers} (the layers of model {lm.source.name!r}), got {layer}"
        )
    if head >= cap.layers[layer].n_heads:
        raise InvalidInputError(
            f"head must be < {cap.layers[layer].n_heads} (the heads of model {lm.source.name!r}), got {head}"
        )
    problem, info = problem_from_capture(
        lm, cap, layer, head, noise=noise, r=r, alpha=alpha, adapt=adapt, seed=seed
    )
    info.update(model=lm.source.name, layer=layer, text=text_info)
    return problem, info


def problem_from_capture(lm, cap, layer: int, head: int, **options) -> tuple[LoRAProblem, dict]:
    """`head_lora_problem` for head (layer, head) of a capture `cap` of the loaded model `lm`; info also
    holds how closely the problem's queries reproduce the captured ones."""
    if cap.position_inside or cap.layers[layer].visible is not None:
        raise InvalidInputError(
            f"model (--model) {lm.source.name!r}: its attention is not the paper's (a position transform "
            "such as RoPE inside attention, or a causal mask), so its LoRA problem cannot be built from X "
            "and W"
        )
    lc = cap.layers[layer]
    d_h = lc.q.shape[-1]
    problem, info = head_lora_problem(
        lc.X,
        lm.projection_weights(layer),
        head=head,
        head_dim=d_h,
        kv_head=lc.kv_head(head),
        scaling=lc.scaling,
        normalizer_offset=cap_mod.ATTENTIONS[cap.attention],
        **options,
    )
    q_problem = (np.asarray(problem.X) @ np.asarray(problem.W["Q"]))[:, :d_h]
    info["attention"] = cap.attention
    info["q_rel_diff_vs_captured"] = float(
        np.abs(q_problem - lc.q[head]).max() / max(float(np.abs(lc.q[head]).max()), 1e-30)
    )
    return problem, info


def gradient_check(
    problem: LoRAProblem, *, rtols=(1e-2, 1e-4), force_degree: int = 1, max_force_rank: int = 100_000
) -> dict:
    """Exact gradient vs PyTorch autograd, and what the approximate path says (module docstring)."""
    t0 = time.perf_counter()
    exact = exact_gradients(problem)
    exact_loss = float(loss(problem))
    t_exact = time.perf_counter() - t0
    torch_loss, oracle = torch_gradients(problem)
    scale = max_abs(oracle)
    err = max_abs_error(exact, oracle)
    try:
        report, norms_reason = threshold_report(problem), ""
    except ProofcheckError as exc:  # what the planner says of this problem, recorded like approx's answer
        report, norms_reason = (
            dict.fromkeys(("logit_bound", "Gamma", "Gamma_over_sqrt_log_L", "norm_X_kv")),
            str(exc),
        )
    out = {
        "loss": exact_loss,
        "torch_loss": torch_loss,
        "loss_rel_diff": abs(exact_loss - torch_loss) / abs(torch_loss),
        "gradient_max_abs": scale,
        "exact_vs_autograd_max_abs": err,
        "exact_vs_autograd_rel": err / scale,
        "per_key_max_abs": {k: float(np.max(np.abs(v))) for k, v in oracle.items()},
        "exact_seconds": t_exact,
        "logit_bound": report["logit_bound"],
        "Gamma": report["Gamma"],
        "Gamma_over_sqrt_log_L": report["Gamma_over_sqrt_log_L"],
        "norm_X_kv": report["norm_X_kv"],
        "threshold_report": norms_reason or "ran",
        "approx": [],
    }
    for rtol in rtols:
        eps = float(rtol) * scale
        entry = {"rtol": float(rtol), "eps": eps}
        try:
            res = approx_gradients(problem, rtol=float(rtol), on_threshold="raise")
        except ProofcheckError as exc:  # declined: above the threshold, or a problem it does not cover
            entry.update(path="declined", error=type(exc).__name__, reason=str(exc))
            if "fallback" not in out:  # the exact path's answer does not depend on eps
                out["fallback"] = _fallback(problem, float(rtol), exact)
        else:
            entry.update(
                path=res.path,
                degree=res.degree,
                rank=res.rank,
                bound=max(res.bound.values()),
                error_vs_exact=max_abs_error(res.grads, exact),
                reason="",
            )
        out["approx"].append(entry)
    out.update(_certificate_view(problem, exact, force_degree, max_force_rank))
    return out


def _fallback(problem, rtol, exact) -> dict:
    try:
        fb = approx_gradients(problem, rtol=rtol, on_threshold="exact")
    except ProofcheckError as exc:
        return {"path": "declined", "error": type(exc).__name__, "reason": str(exc)}
    return {
        "path": fb.path,
        "bound": max(fb.bound.values()),
        "error_vs_exact": max_abs_error(fb.grads, exact),
    }


def _certificate_view(problem, exact, force_degree, max_force_rank) -> dict:
    """The certificate's own answer: the largest degree cheaper than the exact path, and the bound it
    certifies at a forced degree next to that degree's measured error (or why it says nothing)."""
    try:
        cert = adaptive.certify_adaptive(problem)
    except ProofcheckError as exc:
        why = f"{type(exc).__name__}: {exc}"
        return {"largest_cheaper_degree": None, "certificate": why, "forced": {"skipped": why}}
    g_max = largest_cheaper_degree(cert)
    g = force_degree if g_max is None else max(g_max, force_degree)
    rank = feature_rank(problem.d, g)
    forced = {"degree": g, "rank": rank}
    if rank > max_force_rank:
        forced["skipped"] = f"rank {rank} > {max_force_rank}: features too large to form here"
    elif cert.logit_bound > polynomial.MAX_RADIUS:
        forced["skipped"] = f"R = {cert.logit_bound:.4g} beyond the radius certificates are derived for"
    else:
        try:
            res = approx_gradients(problem, degree=g, on_threshold="force")
        except ProofcheckError as exc:  # the plan cannot even run there (no coefficients, overflow)
            forced["skipped"] = f"{type(exc).__name__}: {exc}"
            return {"largest_cheaper_degree": g_max, "certificate": "ran", "forced": forced}
        error = max_abs_error(res.grads, exact)
        bound = max(res.bound.values())
        # an infinite bound certifies nothing: "holds" is only said of a finite one
        forced.update(
            error_vs_exact=error,
            bound=bound,
            delta=res.delta,
            method=res.method,
            cost_ratio=res.cost["ratio"],
            bound_finite=math.isfinite(bound),
            bound_holds=bool(bound >= error) if math.isfinite(bound) else None,
        )
    return {"largest_cheaper_degree": g_max, "certificate": "ran", "forced": forced}
