"""Per-head figures, the planner, the frontier and the regime label (no model needed): every head's logit
bound covers its true max |S_ij|, the planner's degree is the smallest certified one, its lower bound is
proved (every degree below fails)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lora_proofcheck.audit import figures
from lora_proofcheck.certification import polynomial
from lora_proofcheck.errors import InvalidInputError
from lora_proofcheck.gradients import costs
from lora_proofcheck.gradients.planner import logit_bound


def _head(seed, L=48, d_h=8, scale=1.0):
    rng = np.random.default_rng(seed)
    q = scale * rng.standard_normal((L, d_h)) + rng.standard_normal(d_h)  # a shared offset, like real heads
    k = scale * rng.standard_normal((L, d_h))
    return q, k


def test_head_problem_has_exactly_the_heads_logits():
    q, k = _head(0)
    p = figures.head_problem(q, k, scaling=0.3)
    X = np.asarray(p.X)
    C1, C2 = X @ np.asarray(p.W["Q"]), X @ np.asarray(p.W["K"])
    d_h = q.shape[1]
    # 0/1 selections: exact in float64, so C1 C2^T = q k^T up to the order of the dot products
    assert np.array_equal(C1[:, :d_h], q) and not C1[:, d_h:].any()
    assert np.array_equal(C2[:, :d_h], k) and not C2[:, d_h:].any()
    assert p.beta == 0.3 and p.L == q.shape[0] and not p.cross


def test_head_problem_rejects_mismatched_shapes():
    with pytest.raises(InvalidInputError, match="q and k"):
        figures.head_problem(np.ones((4, 2)), np.ones((5, 2)), scaling=1.0)


@given(
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(0.05, 20.0),
    scaling=st.floats(0.01, 2.0),
    causal=st.booleans(),
)
def test_logit_bound_covers_the_true_logits(seed, scale, scaling, causal):
    q, k = _head(seed, scale=scale)
    visible = np.tril(np.ones((q.shape[0],) * 2, dtype=bool)) if causal else None
    f = figures.head_figures(q, k, scaling=scaling, visible=visible, frontier=0.0, rtols=())
    S = figures.logits(q, k, scaling)
    true = np.abs(S[visible]).max() if causal else np.abs(S).max()
    assert f["max_abs_logit"] == pytest.approx(true, rel=1e-15)
    assert f["logit_bound"] >= f["max_abs_logit"]
    # Cauchy-Schwarz, computed independently here; the certificate adds the rounding of X W (~1e-13)
    # and a 2^-30 relative margin for its own arithmetic
    cs = scaling * np.linalg.norm(q, axis=1).max() * np.linalg.norm(k, axis=1).max()
    assert cs <= f["logit_bound"] <= cs * (1 + 1e-8)


def test_head_figures_against_hand_computed_values():
    q = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    k = np.array([[3.0, 0.0], [0.0, -1.0], [1.0, 1.0]])
    f = figures.head_figures(q, k, scaling=0.5, frontier=0.0, rtols=())
    # S = 0.5 q k^T = [[1.5, 0, .5], [0, -1, 1], [1.5, -.5, 1]]
    assert f["max_abs_logit"] == 1.5
    assert f["row_half_range_max"] == pytest.approx(1.0)  # rows: .75, 1, 1
    assert f["row_half_range_median"] == pytest.approx(1.0)
    assert f["norm_XW_Q"] == 2.0 and f["norm_XW_K"] == 3.0 and f["Gamma"] == 3.0
    assert f["logit_bound"] == pytest.approx(0.5 * 2.0 * 3.0, rel=1e-8)
    assert f["Gamma_over_sqrt_log_L"] == pytest.approx(3.0 / math.sqrt(math.log(3)))
    # causal: row 0 sees key 0 only, row 1 keys 0-1
    fc = figures.head_figures(
        q, k, scaling=0.5, visible=np.tril(np.ones((3, 3), bool)), frontier=0.0, rtols=()
    )
    assert fc["max_abs_logit"] == 1.5
    assert fc["row_half_range_max"] == pytest.approx(1.0)  # row 2: (1.5 - (-.5)) / 2
    assert fc["row_half_range_median"] == pytest.approx(0.5)  # rows: 0, .5, 1


@pytest.mark.parametrize("R", [0.05, 0.5, 3.0, 7.4])
@pytest.mark.parametrize("rtol", [1e-2, 1e-4])
def test_planner_degree_is_the_smallest_certified_and_the_lower_bound_is_below_it(R, rtol):
    need = figures.certified_requirement(R, d=32, L=512, rtol=rtol)
    g = need["degree"]
    assert need["degree_exact"] and g is not None
    assert polynomial.exp_polynomial(R, degree=g).rel_error <= rtol
    if g > 0:
        assert polynomial.exp_polynomial(R, degree=g - 1).rel_error > rtol
    assert need["degree_lower_bound"] <= g
    assert need["rank"] == math.comb(32 + g, g)
    approx = costs.lowrank_flops(512, 512, 32, need["rank"], "QV") + costs.feature_flops(512, 512, 32, g)
    assert need["cost_ratio"] == pytest.approx(approx / costs.exact_flops(512, 512, 32, "QV"))
    assert need["certifiable"] == (need["cost_ratio"] < 1.0)


def test_planner_reports_a_lower_bound_above_the_search_radius():
    need = figures.certified_requirement(30.0, d=32, L=512, rtol=1e-2, exact_degree_radius=8.0)
    assert need["degree"] is None and need["bounds_are_lower"] and need["certifiable"] is False
    g = need["degree_lower_bound"]
    # every degree below the lower bound fails, for both of the package's methods
    for method in ("taylor", "chebyshev"):
        assert polynomial.exp_polynomial(30.0, degree=g - 1, method=method).rel_error > 1e-2
    assert need["rank"] == math.comb(32 + g, g)


def test_frontier_is_the_edge_of_certifiability():
    for L in (512, 4096):
        R = figures.certifiable_frontier(L, 32)
        assert R > 0
        assert figures.certified_requirement(R, d=32, L=L, rtol=1e-2)["certifiable"]
        assert not figures.certified_requirement(R * 1.01, d=32, L=L, rtol=1e-2)["certifiable"]
    assert figures.certifiable_frontier(16, 32) == 0.0  # even degree 0 costs more than the exact path


def test_regime_cuts():
    L = 512
    front = figures.certifiable_frontier(L, 32)
    assert figures.regime(front, L, front) == "below"
    assert figures.regime(front * 1.001, L, front) == "near"
    assert figures.regime(math.log(L), L, front) == "near"
    assert figures.regime(math.log(L) * 1.001, L, front) == "above"


def test_logit_bound_is_the_package_certificate():
    """The audit's R is approx.logit_bound on the head's problem: it follows the certificate."""
    q, k = _head(3, scale=2.0)
    f = figures.head_figures(q, k, scaling=0.25, frontier=0.0, rtols=())
    assert f["logit_bound"] == logit_bound(figures.head_problem(q, k, scaling=0.25))
