"""Independent oracles: nothing here uses the generated kernels or the certificate.

The reference loss is a plain NumPy/SciPy forward pass; its gradients come from central finite
differences or PyTorch autograd (test-only: `oracle` extra, imported on first use). `dense_gradients`
evaluates the exact gradient formulas (errata applied) densely from first principles, with the exact
softmax or any perturbed kernel E~ = kernel(S) or exp(S)(1 + theta); `dense_reference` evaluates the
same formulas in long double or 40-digit mpmath, with a rounding allowance (`allowance_for`).
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
from scipy.special import logsumexp, softmax

from .._lib.xp import from_numpy, to_host64, to_numpy
from ..problem import LoRAProblem

__all__ = ["LONGDOUBLE_EXTENDED", "MP_DPS", "PRECISE_KINDS", "allowance_for", "attention_weights", "central_differences",
           "dense_gradients",
           "dense_reference", "exact_features", "finite_difference_gradients", "host_inputs", "kernel_inputs",
           "max_abs", "max_abs_diff", "max_abs_error", "reference_loss", "torch_gradients", "unit_roundoff_of"]

#: True where numpy's long double is wider than float64 (x86 80-bit; not on most ARM builds)
LONGDOUBLE_EXTENDED = bool(np.finfo(np.longdouble).eps < np.finfo(np.float64).eps)
#: decimal digits of the mpmath reference
MP_DPS = 40
PRECISE_KINDS = ("longdouble", "mpmath")
_U64 = 2.0**-53


def host_inputs(problem: LoRAProblem) -> dict:
    """The problem's arrays on the host in float64 (batched shapes)."""
    f = lambda a: np.asarray(to_numpy(a), dtype=np.float64)  # noqa: E731
    return {
        "X": f(problem.X3), "X_kv": f(problem.Xkv3), "Y": f(problem.Y3),
        "W": {m: f(w) for m, w in problem.W.items()},
        "A": {m: f(a) for m, a in problem.A.items()},
        "B": {m: f(b) for m, b in problem.B.items()},
    }


def attention_weights(S: np.ndarray, n: float = 0.0) -> np.ndarray:
    """softmax_rows(S) for n = 0 (SciPy), else Softmax_1: e^S_ij / (n + sum_l e^S_il), as a softmax over
    the row with one extra logit log n whose column is dropped (SciPy's logsumexp)."""
    if n == 0:
        return softmax(S, axis=-1)
    sink = np.full(S.shape[:-1] + (1,), np.log(n))
    return np.exp(S - logsumexp(np.concatenate([S, sink], axis=-1), axis=-1, keepdims=True))


def reference_loss(h: dict, alpha: float, beta: float, r: int, n: float = 0.0) -> float:
    """1/(2N) sum_n ||softmax(beta X W_Q W_K^T X'^T) X' W_V - Y||_F^2 from first principles (Softmax_1
    with offset n when n > 0)."""
    W = {m: h["W"][m] + (alpha / r) * h["B"][m] @ h["A"][m] if m in h["A"] else h["W"][m] for m in "QKV"}
    S = beta * (h["X"] @ W["Q"]) @ np.swapaxes(h["X_kv"] @ W["K"], -1, -2)
    O = attention_weights(S, n) @ (h["X_kv"] @ W["V"])
    return float(np.sum((O - h["Y"]) ** 2) / (2 * h["X"].shape[0]))


def finite_difference_gradients(problem: LoRAProblem, step: float = 1e-6) -> dict:
    """Central differences of `reference_loss` in every entry of every A_mu, B_mu (float64)."""
    n = problem.normalizer_offset
    return central_differences(problem, lambda h: reference_loss(h, problem.alpha, problem.beta, problem.r, n),
                               step)


def central_differences(problem: LoRAProblem, loss_of, step: float = 1e-6) -> dict:
    """Central differences of `loss_of(host_inputs)` (a float) in every entry of every A_mu, B_mu."""
    h = host_inputs(problem)
    out = {}
    for kind in ("A", "B"):
        for m in problem.adapted:
            base = h[kind][m]
            grad = np.empty_like(base)
            for idx in np.ndindex(base.shape):
                orig = base[idx]
                base[idx] = orig + step
                up = loss_of(h)
                base[idx] = orig - step
                down = loss_of(h)
                base[idx] = orig
                grad[idx] = (up - down) / (2 * step)
            out[f"{kind}_{m}"] = grad
    return out


