"""The public approximate-gradient API: certified gradients, thresholds, plan, CLI, bad arguments.

Reference: the exact path in float64 on the same values (`checks.approx_checks.reference`), with its own
certified rounding floor as the allowance. Instance families: `lora_proofcheck.testing`.
"""

from __future__ import annotations

import math

import array_api_strict
import numpy as np
import pytest
from hypothesis import example, given, note, settings, target
from hypothesis import strategies as st

from lora_proofcheck._lib import xp as _xp
from lora_proofcheck.certification import certificate as cm
from lora_proofcheck.certification.polynomial import exp_polynomial, min_degree
from lora_proofcheck.checks.approx_checks import reference
from lora_proofcheck.errors import AboveThresholdError, InvalidInputError, InvalidTypeError
from lora_proofcheck.gradients.approx import ApproxResult, approx_gradients
from lora_proofcheck.gradients.exact_path import exact_gradients
from lora_proofcheck.gradients.planner import largest_cheaper_degree, logit_bound, threshold_report
from lora_proofcheck.kernels.features import feature_rank, paper_rank_bound
from lora_proofcheck.problem import LoRAProblem
from lora_proofcheck.testing import aligned_problem, make_problem
from lora_proofcheck.testing.strategies import problems, record_ratio


def measured_over_bound(result: ApproxResult, ref: dict, allowance: dict) -> float:
    return max(float(np.max(np.abs(np.asarray(_xp.to_numpy(result.grads[k]), np.float64) - ref[k])))
               / (result.bound[k] + allowance[k]) for k in ref)


# ----------------------------------------------------------------------------------------------
# certified gradients


@settings(deadline=None)
@given(problems(max_L=256, max_d=8, ranks=(2, 2), max_R=3.0), st.floats(-10, -2))
@example(aligned_problem(128, 3, 2, 1.0, seed=13, adapt="QV"), -5.0)
@example(make_problem("residual", 200, 4, 2, R=0.5, adapt="QKV", N=2, cross=True, L_kv=77, seed=3), -8.0)
@example(make_problem("concentrated", 256, 2, 2, R=2.5, adapt="QK", seed=4), -3.0)
def test_gradients_within_certified_bound_for_requested_eps(problem, log_eps):
    """eps from 1e-2 to 1e-10 (relative to the gradients' scale): the smallest certified degree
    meets eps, the degree below does not, and the measured error stays within the bound."""
    ref, allowance = reference(problem)
    eps = 10.0**log_eps * max(float(np.max(np.abs(v))) for v in ref.values())
    try:
        res = approx_gradients(problem, eps=eps, on_threshold="force")
    except AboveThresholdError as exc:  # eps unreachable: the reason must say why
        assert any(why in str(exc) for why in ("floor", "no degree", "below", "uncontrolled"))
        note(f"unreachable: {exc}")
        return
    assert res.path == "approx" and max(res.bound.values()) <= eps
    if res.degree > 0:
        cert = cm.certify(problem)
        below = exp_polynomial(cert.logit_bound, degree=res.degree - 1)
        assert max(cert.bound(below).values()) > eps
    ratio = measured_over_bound(res, ref, allowance)
    note(f"g={res.degree} {res.method} k={res.rank} ratio={ratio:.3g}")
    target(ratio, label="approx: measured/bound")
    record_ratio(ratio, "approx-eps", problem=problem, degree=res.degree)
    assert ratio <= 1.0


