"""Independent oracles and builders shared by the tests, `check` and reports (like opt_einsum.testing).

Nothing here uses the generated kernels: the reference loss is a plain NumPy/SciPy forward pass,
its gradients come from central finite differences or PyTorch autograd.
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from ._xp import to_numpy
from .problem import LoRAProblem


def host_inputs(problem: LoRAProblem) -> dict:
    """The problem's arrays on the host in float64 (batched shapes)."""
    f = lambda a: np.asarray(to_numpy(a), dtype=np.float64)  # noqa: E731
    return {
        "X": f(problem.X3), "X_kv": f(problem.Xkv3), "Y": f(problem.Y3),
        "W": {m: f(w) for m, w in problem.W.items()},
        "A": {m: f(a) for m, a in problem.A.items()},
        "B": {m: f(b) for m, b in problem.B.items()},
    }


def reference_loss(h: dict, alpha: float, beta: float, r: int) -> float:
    """1/(2N) sum_n ||softmax(beta X W_Q W_K^T X'^T) X' W_V - Y||_F^2 from first principles."""
    W = {m: h["W"][m] + (alpha / r) * h["B"][m] @ h["A"][m] if m in h["A"] else h["W"][m] for m in "QKV"}
    S = beta * (h["X"] @ W["Q"]) @ np.swapaxes(h["X_kv"] @ W["K"], -1, -2)
    O = softmax(S, axis=-1) @ (h["X_kv"] @ W["V"])
    return float(np.sum((O - h["Y"]) ** 2) / (2 * h["X"].shape[0]))


def finite_difference_gradients(problem: LoRAProblem, step: float = 1e-6) -> dict:
    """Central differences of `reference_loss` in every entry of every A_mu, B_mu (float64)."""
    h = host_inputs(problem)
    out = {}
    for kind in ("A", "B"):
        for m in problem.adapted:
            base = h[kind][m]
            grad = np.empty_like(base)
            for idx in np.ndindex(base.shape):
                orig = base[idx]
                base[idx] = orig + step
                up = reference_loss(h, problem.alpha, problem.beta, problem.r)
                base[idx] = orig - step
                down = reference_loss(h, problem.alpha, problem.beta, problem.r)
                base[idx] = orig
                grad[idx] = (up - down) / (2 * step)
            out[f"{kind}_{m}"] = grad
    return out


def torch_gradients(problem: LoRAProblem) -> tuple[float, dict]:
    """Loss and dL/dA, dL/dB by PyTorch autograd in float64 (needs the `oracle` extra)."""
    import torch  # noqa: PLC0415 - optional oracle

    h = host_inputs(problem)
    leaf = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)  # noqa: E731
    A = {m: leaf(a) for m, a in h["A"].items()}
    B = {m: leaf(b) for m, b in h["B"].items()}
    W = {m: torch.tensor(h["W"][m]) + (problem.alpha / problem.r) * B[m] @ A[m] if m in A
         else torch.tensor(h["W"][m]) for m in "QKV"}
    X, Xkv, Y = (torch.tensor(h[k]) for k in ("X", "X_kv", "Y"))
    S = problem.beta * (X @ W["Q"]) @ (Xkv @ W["K"]).transpose(-1, -2)
    O = torch.softmax(S, dim=-1) @ (Xkv @ W["V"])
    loss = ((O - Y) ** 2).sum() / (2 * X.shape[0])
    loss.backward()
    grads = {f"A_{m}": A[m].grad.numpy() for m in A} | {f"B_{m}": B[m].grad.numpy() for m in B}
    return float(loss.detach()), grads


def max_abs_error(got: dict, want: dict) -> float:
    """max over keys of max |got - want| (host float64)."""
    return max(float(np.max(np.abs(np.asarray(to_numpy(got[k]), np.float64) - want[k]))) for k in want)


def max_abs(values: dict) -> float:
    return max(float(np.max(np.abs(np.asarray(to_numpy(v), np.float64)))) for v in values.values())