def torch_gradients(problem: LoRAProblem) -> tuple[float, dict]:
    """Loss and dL/dA, dL/dB by PyTorch autograd in float64 (needs the `oracle` extra)."""
    import torch  # noqa: PLC0415 - test-only oracle: never imported unless asked for

    h = host_inputs(problem)
    leaf = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)  # noqa: E731
    A = {m: leaf(a) for m, a in h["A"].items()}
    B = {m: leaf(b) for m, b in h["B"].items()}
    W = {m: torch.tensor(h["W"][m]) + (problem.alpha / problem.r) * B[m] @ A[m] if m in A
         else torch.tensor(h["W"][m]) for m in "QKV"}
    X, Xkv, Y = (torch.tensor(h[k]) for k in ("X", "X_kv", "Y"))
    S = problem.beta * (X @ W["Q"]) @ (Xkv @ W["K"]).transpose(-1, -2)
    if problem.normalizer_offset:  # Softmax_1: one extra logit log n in every row, its column dropped
        sink = torch.full(S.shape[:-1] + (1,), float(np.log(problem.normalizer_offset)), dtype=S.dtype)
        F = torch.softmax(torch.cat([S, sink], dim=-1), dim=-1)[..., :-1]
    else:
        F = torch.softmax(S, dim=-1)
    O = F @ (Xkv @ W["V"])
    loss = ((O - Y) ** 2).sum() / (2 * X.shape[0])
    loss.backward()
    grads = {f"A_{m}": A[m].grad.numpy() for m in A} | {f"B_{m}": B[m].grad.numpy() for m in B}
    return float(loss.detach()), grads


def max_abs_error(got: dict, want: dict) -> float:
    """max over keys of max |got - want| (host float64)."""
    return max(float(np.max(np.abs(np.asarray(to_numpy(got[k]), np.float64) - want[k]))) for k in want)


def max_abs(values: dict) -> float:
    return max(float(np.max(np.abs(np.asarray(to_numpy(v), np.float64)))) for v in values.values())


def dense_gradients(problem: LoRAProblem, *, kernel=None, theta=None, lib=np) -> dict:
    """Exact formulas of the paper (errata applied) with F = softmax, or F~ from E~ = kernel(S) or
    E~ = exp(S)∘(1+theta): dense, float64, from first principles. lib=torch for autograd."""
    h = host_inputs(problem)
    n = problem.normalizer_offset
    if lib is np:
        tr = lambda a: np.swapaxes(a, -1, -2)  # noqa: E731
        row_max = lambda S: np.maximum(S.max(-1, keepdims=True), np.log(n) if n else -np.inf)  # noqa: E731
    else:
        h = {k: ({m: lib.tensor(w) for m, w in v.items()} if isinstance(v, dict) else lib.tensor(v))
             for k, v in h.items()}
        tr = lambda a: a.transpose(-1, -2)  # noqa: E731
        row_max = lambda S: (lib.clamp(S.max(-1, keepdim=True).values, min=float(np.log(n))) if n  # noqa: E731
                             else S.max(-1, keepdim=True).values)
    return _formulas(h, problem.scale, problem.beta, problem.N, problem.adapted, exp=lib.exp, tr=tr,
                     row_max=row_max, kernel=kernel, theta=theta, n=n)


def _formulas(h, s, beta, N, adapted, *, exp, tr, row_max, kernel=None, theta=None, n=0.0) -> dict:
    """The exact gradient formulas on host arrays `h` of one number type (float64, torch, long
    double, mpf objects); `n` the Softmax_1 offset, `row_max` the shift (floored at log n when n > 0:
    the sink's weight n e^-shift is then at most 1, and exact: theta never touches it)."""
    W = {m: h["W"][m] + s * h["B"][m] @ h["A"][m] if m in h["A"] else h["W"][m] for m in "QKV"}
    X, Xkv, Y = h["X"], h["X_kv"], h["Y"]
    C1, C2, C3 = X @ W["Q"], Xkv @ W["K"], Xkv @ W["V"]
    S = beta * C1 @ tr(C2)
    if kernel is not None:
        Et = kernel(S)
        sink = n
    else:
        shift = row_max(S)
        Et = exp(S - shift)
        sink = n * exp(-shift[..., 0]) if n else 0.0
        if theta is not None:
            Et = Et * (1 + theta)
    F = Et / (Et.sum(-1) + sink)[..., None]
    c = F @ C3 - Y
    P1 = F * (c @ tr(C3))
    P = P1 - P1.sum(-1)[..., None] * F
    dW = {"Q": beta * (tr(X) @ P @ C2).sum(0) / N, "K": beta * (tr(Xkv) @ tr(P) @ C1).sum(0) / N,
          "V": (tr(Xkv) @ tr(F) @ c).sum(0) / N}
    out = {}
    for m in adapted:
        out[f"A_{m}"] = s * tr(h["B"][m]) @ dW[m]
        out[f"B_{m}"] = s * dW[m] @ tr(h["A"][m])
    return out


def unit_roundoff_of(kind: str) -> float:
    """The unit roundoff of a `dense_reference` kind."""
    if kind == "longdouble":
        return float(np.finfo(np.longdouble).eps) / 2
    if kind == "mpmath":
        return 2.0 ** -math.ceil(MP_DPS * math.log2(10))
    raise ValueError(f"kind must be one of {PRECISE_KINDS}, got {kind!r}")


