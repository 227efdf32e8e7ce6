"""FAVOR+ and support-basis feature ops: the directions are N(0, I) rows in orthogonal blocks, the
estimator is unbiased for exp(x.y) (a statistical test with a stated false-failure probability),
the stabilisers cancel in F~, and the support basis's block factors reproduce the dense hybrid kernel."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lora_proofcheck import InvalidInputError, InvalidTypeError, LoRAProblem, testing
from lora_proofcheck.gradients import peers
from lora_proofcheck.kernels import peer_features as pf
from lora_proofcheck.kernels.features import feature_maps

EPS64 = np.finfo(np.float64).eps


def _z_scores(draw_omega, pairs, n, m):
    """Per pair: (mean - e^{x.y}) / standard error over n independent draws of m directions, the
    estimate phi(x) . phi(y) computed by the runtime (generated) map without its stabilisers."""
    z = []
    for x, y in pairs:
        est = np.empty(n)
        X = np.stack([x, y])
        for s in range(n):
            phi = pf.favor_features(X, draw_omega(m, x.size, s), query=True, stabilize=False)
            est[s] = phi[0] @ phi[1]
        z.append((est.mean() - math.exp(x @ y)) / (est.std(ddof=1) / math.sqrt(n)))
    return np.array(z)


PAIRS = [(np.array([0.3, -0.2, 0.1, 0.2]), np.array([0.1, 0.3, -0.2, 0.0])),
         (np.array([0.5, 0.1, -0.3, 0.2]), np.array([0.2, 0.4, 0.1, -0.1])),
         (np.array([0.6, 0.3, 0.2, -0.4]), np.array([0.4, 0.5, 0.3, 0.1]))]


def test_favor_is_unbiased_for_exp():
    """z-test over n = 4000 seeds per pair (|x+y|² in {0.22, 0.79, 1.98}), rejecting at |z| > 5. Under
    unbiasedness a false failure has probability ~ 3 * 5.7e-7 by the normal approximation; the
    skewness of the mean (<= 0.13 here) at most triples that (Edgeworth), so it is < 1e-5 in all.
    Power: Performer's fixed-norm rows (every row of norm sqrt(d), `scaling=1`) are biased, and the
    same test must reject them (measured z ~ -20)."""
    z = _z_scores(pf.orthogonal_gaussian, PAIRS, 4000, 8)
    assert np.all(np.abs(z) <= 5.0), z

    def fixed_norm(m, d, seed):
        W = pf.orthogonal_gaussian(m, d, seed)
        return W / np.linalg.norm(W, axis=1, keepdims=True) * math.sqrt(d)

    assert np.max(np.abs(_z_scores(fixed_norm, PAIRS[2:], 4000, 8))) > 5.0


def test_orthogonal_blocks():
    W = pf.orthogonal_gaussian(10, 4, 0)
    U = W / np.linalg.norm(W, axis=1, keepdims=True)
    for block in (U[:4], U[4:8]):
        assert np.allclose(block @ block.T, np.eye(4), atol=1e-12)
    assert W.shape == (10, 4)


@pytest.mark.parametrize("m, d, seed, exc", [(0, 2, 0, InvalidInputError), (2, 0, 0, InvalidInputError),
                                             (2, 2, -1, InvalidInputError), (2.5, 2, 0, InvalidTypeError)])
def test_orthogonal_gaussian_arguments(m, d, seed, exc):
    with pytest.raises(exc):
        pf.orthogonal_gaussian(m, d, seed)


def test_favor_stabilisers_cancel_in_the_softmax():
    """With and without Performer's max shifts the normalised attention is the same (to rounding)."""
    p = LoRAProblem.random(40, 3, 2, adapt="QKV", logit_bound=1.0, seed=4)
    kern = peers.peer_kernel(p, "favor+", features=12)
    q, k = peers.balanced_projections(p)
    F = {}
    for stab in (True, False):
        U1 = pf.favor_features(q, kern.omega, query=True, stabilize=stab)
        U2 = pf.favor_features(k, kern.omega, query=False, stabilize=stab)
        E = U1 @ np.swapaxes(U2, -1, -2)
        F[stab] = E / E.sum(-1, keepdims=True)
    assert np.max(np.abs(F[True] - F[False])) <= 1e3 * EPS64


def test_favor_features_match_their_formula():
    rng = np.random.default_rng(0)
    X, W = rng.standard_normal((5, 3)), pf.orthogonal_gaussian(7, 3, 1)
    want = np.exp(X @ W.T - np.sum(X * X, axis=1, keepdims=True) / 2) / math.sqrt(7)
    assert np.allclose(pf.favor_features(X, W, query=True, stabilize=False), want, rtol=1e-14, atol=0)


def test_support_basis_features_reproduce_the_hybrid_kernel():
    p = LoRAProblem.random(50, 3, 2, adapt="QKV", logit_bound=4.8, seed=6)
    kern = peers.peer_kernel(p, "support-basis", threshold=0.5)
    assert 0 < kern.rows.sum() < p.L and 0 < kern.cols.sum() < p.L_kv  # both parts exercised
    U1, U2 = _support_factors(p, kern)
    E = U1 @ np.swapaxes(U2, -1, -2)
    h = testing.host_inputs(p)
    W = {m: h["W"][m] + p.scale * h["B"][m] @ h["A"][m] for m in "QKV"}
    want = testing.approx_kernel(kern, h["X"] @ W["Q"], h["X_kv"] @ W["K"], p.beta)
    F, Fw = E / E.sum(-1, keepdims=True), want / want.sum(-1, keepdims=True)  # rows are rescaled
    assert np.max(np.abs(F - Fw)) <= 1e3 * EPS64


def _support_factors(p, kern):
    W = p.weights()
    Q, K = p.beta * (p.X3 @ W["Q"]), p.Xkv3 @ W["K"]
    U1, U2 = feature_maps(Q, K, kern.poly)
    (A,), (B,) = pf.support_basis_features(Q[0], K[0], kern.rows[0], kern.cols[0], [U1[0]], [U2[0]])
    return A[None], B[None]
