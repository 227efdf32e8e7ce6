"""Oracles of the peer approximations (`gradients/peers.py`): dense, first principles, never the
generated kernels.

`approx_kernel` writes a frozen `PeerKernel` (duck-typed: method, poly, omega, rows, cols) out as the
dense L x L_kv matrix E~ ≈ exp(S), in NumPy or PyTorch.  From it: the approximate loss, its central
differences and its PyTorch autograd gradient (the MODEL gradient, as a practitioner gets it), and
the exact gradient formulas at the dense F~ (the PLUG-IN gradient, `oracles.dense_gradients`).
"""

from __future__ import annotations

import math

import numpy as np

from ..problem import LoRAProblem
from .oracles import central_differences, dense_gradients, host_inputs

__all__ = ["approx_finite_difference_gradients", "approx_kernel", "approx_reference_loss", "dense_plugin_gradients",
           "torch_approx_model_gradients"]


def _effective_weights(h: dict, scale: float) -> dict:
    return {m: h["W"][m] + scale * h["B"][m] @ h["A"][m] if m in h["A"] else h["W"][m] for m in "QKV"}


def approx_kernel(kern, C1, C2, beta, lib=np, stabilize=True):
    """E~ (N, L, L_kv) of a frozen peer kernel, written out densely (NumPy or torch arrays).

    taylor / chebyshev: p(S) by Horner on S = beta C1 C2^T; favor+: phi(q) phi(k)^T with phi from its
    formula, with Performer's max stabilisers unless `stabilize` is False (they rescale rows of E~
    and E~ as a whole, which F~ does not see for softmax; without them exp underflows once q and k
    are unbalanced; under autograd they are differentiated through, as a practitioner's code does);
    support-basis: exp(S) on the large rows and columns, p(S) elsewhere (masks from `kern`)."""
    tr = (lambda a: np.swapaxes(a, -1, -2)) if lib is np else (lambda a: a.transpose(-1, -2))
    S = beta * C1 @ tr(C2)
    if kern.method == "favor+":
        s = math.sqrt(abs(beta))
        q, k = math.copysign(s, beta) * C1, s * C2
        omega = kern.omega if lib is np else lib.tensor(kern.omega)
        ratio = 1.0 / math.sqrt(kern.omega.shape[0])

        def phi(x, query):
            z = x @ tr(omega) - (x * x).sum(-1)[..., None] / 2
            if stabilize:
                if lib is np:
                    z = z - (z.max(-1, keepdims=True) if query else z.max((-2, -1), keepdims=True))
                else:
                    z = z - (z.amax(-1, keepdim=True) if query else z.amax((-2, -1), keepdim=True))
            return ratio * lib.exp(z)

        return phi(q, True) @ tr(phi(k, False))
    coeffs = kern.poly.coefficients_float()
    P = coeffs[-1] + 0 * S
    for a in reversed(coeffs[:-1]):
        P = P * S + a
    if kern.method != "support-basis":
        return P
    big = kern.rows[:, :, None] | kern.cols[:, None, :]
    if lib is not np:
        big = lib.tensor(big)
    return lib.where(big, lib.exp(S), P)


def approx_reference_loss(h: dict, kern, alpha: float, beta: float, r: int, n: float = 0.0) -> float:
    """1/(2N) sum ||diag(E~ 1 + n)^-1 E~ X' W_V - Y||^2 with E~ = `approx_kernel` (float64, dense)."""
    W = _effective_weights(h, alpha / r)
    E = approx_kernel(kern, h["X"] @ W["Q"], h["X_kv"] @ W["K"], beta)
    O = (E / (E.sum(-1, keepdims=True) + n)) @ (h["X_kv"] @ W["V"])
    return float(np.sum((O - h["Y"]) ** 2) / (2 * h["X"].shape[0]))


def approx_finite_difference_gradients(problem: LoRAProblem, kern, step: float = 1e-6) -> dict:
    """Central differences of `approx_reference_loss` (the kernel frozen) in every A_mu, B_mu entry."""
    n = problem.normalizer_offset
    return central_differences(
        problem, lambda h: approx_reference_loss(h, kern, problem.alpha, problem.beta, problem.r, n), step)


def torch_approx_model_gradients(problem: LoRAProblem, kern) -> tuple[float, dict]:
    """Loss and dL/dA, dL/dB by PyTorch autograd through the dense approximate attention (float64),
    FAVOR+ with Performer's stabilisers in the graph: the model gradient as a practitioner gets it."""
    import torch  # noqa: PLC0415 - test-only oracle: never imported unless asked for

    h = host_inputs(problem)
    leaf = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)  # noqa: E731
    A = {m: leaf(a) for m, a in h["A"].items()}
    B = {m: leaf(b) for m, b in h["B"].items()}
    W = {m: torch.tensor(h["W"][m]) + problem.scale * B[m] @ A[m] if m in A else torch.tensor(h["W"][m])
         for m in "QKV"}
    X, Xkv, Y = (torch.tensor(h[k]) for k in ("X", "X_kv", "Y"))
    E = approx_kernel(kern, X @ W["Q"], Xkv @ W["K"], problem.beta, lib=torch)
    O = (E / (E.sum(-1, keepdim=True) + problem.normalizer_offset)) @ (Xkv @ W["V"])
    loss = ((O - Y) ** 2).sum() / (2 * X.shape[0])
    loss.backward()
    grads = {f"A_{m}": A[m].grad.numpy() for m in A} | {f"B_{m}": B[m].grad.numpy() for m in B}
    return float(loss.detach()), grads


def dense_plugin_gradients(problem: LoRAProblem, kern) -> dict:
    """The plug-in gradient densely: the exact formulas (`oracles.dense_gradients`) at
    F~ = diag(E~ 1 + n)^-1 E~, E~ = `approx_kernel` of the same host projections."""
    h = host_inputs(problem)
    W = _effective_weights(h, problem.scale)
    E = approx_kernel(kern, h["X"] @ W["Q"], h["X_kv"] @ W["K"], problem.beta)
    return dense_gradients(problem, kernel=lambda S: E)