def dense_reference(problem: LoRAProblem, kind: str = "longdouble") -> dict:
    """Exact gradients per key in `kind` ("longdouble": arrays of np.longdouble; "mpmath": object
    arrays of mpf at MP_DPS digits), from the problem's values (exact in either).

    Allowance (`allowance_for`): this is the exact path's algorithm (logits, shifted exp, explicit
    F, the same products) in unit roundoff u < 2^-53. Every term of the exact path's certified floor
    (`Certificate.exact_floor`) is a nonnegative combination of gamma_n(u) = n u / (1 - n u) and
    kappa(delta'(u)), both convex in u and zero at u = 0, so each is <= (u / 2^-53) times its
    float64 value; the float64 floor scaled by u / 2^-53, times 2 for the margin, bounds it."""
    h = host_inputs(problem)
    tr = lambda a: np.swapaxes(a, -1, -2)  # noqa: E731
    row_max = lambda S: S.max(-1, keepdims=True)  # noqa: E731
    if kind == "longdouble":
        conv = lambda a: np.asarray(a, dtype=np.longdouble)  # noqa: E731
        hh = {k: ({m: conv(w) for m, w in v.items()} if isinstance(v, dict) else conv(v)) for k, v in h.items()}
        with np.errstate(over="raise", invalid="raise"):
            n = np.longdouble(problem.normalizer_offset)
            floored = lambda S: np.maximum(row_max(S), np.log(n)) if n else row_max(S)  # noqa: E731
            return _formulas(hh, np.longdouble(problem.alpha) / problem.r, np.longdouble(problem.beta), problem.N,
                             problem.adapted, exp=np.exp, tr=tr, row_max=floored, n=n)
    if kind == "mpmath":
        with mpmath.workdps(MP_DPS):
            to = np.frompyfunc(mpmath.mpf, 1, 1)
            hh = {k: ({m: to(w) for m, w in v.items()} if isinstance(v, dict) else to(v)) for k, v in h.items()}
            n = mpmath.mpf(problem.normalizer_offset)
            floored = lambda S: np.maximum(row_max(S), mpmath.log(n)) if n else row_max(S)  # noqa: E731
            return _formulas(hh, mpmath.mpf(problem.alpha) / problem.r, mpmath.mpf(problem.beta), problem.N,
                             problem.adapted, exp=np.frompyfunc(mpmath.exp, 1, 1), tr=tr, row_max=floored, n=n)
    raise ValueError(f"kind must be one of {PRECISE_KINDS}, got {kind!r}")


def allowance_for(kind: str, allowance64: dict) -> dict:
    """The rounding allowance of `dense_reference(kind)` from the float64 exact floor (per key)."""
    factor = 2.0 * unit_roundoff_of(kind) / _U64
    return {k: v * factor for k, v in allowance64.items()}


def max_abs_diff(got: dict, ref: dict, kind: str) -> dict:
    """max |got - ref| per key, the difference taken in the reference's precision, rounded up to
    float64 (got: float32/float64 arrays, exact in either precision)."""
    out = {}
    for k, want in ref.items():
        g = np.asarray(to_numpy(got[k]), dtype=np.float64)
        if kind == "longdouble":
            value = float(np.max(np.abs(g.astype(np.longdouble) - want)))
        elif kind == "mpmath":
            with mpmath.workdps(MP_DPS):
                value = float(max(abs(x) for x in (np.frompyfunc(mpmath.mpf, 1, 1)(g) - want).ravel()))
        else:
            raise ValueError(f"kind must be one of {PRECISE_KINDS}, got {kind!r}")
        out[k] = math.nextafter(value, math.inf) if value > 0 else value
    return out


def kernel_inputs(problem: LoRAProblem, kernel: str = "exact") -> tuple:
    """The data arguments of the generated kernels for `problem`: (X_q, X_kv, W_Q, W_K, W_V, Y, beta) and
    the normaliser offset, as log n for the exact kernels and n for the low-rank ones."""
    W = problem.weights()
    offset = problem.log_n if kernel == "exact" else problem.normalizer_offset
    return (problem.X3, problem.Xkv3, W["Q"], W["K"], W["V"], problem.Y3, problem.beta, offset)


def exact_features(problem: LoRAProblem, xp):
    """Features that make the low-rank chain exact: U1 = exp(S) (dense, unshifted: for bounded logits),
    U2 = I, so that U1 U2^T = exp(S); arrays of namespace `xp`, shapes (N, L, L_kv), (N, L_kv, L_kv)."""
    W = {m: to_host64(w) for m, w in problem.weights().items()}
    X, Xkv = to_host64(problem.X3), to_host64(problem.Xkv3)
    S = problem.beta * (X @ W["Q"]) @ np.swapaxes(Xkv @ W["K"], -1, -2)
    U2 = np.broadcast_to(np.eye(problem.L_kv), (problem.N, problem.L_kv, problem.L_kv))
    return from_numpy(np.exp(S), xp), from_numpy(np.ascontiguousarray(U2), xp)
