"""The one set of test instances: adversarial families of LoRA problems shared by the tests, the
`check` command, the report and the stress campaign.

Every family is reproducible from its seed and scaled so that the Cauchy-Schwarz logit bound
R = beta max_i ||(X W_Q)_i|| max_j ||(X' W_K)_j|| equals the R asked for.
"""

from __future__ import annotations

import math

import numpy as np

from .._lib import xp as _xp
from .._lib.validate import check_choice, check_positive
from ..errors import InvalidInputError
from ..problem import LoRAProblem, rescale_to_logit_bound

__all__ = ["FAMILIES", "NOISE", "aligned_problem", "attained_problem", "imbalanced", "make_problem", "upcast",
           "with_dtype"]

FAMILIES = ("gaussian", "aligned", "concentrated", "residual", "edge")
#: the default row noise of each structured family (`make_problem`'s `noise`)
NOISE = {"aligned": 0.05, "concentrated": 0.3, "residual": 1.0, "edge": 0.02}


def make_problem(family, L, d, r, *, R, adapt="QKV", N=1, cross=False, L_kv=None, seed=0, dtype="float64",
                 xp=None, noise=None, normalizer_offset=0.0) -> LoRAProblem:
    """A problem of `family` whose Cauchy-Schwarz logit bound is R.

    gaussian      LoRAProblem.random
    aligned       every row near one direction and W_K = -W_Q: all logits near -R, where the
                  polynomial's relative error is largest; values move with the logits
    concentrated  one key of large norm aligned with the queries: rows put their mass on it
    residual      targets far outside the range of the values: large, one-signed residuals
    edge          rows along +-x0 (random signs) and W_K = W_Q: every logit sits near +R or -R,
                  i.e. the Cauchy-Schwarz bound is attained at both ends of [-R, R]

    `noise` (structured families): the rows' spread around their direction (default `NOISE`; the
    stress campaign's search mutates it).
    """
    check_choice("family", family, FAMILIES)
    if family == "gaussian":
        return LoRAProblem.random(L, d, r, adapt=adapt, N=N, logit_bound=R, cross=cross, seed=seed,
                                  dtype=dtype, xp=xp, L_kv=L_kv if cross else None,
                                  normalizer_offset=normalizer_offset)
    noise = NOISE[family] if noise is None else check_positive("noise", noise)
    rng = np.random.default_rng(seed)
    L_kv = L if not cross or L_kv is None else L_kv
    x0 = rng.standard_normal(d)
    x0 /= np.linalg.norm(x0)
    if family == "edge":  # +-x0 per row: logits +-|beta| |x0 W_Q|^2 up to the noise
        X = rng.choice([-1.0, 1.0], size=(N, L, 1)) * x0 + noise * rng.standard_normal((N, L, d))
        Xkv = (rng.choice([-1.0, 1.0], size=(N, L_kv, 1)) * x0 + noise * rng.standard_normal((N, L_kv, d))
               if cross else None)
    else:
        X = x0 + noise * rng.standard_normal((N, L, d))
        Xkv = x0 + noise * rng.standard_normal((N, L_kv, d)) if cross else None
    WQ = rng.standard_normal((d, d)) / math.sqrt(d)
    WK = {"aligned": -WQ, "concentrated": WQ, "edge": WQ}.get(family, rng.standard_normal((d, d)) / math.sqrt(d))
    WV = WK + 0.3 * rng.standard_normal((d, d))
    Y = rng.standard_normal((N, L, d))
    keys = X if Xkv is None else Xkv
    if family == "concentrated":  # one long key along the queries' direction takes the mass
        keys[:, 0, :] = 4.0 * x0
    if family == "residual":
        Y = 6.0 + np.abs(Y)
    small = 0.01 if family in ("aligned", "edge") else 1.0 / math.sqrt(d)
    A = {m: small * rng.standard_normal((r, d)) for m in adapt}
    B = {m: small * rng.standard_normal((d, r)) for m in adapt}
    alpha, beta = 2.0 * r, 1.0 / math.sqrt(d)
    W = {"Q": WQ, "K": WK, "V": WV}
    rescale_to_logit_bound(X, keys, W, A, B, alpha=alpha, beta=beta, logit_bound=R)
    ns = _xp.resolve_namespace(xp)
    sq = (lambda a: a) if N > 1 else (lambda a: a[0])
    cast = lambda a: _xp.from_numpy(np.asarray(a, dtype=dtype), ns)  # noqa: E731
    return LoRAProblem(cast(sq(X)), cast(sq(Y)), {m: cast(w) for m, w in W.items()},
                       {m: cast(a) for m, a in A.items()}, {m: cast(b) for m, b in B.items()},
                       alpha=alpha, beta=beta, X_kv=None if Xkv is None else cast(sq(Xkv)),
                       normalizer_offset=normalizer_offset)