@settings(deadline=None)
@given(problems(max_L=192, max_d=8, ranks=(2, 2), max_R=3.0, dtypes=("float64", "float32")), st.integers(0, 8))
@example(make_problem("aligned", 96, 3, 2, R=0.5, seed=2, dtype="float32"), 3)
@example(make_problem("residual", 128, 2, 2, R=1.0, adapt="QKV", N=2, seed=6, dtype="float32"), 6)
def test_gradients_within_certified_bound_at_a_given_degree(problem, extra):
    """float32 and float64, degree given: measured error within the bound, rounding floor included."""
    R = logit_bound(problem)
    degree = min_degree(R, 0.5) + extra
    res = approx_gradients(problem, eps=1e300, degree=degree, on_threshold="force")
    assert res.degree == degree and res.rank == feature_rank(problem.d, degree)
    ref, allowance = reference(problem)
    ratio = measured_over_bound(res, ref, allowance)
    note(f"g={degree} delta={res.delta:.3g} floor share {max(res.floor[k] / res.bound[k] for k in ref):.2f}")
    target(ratio, label=f"degree, {problem.dtype_name}: measured/bound")
    record_ratio(ratio, f"approx-degree-{problem.dtype_name}", problem=problem, degree=degree)
    assert ratio <= 1.0


def test_error_falls_as_the_degree_grows():
    problem = make_problem("gaussian", 256, 3, 2, R=1.5, adapt="QKV", seed=5)
    ref, _ = reference(problem)
    errors, bounds = [], []
    for g in range(2, 13):
        res = approx_gradients(problem, eps=1e300, degree=g, on_threshold="force")
        errors.append(max(float(np.max(np.abs(res.grads[k] - ref[k]))) for k in ref))
        bounds.append(max(res.bound.values()))
    assert all(b2 < b1 for b1, b2 in zip(bounds, bounds[1:]))
    assert all(e2 < e1 for e1, e2 in zip(errors, errors[2:]))
    assert errors[-1] < 1e-7 * errors[0]
    assert all(e <= b for e, b in zip(errors, bounds))


def test_phase_transition_above_the_threshold():
    """Large R for the given L: the largest rank still cheaper than the exact path misses eps
    (measured, not just bounded), and the default call says so."""
    for R, L, d in ((12.0, 128, 4), (12.0, 256, 2)):
        problem = aligned_problem(L, d, 2, R, seed=31, adapt="QV")
        ref, _ = reference(problem)
        eps = 1e-3 * max(float(np.max(np.abs(v))) for v in ref.values())
        with pytest.raises(AboveThresholdError, match=r"R = .*L = .*rank"):
            approx_gradients(problem, eps=eps)
        g = largest_cheaper_degree(cm.certify(problem))
        assert g is not None
        res = approx_gradients(problem, eps=eps, degree=g, on_threshold="force")
        assert res.cost["ratio"] < 1.0
        err = max(float(np.max(np.abs(res.grads[k] - ref[k]))) for k in ref)
        assert err > eps


def test_below_the_threshold_the_approximate_path_is_chosen_and_cheaper():
    problem = LoRAProblem.random(512, 1, 2, adapt="QV", logit_bound=0.5, seed=7)
    ref, allowance = reference(problem)
    eps = 1e-4 * max(float(np.max(np.abs(v))) for v in ref.values())
    res = approx_gradients(problem, eps=eps)
    assert res.path == "approx" and res.cost["ratio"] < 1.0
    assert res.rank == feature_rank(1, res.degree) and res.paper_rank == paper_rank_bound(1, res.degree)
    assert res.delta == exp_polynomial(res.logit_bound, degree=res.degree, method=res.method).rel_error
    assert res.logit_bound == logit_bound(problem)
    assert set(res.grads) == set(ref) == set(res.bound) == set(res.floor)
    assert measured_over_bound(res, ref, allowance) <= 1.0
    assert math.isfinite(float(res.loss))


