"""Runtime feature ops of the peer approximations (`gradients/peers.py`): FAVOR+'s random directions
and maps, and the support basis's block features.

FAVOR+ (Performer): phi(x) = m^-1/2 exp(Omega x - ||x||²/2 - s) with rows of Omega ~ N(0, I_d)
marginally, in orthogonal blocks; the map and its VJP are generated (`derivations/peers.build_favor`).

Support basis (yinj66/support_basis, our exact variant): rows with a large entry get exact exp(S) for
their whole row / column, the rest a polynomial; the factors are assembled here, host NumPy.
"""

from __future__ import annotations

import math

import array_api_compat
import numpy as np

from .._lib.validate import check_int
from . import _generated_peers as gen

__all__ = ["favor_features", "favor_vjp", "orthogonal_gaussian", "support_basis_features", "support_basis_masks"]

# ----------------------------------------------------------------------------------------------
# FAVOR+ (Performer): positive orthogonal random features


def orthogonal_gaussian(m: int, d: int, seed: int) -> np.ndarray:
    """(m, d) host float64 directions: blocks of d orthogonal rows (Haar: QR of a Gaussian with the
    signs of diag(R) fixed), each row scaled by the norm of an independent N(0, I_d) draw, so every
    row is N(0, I_d) marginally (the unbiasedness condition) and rows within a block are orthogonal."""
    m, d, seed = check_int("features", m, 1), check_int("d", d, 1), check_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(-(-m // d)):
        q, r = np.linalg.qr(rng.standard_normal((d, d)))
        sign = np.sign(np.diag(r))
        blocks.append((q * np.where(sign == 0, 1.0, sign)).T)
    norms = np.linalg.norm(rng.standard_normal((m, d)), axis=1)
    return np.vstack(blocks)[:m] * norms[:, None]


def favor_features(Xf, Omega, *, query: bool, stabilize: bool = True):
    """phi(Xf) (..., L, m) = m^-1/2 exp(Omega x - ||x||²/2 - s): Performer's stabilisers s = the row max
    of the exponent for queries, the max over all rows (per sample) for keys; for softmax both cancel
    in F~ (row / global scalings of E~).  With stabilize=False, s = 0: the unbiased estimator itself."""
    xp = array_api_compat.array_namespace(Xf, Omega)
    Z = gen.favor_exponents(Xf, Omega)["Zf"]
    if not stabilize:
        shift = xp.zeros(Z.shape[:-1] + (1,), dtype=Z.dtype, device=array_api_compat.device(Z))
    elif query:
        shift = xp.max(Z, axis=-1, keepdims=True)
    else:
        shift = xp.max(Z, axis=(-2, -1), keepdims=True)
    return gen.favor_map(Z, shift, 1.0 / math.sqrt(Omega.shape[0]))["phi"]


def favor_vjp(Xf, Omega, phi, G):
    """dl/dXf for l = sum(G ∘ phi(Xf)) at a fixed stabiliser (generated from `derivations.peers.build_favor`)."""
    return gen.favor_vjp(Xf, Omega, phi, G)["dXf"]


# ----------------------------------------------------------------------------------------------
# support basis


def support_basis_masks(qb, kb, threshold: float):
    """(rows, cols): query rows / key rows with some |entry| > threshold (balanced q, k)."""
    xp = array_api_compat.array_namespace(qb, kb)
    return xp.any(xp.abs(qb) > threshold, axis=-1), xp.any(xp.abs(kb) > threshold, axis=-1)


def support_basis_features(Q, K, rows, cols, U1s, U2s, pad_to=None):
    """Factors of E~ = [U1s | B1 | C1][U2s | B2 | C2]^T, host NumPy, one sample at a time:

        E~_ij = p(S_ij) (i, j both small: U1s U2s^T with the large rows' / columns' features zeroed),
        E~_ij = exp(S_ij) (i a large row: B1 = selector of the rows, B2 = exp(S[rows, :])^T;
                           j a large column, i small: C1 = exp(S[small, cols]), C2 = selector).

    Q = beta C1 and K = C2 of the sample; U1s, U2s lists of unscaled small-part features (the
    polynomial's and its derivative's).  Row i of every left factor is scaled by e^{-m_i} (m_i >= the
    largest exact logit of row i, or 0), which F~ and both gradients do not see for softmax; so
    exp never overflows.  Rank k + |rows| + |cols| (padded with zero columns to `pad_to` for a
    batch): the exact part costs O((L + L_kv)(|rows| + |cols|) d^2) in the chains, quadratic unless
    large entries are rare."""
    Q, K = np.asarray(Q), np.asarray(K)
    rows, cols = np.asarray(rows, bool), np.asarray(cols, bool)
    iR, iC, small = np.flatnonzero(rows), np.flatnonzero(cols), ~rows
    S_R = Q[iR] @ K.T                      # (|R|, L_kv): the large rows, exact
    S_C = Q[small] @ K[iC].T               # (L - |R|, |C|): small rows x large columns, exact
    shift = np.zeros(Q.shape[0])
    if iR.size:
        shift[iR] = S_R.max(axis=1)
    if iC.size and small.any():
        shift[small] = np.maximum(0.0, S_C.max(axis=1))
    L, L_kv = Q.shape[0], K.shape[0]
    B1 = np.zeros((L, iR.size))
    B1[iR, np.arange(iR.size)] = 1.0
    B2 = np.exp(S_R - shift[iR, None]).T
    C1 = np.zeros((L, iC.size))
    C1[small] = np.exp(S_C - shift[small, None])
    C2 = np.zeros((L_kv, iC.size))
    C2[iC, np.arange(iC.size)] = 1.0
    scale = np.exp(-shift)[:, None]
    out1 = [U * scale * small[:, None] for U in U1s]
    out2 = [U * ~cols[:, None] for U in U2s]
    extra = 0 if pad_to is None else pad_to - iR.size - iC.size
    pad1, pad2 = np.zeros((L, extra)), np.zeros((L_kv, extra))
    return ([np.concatenate([U, B1, C1, pad1], axis=1) for U in out1],
            [np.concatenate([U, B2, C2, pad2], axis=1) for U in out2])
