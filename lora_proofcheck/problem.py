"""`LoRAProblem`: one validated instance of the LoRA attention-head regression problem.

    L = 1/(2N) sum_n || softmax_rows(beta * X_n W_Q W_K^T X'_n^T) X'_n W_V - Y_n ||_F^2,
    W_mu = W*_mu + (alpha/r) B_mu A_mu   for the adapted modules mu (keys of A and B),

with softmax_rows(S)_ij = e^S_ij / (n + sum_l e^S_il): n = 0 is softmax, n > 0 Softmax_1 (the
outlier-free attention of the paper's App. G, with n = 1 there).

Everything is checked once here so the kernels never see bad input.
"""

from __future__ import annotations

import math

import array_api_compat
import numpy as np

from ._lib import xp as _xp
from ._lib.validate import MODULES, check_modules, check_real
from .errors import InvalidInputError, InvalidTypeError
from .kernels._generated_lora import lora_weight

__all__ = ["MODULES", "LoRAProblem", "check_problem", "rescale_to_logit_bound"]


def _check_modules(name: str, mapping) -> dict:
    if not isinstance(mapping, dict):
        raise InvalidTypeError(f"{name} must be a dict keyed by module name ('Q', 'K', 'V')")
    unknown = [k for k in mapping if k not in MODULES]
    if unknown:
        raise InvalidInputError(f"{name} has unknown module name(s) {unknown}; use 'Q', 'K', 'V'")
    return mapping