def test_on_threshold_modes():
    problem = aligned_problem(64, 4, 2, 6.0, seed=3, adapt="QKV")
    ref, allowance = reference(problem)
    eps = 1e-4 * max(float(np.max(np.abs(v))) for v in ref.values())
    with pytest.raises(AboveThresholdError) as info:
        approx_gradients(problem, eps=eps)
    msg = str(info.value)
    assert "R = 6" in msg and "L = 64" in msg and "on_threshold" in msg
    exact = approx_gradients(problem, eps=eps, on_threshold="exact")
    assert exact.path == "exact" and exact.degree is None and exact.rank is None
    for k in ref:
        np.testing.assert_array_equal(exact.grads[k], exact_gradients(problem)[k])
        assert 0 < exact.bound[k] < eps
    assert measured_over_bound(exact, ref, allowance) <= 1.0
    forced = approx_gradients(problem, eps=eps, on_threshold="force")
    assert forced.path == "approx" and forced.cost["ratio"] >= 1.0 and max(forced.bound.values()) <= eps
    assert measured_over_bound(forced, ref, allowance) <= 1.0
    # an explicit degree that misses eps: raise, fall back, or force (and report the true bound)
    with pytest.raises(AboveThresholdError, match="certifies only"):
        approx_gradients(problem, eps=eps, degree=1)
    assert approx_gradients(problem, eps=eps, degree=1, on_threshold="exact").path == "exact"
    weak = approx_gradients(problem, eps=eps, degree=1, on_threshold="force")
    assert weak.degree == 1 and max(weak.bound.values()) > eps


def test_array_api_strict_gives_the_same_result():
    a = approx_gradients(make_problem("gaussian", 64, 2, 2, R=0.5, seed=8), eps=1e300, degree=4,
                         on_threshold="force")
    b = approx_gradients(make_problem("gaussian", 64, 2, 2, R=0.5, seed=8, xp=array_api_strict), eps=1e300,
                         degree=4, on_threshold="force")
    for k in a.grads:
        np.testing.assert_allclose(np.asarray(b.grads[k]), a.grads[k], rtol=1e-12, atol=1e-14)
        assert b.bound[k] == pytest.approx(a.bound[k], rel=1e-12)


# ----------------------------------------------------------------------------------------------
# bad arguments


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(eps=0.0), InvalidInputError, "eps"), (dict(eps=-1e-3), InvalidInputError, "eps"),
    (dict(eps=math.nan), InvalidInputError, "eps"), (dict(eps=math.inf), InvalidInputError, "eps"),
    (dict(eps="tiny"), InvalidTypeError, "eps"), (dict(eps=True), InvalidTypeError, "eps"),
    (dict(degree=-1), InvalidInputError, "degree"), (dict(degree=2.5), InvalidTypeError, "degree"),
    (dict(degree=True), InvalidTypeError, "degree"),
    (dict(on_threshold="ignore"), InvalidInputError, "on_threshold"),
    (dict(on_threshold=None), InvalidInputError, "on_threshold"),
    (dict(method="remez"), InvalidInputError, "method"),
    (dict(threads=0), InvalidInputError, "threads"), (dict(threads="2"), InvalidTypeError, "threads"),
])
def test_approx_gradients_rejects_bad_arguments(kwargs, exc, name):
    problem = LoRAProblem.random(8, 2, 1, seed=0)
    with pytest.raises(exc, match=name):
        approx_gradients(problem, **kwargs)


def test_thread_count_does_not_change_the_result():
    """Row chunks are added in chunk order whatever thread computed them: with the BLAS itself on
    one thread (so its own blocking cannot differ), 1 and 2 chunk threads give bitwise the same
    gradients, and repeated threaded runs are reproducible."""
    from threadpoolctl import threadpool_limits

    problem = LoRAProblem.random(5000, 8, 2, adapt="QKV", logit_bound=1.0, seed=3)  # 3 chunks (k = 495)
    with threadpool_limits(limits=1, user_api="blas"):
        one = approx_gradients(problem, degree=4, on_threshold="force", threads=1)
    two = approx_gradients(problem, degree=4, on_threshold="force", threads=2)
    again = approx_gradients(problem, degree=4, on_threshold="force", threads=2)
    assert one.path == two.path == "approx"
    assert all(np.array_equal(one.grads[k], two.grads[k]) for k in one.grads)
    assert all(np.array_equal(again.grads[k], two.grads[k]) for k in one.grads)


def test_non_problems_are_rejected():
    for fn in (approx_gradients, logit_bound, threshold_report):
        with pytest.raises(InvalidTypeError, match="problem"):
            fn(np.zeros((3, 3)))