def aligned_problem(L, d, r, R, *, seed=0, adapt="QKV") -> LoRAProblem:
    """An adversarial instance: rows near one direction and W_K = -W_Q, so every logit is near -R
    where the polynomial's relative error is largest; the values move with the logits."""
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal(d)
    X = x0 / np.linalg.norm(x0) + 0.05 * rng.standard_normal((L, d))
    WQ = rng.standard_normal((d, d)) / math.sqrt(d)
    W = {"Q": WQ, "K": -WQ, "V": -WQ + 0.3 * rng.standard_normal((d, d))}
    A = {m: 0.01 * rng.standard_normal((r, d)) for m in adapt}
    B = {m: 0.01 * rng.standard_normal((d, r)) for m in adapt}
    alpha, beta = 2.0 * r, 1.0 / math.sqrt(d)
    rescale_to_logit_bound(X, X, W, A, B, alpha=alpha, beta=beta, logit_bound=R)
    return LoRAProblem(X, rng.standard_normal((L, d)), W, A, B, alpha=alpha, beta=beta)


def attained_problem(*, target=100.0, value=0.01, logit=0.0, adapt="V", dtype="float64") -> LoRAProblem:
    """A deterministic instance on which the kappa-part of the certificate for dW_V is attained up to
    O(value / target): one query, two keys X' = +-1 (d = 1), W_Q = logit (logits +-logit; 0: F =
    (1/2, 1/2)), C3 = X' W_V = +-value and Y = target. With theta = (+delta, -delta) on the two keys
    and logit 0, D dW_V = delta (delta value - target), while K_V = omega(X') c^ + max|X'| omega(C3)
    = target + 2 value (general and second-moment K alike: lam = 1). Kills any shrinking of the V
    coefficient."""
    f = lambda a: np.asarray(a, dtype=dtype)  # noqa: E731
    W = {"Q": f([[logit]]), "K": f([[1.0]]), "V": f([[value]])}
    A = {m: f([[0.5]]) for m in adapt}
    B = {m: f([[0.0]]) if m == "V" else f([[0.5]]) for m in adapt}   # B_V = 0: W_V stays value exactly
    return LoRAProblem(f([[1.0]]), f([[target]]), W, A, B, alpha=1.0, beta=1.0, X_kv=f([[1.0], [-1.0]]))


def imbalanced(problem: LoRAProblem, t: float) -> LoRAProblem:
    """The same problem with the query side scaled by t and the key side by 1/t: W_Q, B_Q times t,
    W_K, B_K divided by t (W_mu = W*_mu + s B_mu A_mu scales with them), so every logit is unchanged
    while |X W_Q| and |X' W_K| move apart (q/k imbalance). t must be a power of two: then the
    computed projections scale exactly and even the float logits are the same bits."""
    m, e = math.frexp(float(t))
    if m != 0.5:
        raise InvalidInputError(f"t must be a power of two (exact scaling), got {t!r}")
    scale = {"Q": float(t), "K": 1.0 / float(t), "V": 1.0}
    f = lambda a, c=1.0: np.asarray(_xp.to_numpy(a)) * np.asarray(c, dtype=_xp.to_numpy(a).dtype)  # noqa: E731
    sq = (lambda a: a) if problem.batched else (lambda a: a[0])
    return LoRAProblem(f(sq(problem.X3)), f(sq(problem.Y3)), {k: f(w, scale[k]) for k, w in problem.W.items()},
                       {k: f(a) for k, a in problem.A.items()}, {k: f(b, scale[k]) for k, b in problem.B.items()},
                       alpha=problem.alpha, beta=problem.beta,
                       X_kv=None if not problem.cross else f(sq(problem.Xkv3)),
                       normalizer_offset=problem.normalizer_offset)


def with_dtype(problem: LoRAProblem, dtype: str) -> LoRAProblem:
    """The same problem on the host with its entries cast to `dtype` ("float32" or "float64")."""
    f = lambda a: np.asarray(_xp.to_numpy(a), dtype=dtype)  # noqa: E731
    sq = (lambda a: a) if problem.batched else (lambda a: a[0])
    return LoRAProblem(f(sq(problem.X3)), f(sq(problem.Y3)), {m: f(w) for m, w in problem.W.items()},
                       {m: f(a) for m, a in problem.A.items()}, {m: f(b) for m, b in problem.B.items()},
                       alpha=problem.alpha, beta=problem.beta,
                       X_kv=None if not problem.cross else f(sq(problem.Xkv3)),
                       normalizer_offset=problem.normalizer_offset)


def upcast(problem: LoRAProblem) -> LoRAProblem:
    """The same problem in float64 on the host (float32 values are exact in float64)."""
    return with_dtype(problem, "float64")