class LoRAProblem:
    """A validated single-head LoRA problem (self- or cross-attention, one sample or a batch).

    Parameters
    ----------
    X, Y : arrays of shape (L, d) or (N, L, d)
        Query-side input and regression target.
    W : dict "Q", "K", "V" -> (d, d)
        Frozen pretrained weights W*.
    A, B : dict mu -> (r, d) and mu -> (d, r)
        LoRA factors; their keys (the same set, a non-empty subset of Q, K, V) choose the
        adapted modules.
    alpha : float
        LoRA scale; the update is (alpha / r) B A.
    beta : float, optional
        Inverse temperature of the logits; default 1/sqrt(d) (scaled dot-product attention).
        The paper's setting is beta = 1.
    X_kv : array of shape (L_kv, d) or (N, L_kv, d), optional
        Key/value input for cross-attention; self-attention when omitted.
    normalizer_offset : float, optional
        n >= 0 in the row normaliser n + sum_l e^S_il: 0 (default) is softmax, 1 is Softmax_1
        ("off-by-one" / outlier-free attention, OutEffHop).

    Raises
    ------
    InvalidInputError, InvalidTypeError
        For every bad input (NaN/inf, shapes, inconsistent r, A without B, unknown module, non-finite
        alpha/beta, integer/complex/mixed dtypes, mixed array libraries), naming the argument.

    Examples
    --------
    >>> import numpy as np
    >>> import lora_proofcheck as lp
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.standard_normal((16, 4)), rng.standard_normal((16, 4))
    >>> W = {m: rng.standard_normal((4, 4)) / 2 for m in "QKV"}
    >>> p = lp.LoRAProblem(X, Y, W, {"Q": np.zeros((2, 4))}, {"Q": rng.standard_normal((4, 2))}, alpha=4.0)
    >>> p
    LoRAProblem(N=1, L=16, L_kv=16, d=4, r=2, adapt='Q', self-attention, alpha=4, beta=0.5, dtype=float64)
    >>> lp.LoRAProblem(X, Y, W, {"Q": np.zeros((2, 4))}, {"V": np.zeros((4, 2))}, alpha=4.0)
    Traceback (most recent call last):
    ...
    lora_proofcheck.errors.InvalidInputError: A and B must adapt the same modules: A without B for ['Q'], B without A for ['V']
    """

    def __init__(self, X, Y, W, A, B, *, alpha, beta=None, X_kv=None, normalizer_offset=0.0):
        W = _check_modules("W", W)
        A = _check_modules("A", A)
        B = _check_modules("B", B)
        missing = [m for m in MODULES if m not in W]
        if missing:
            raise InvalidInputError(f"W must hold all of 'Q', 'K', 'V'; missing {missing}")
        if set(A) != set(B):
            only_a, only_b = sorted(set(A) - set(B)), sorted(set(B) - set(A))
            raise InvalidInputError(
                f"A and B must adapt the same modules: A without B for {only_a}, B without A for {only_b}"
            )
        if not A:
            raise InvalidInputError("A and B must adapt at least one module (keys 'Q', 'K' or 'V')")

        arrays = {"X": X, "Y": Y}
        if X_kv is not None:
            arrays["X_kv"] = X_kv
        arrays.update({f'W["{m}"]': W[m] for m in MODULES})
        arrays.update({f'A["{m}"]': A[m] for m in A})
        arrays.update({f'B["{m}"]': B[m] for m in B})
        xp = _xp.namespace(**arrays)
        self._check_dtypes_devices(xp, arrays)

        if X.ndim not in (2, 3):
            raise InvalidInputError(f"X must have shape (L, d) or (N, L, d), got {tuple(X.shape)}")
        self.batched = X.ndim == 3
        self.xp = xp
        self.dtype = X.dtype
        X3 = X if self.batched else X[None, ...]
        N, L, d = X3.shape
        if L < 1 or d < 1 or N < 1:
            raise InvalidInputError(f"X must be non-empty, got shape {tuple(X.shape)}")
        if tuple(Y.shape) != tuple(X.shape):
            raise InvalidInputError(f"Y must have the shape of X {tuple(X.shape)}, got {tuple(Y.shape)}")
        if X_kv is None:
            Xkv3 = X3
        else:
            if X_kv.ndim != X.ndim:
                raise InvalidInputError(
                    f"X_kv must have as many dimensions as X ({X.ndim}), got shape {tuple(X_kv.shape)}"
                )
            Xkv3 = X_kv if self.batched else X_kv[None, ...]
            if Xkv3.shape[0] != N or Xkv3.shape[2] != d or Xkv3.shape[1] < 1:
                raise InvalidInputError(
                    f"X_kv must have shape ({'N, ' if self.batched else ''}L_kv, {d}) matching X "
                    f"{tuple(X.shape)}, got {tuple(X_kv.shape)}"
                )
        for m in MODULES:
            if tuple(W[m].shape) != (d, d):
                raise InvalidInputError(f'W["{m}"] must have shape ({d}, {d}), got {tuple(W[m].shape)}')
        ranks = set()
        for m in A:
            if A[m].ndim != 2 or A[m].shape[1] != d:
                raise InvalidInputError(f'A["{m}"] must have shape (r, {d}), got {tuple(A[m].shape)}')
            if B[m].ndim != 2 or B[m].shape[0] != d:
                raise InvalidInputError(f'B["{m}"] must have shape ({d}, r), got {tuple(B[m].shape)}')
            if A[m].shape[0] != B[m].shape[1]:
                raise InvalidInputError(
                    f'A["{m}"] has rank {A[m].shape[0]} but B["{m}"] has rank {B[m].shape[1]}'
                )
            ranks.add(int(A[m].shape[0]))
        if len(ranks) != 1:
            raise InvalidInputError(f"all adapted modules must share one rank r, got ranks {sorted(ranks)}")
        r = ranks.pop()
        if r < 1:
            raise InvalidInputError("the LoRA rank r (rows of A) must be at least 1")
        for name, value in arrays.items():
            if not bool(xp.all(xp.isfinite(value))):
                raise InvalidInputError(f"{name} contains NaN or infinite entries")

        self.alpha = check_real("alpha", alpha)
        self.beta = 1.0 / math.sqrt(d) if beta is None else check_real("beta", beta)
        self.normalizer_offset = check_real("normalizer_offset", normalizer_offset)
        if self.normalizer_offset < 0:
            raise InvalidInputError(f"normalizer_offset must be >= 0, got {self.normalizer_offset}")
        self.N, self.L, self.d, self.r = N, L, d, r
        self.L_kv = Xkv3.shape[1]
        self.cross = X_kv is not None
        self.X, self.Y, self.X_kv = X, Y, X_kv
        self.X3, self.Y3 = X3, (Y if self.batched else Y[None, ...])
        self.Xkv3 = Xkv3
        self.W = {m: W[m] for m in MODULES}
        self.adapted = tuple(m for m in MODULES if m in A)
        self.A = {m: A[m] for m in self.adapted}
        self.B = {m: B[m] for m in self.adapted}

    @staticmethod
    def _check_dtypes_devices(xp, arrays):
        dtype = None
        device = None
        for name, value in arrays.items():
            kind = _xp.dtype_name(xp, value.dtype)
            if kind not in _xp.SUPPORTED_DTYPES:
                raise InvalidTypeError(f"{name} has dtype {kind}; only float32 and float64 are supported")
            if dtype is None:
                dtype, first = value.dtype, name
            elif value.dtype != dtype:
                raise InvalidTypeError(
                    f"{name} has dtype {kind} but {first} has dtype {_xp.dtype_name(xp, dtype)}; "
                    "use one floating dtype for all arrays"
                )
            dev = array_api_compat.device(value)
            if device is None:
                device = dev
            elif dev != device:
                raise InvalidInputError(f"{name} is on device {dev} but {first} is on {device}")

    # -- derived quantities -------------------------------------------------------------
    @property
    def scale(self) -> float:
        """The LoRA factor alpha / r."""
        return self.alpha / self.r

    @property
    def log_n(self) -> float:
        """log of the normaliser offset n (-inf for softmax): what the generated kernels take."""
        return math.log(self.normalizer_offset) if self.normalizer_offset > 0 else -math.inf

    @property
    def dtype_name(self) -> str:
        return _xp.dtype_name(self.xp, self.dtype)

    def weights(self) -> dict:
        """Effective weights W_mu = W*_mu + (alpha/r) B_mu A_mu (frozen W* where not adapted)."""
        out = dict(self.W)
        for m in self.adapted:
            out[m] = lora_weight(self.W[m], self.A[m], self.B[m], self.scale)["W"]
        return out

    def __repr__(self) -> str:
        kind = "cross" if self.cross else "self"
        offset = f", normalizer_offset={self.normalizer_offset:g}" if self.normalizer_offset else ""
        return (
            f"LoRAProblem(N={self.N}, L={self.L}, L_kv={self.L_kv}, d={self.d}, r={self.r}, "
            f"adapt={''.join(self.adapted)!r}, {kind}-attention, alpha={self.alpha:g}, "
            f"beta={self.beta:g}{offset}, dtype={self.dtype_name})"
        )

    # -- reproducible instances -----------------------------------------------------------
    @classmethod
    def random(
        cls, L, d, r, *, adapt="QV", N=1, logit_bound=None, cross=False, seed=0,
        dtype="float64", xp=None, L_kv=None, normalizer_offset=0.0,
    ) -> "LoRAProblem":
        """A reproducible Gaussian instance.

        X, X', Y ~ N(0, 1), W*_mu, A_mu, B_mu ~ N(0, 1/d), alpha = 2r, beta = 1/sqrt(d). With
        `logit_bound`, W_Q and W_K (frozen part and adapter alike) are rescaled so that the
        Cauchy-Schwarz bound R = beta * max_i ||(X W_Q)_i|| * max_j ||(X' W_K)_j|| equals it; hence
        every logit satisfies |S_ij| <= logit_bound. N = 1 gives 2-D arrays.

        >>> LoRAProblem.random(L=128, d=8, r=4, adapt="QKV", N=2, cross=True, L_kv=64, dtype="float32")
        LoRAProblem(N=2, L=128, L_kv=64, d=8, r=4, adapt='QKV', cross-attention, alpha=8, beta=0.353553, dtype=float32)
        """
        for name, value in (("L", L), ("d", d), ("r", r), ("N", N)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        check_modules(adapt, "adapt")  # validated; the given order fixes the draws
        if dtype not in _xp.SUPPORTED_DTYPES:
            raise InvalidTypeError(f"dtype must be one of {_xp.SUPPORTED_DTYPES}, got {dtype!r}")
        if logit_bound is not None:
            logit_bound = check_real("logit_bound", logit_bound)
            if logit_bound <= 0:
                raise InvalidInputError(f"logit_bound must be positive, got {logit_bound}")
        xp = _xp.resolve_namespace(xp)
        L_kv = L if L_kv is None else L_kv
        if not cross and L_kv != L:
            raise InvalidInputError("L_kv differs from L only for cross-attention (cross=True)")
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((N, L, d))
        X_kv = rng.standard_normal((N, L_kv, d)) if cross else None
        Y = rng.standard_normal((N, L, d))
        W = {m: rng.standard_normal((d, d)) / math.sqrt(d) for m in MODULES}
        A = {m: rng.standard_normal((r, d)) / math.sqrt(d) for m in adapt}
        B = {m: rng.standard_normal((d, r)) / math.sqrt(d) for m in adapt}
        alpha, beta = 2.0 * r, 1.0 / math.sqrt(d)
        if logit_bound is not None:
            rescale_to_logit_bound(X, X if X_kv is None else X_kv, W, A, B, alpha=alpha, beta=beta,
                                   logit_bound=logit_bound)
        squeeze = (lambda a: a) if N > 1 else (lambda a: a[0])
        cast = lambda a: _xp.from_numpy(np.asarray(a, dtype=dtype), xp)  # noqa: E731
        return cls(
            cast(squeeze(X)), cast(squeeze(Y)),
            {m: cast(w) for m, w in W.items()},
            {m: cast(a) for m, a in A.items()},
            {m: cast(b) for m, b in B.items()},
            alpha=alpha, beta=beta,
            X_kv=None if X_kv is None else cast(squeeze(X_kv)), normalizer_offset=normalizer_offset,
        )


def check_problem(problem, name: str = "problem") -> LoRAProblem:
    """`problem` if it is a LoRAProblem, else InvalidTypeError naming the argument."""
    if not isinstance(problem, LoRAProblem):
        raise InvalidTypeError(f"{name} must be a LoRAProblem, got {type(problem).__name__}")
    return problem


def rescale_to_logit_bound(X_q, X_kv, W, A, B, *, alpha, beta, logit_bound) -> None:
    """Scale W_Q and W_K (frozen part and adapter B alike; host NumPy dicts, in place) so that
    R = beta * max_i ||(X W_Q)_i|| * max_j ||(X' W_K)_j|| equals `logit_bound`."""
    r = next(iter(A.values())).shape[0] if A else 1
    eff = {m: W[m] + (alpha / r) * (B[m] @ A[m]) if m in A else W[m] for m in "QK"}
    q = np.linalg.norm(X_q @ eff["Q"], axis=-1).max()
    k = np.linalg.norm(X_kv @ eff["K"], axis=-1).max()
    s = math.sqrt(logit_bound / (beta * q * k))
    for m in "QK":
        W[m] = W[m] * s
        if m in B:
            B[m] = B[m] * s
