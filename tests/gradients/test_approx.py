"""The public approximate-gradient API: certified gradients, thresholds, plan, CLI, bad arguments.

Reference: the exact path in float64 on the same values (`checks.approx_checks.reference`), with its own
certified rounding floor as the allowance. The tolerance API (rtol, atol: numpy.allclose per key,
certified from below), the exact fallback and its reasons, Softmax_1, eps's deprecation. Instance families: `lora_proofcheck.testing`.
"""

from __future__ import annotations

import math

import array_api_strict
import numpy as np
import pytest
from hypothesis import example, given, note, settings, target
from hypothesis import strategies as st

from lora_proofcheck._lib import xp as _xp
from lora_proofcheck.certification import adaptive as ad
from lora_proofcheck.certification import certificate as cm
from lora_proofcheck.certification.polynomial import min_degree
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
# certified gradients: numpy.allclose semantics per key


def _err(res, ref, k):
    return float(np.max(np.abs(np.asarray(_xp.to_numpy(res.grads[k]), np.float64) - ref[k])))


@settings(deadline=None)
@given(problems(max_L=256, max_d=8, ranks=(2, 2), max_R=3.0), st.floats(-8, -1),
       st.sampled_from([0.0, 0.0, 1e-9, 1e-3]), st.sampled_from([0.0, 0.0, 1.0, 20.0]))
@example(aligned_problem(128, 3, 2, 1.0, seed=13, adapt="QV"), -5.0, 0.0, 0.0)
@example(make_problem("residual", 200, 4, 2, R=0.5, adapt="QKV", N=2, cross=True, L_kv=77, seed=3), -6.0, 0.0, 1.0)
@example(make_problem("concentrated", 256, 2, 2, R=2.5, adapt="QK", seed=4), -3.0, 1e-3, 0.0)
def test_certified_allclose_holds_for_any_tolerance(problem, log_rtol, atol, n):
    """Forced onto the approximate path: the bound holds, G_lo <= max|g|, and the claimed allclose is
    true against the float64 exact path (up to the reference's own floor). Softmax_1 (n > 0) too."""
    if n:
        problem = with_offset(problem, n)
    rtol = 10.0**log_rtol
    ref, allowance = reference(problem)
    try:
        res = approx_gradients(problem, rtol=rtol, atol=atol, on_threshold="force")
    except AboveThresholdError as exc:  # unreachable: the reason must say why
        assert any(why in str(exc) for why in ("floor", "no degree", "overflow", "non-finite", "radius"))
        note(f"unreachable: {exc}")
        return
    assert res.path == "approx" and res.allclose
    for k in ref:
        gmax = float(np.max(np.abs(ref[k])))
        assert _err(res, ref, k) <= res.bound[k] + allowance[k]
        assert res.lower[k] <= gmax + allowance[k]
        assert res.bound[k] <= res.tolerance[k] == atol + rtol * res.lower[k]
        assert _err(res, ref, k) <= atol + rtol * gmax + allowance[k] * (1 + rtol)
    ratio = measured_over_bound(res, ref, allowance)
    note(f"g={res.degree} pilots={res.pilots} {res.method} k={res.rank} ratio={ratio:.3g}")
    target(ratio, label="approx: measured/bound")
    record_ratio(ratio, "approx-rtol", problem=problem, degree=res.degree)


def with_offset(problem, n):
    from lora_proofcheck.testing import with_dtype

    p = with_dtype(problem, problem.dtype_name)
    return LoRAProblem(p.X3 if p.batched else p.X3[0], p.Y3 if p.batched else p.Y3[0], p.W, p.A, p.B,
                       alpha=p.alpha, beta=p.beta,
                       X_kv=None if not p.cross else (p.Xkv3 if p.batched else p.Xkv3[0]), normalizer_offset=n)


@settings(deadline=None)
@given(problems(max_L=192, max_d=8, ranks=(2, 2), max_R=3.0, dtypes=("float64", "float32")), st.integers(0, 8))
@example(make_problem("aligned", 96, 3, 2, R=0.5, seed=2, dtype="float32"), 3)
@example(make_problem("residual", 128, 2, 2, R=1.0, adapt="QKV", N=2, seed=6, dtype="float32"), 6)
def test_gradients_within_certified_bound_at_a_given_degree(problem, extra):
    """float32 and float64, degree given: measured error within the bound, rounding floor included."""
    R = logit_bound(problem)
    degree = min(min_degree(min(R, 200.0), 0.5) + extra, 20)
    res = approx_gradients(problem, degree=degree, on_threshold="force")
    assert res.degree == degree and res.rank == feature_rank(problem.d, degree)
    ref, allowance = reference(problem)
    ratio = measured_over_bound(res, ref, allowance)
    note(f"g={degree} delta={res.delta:.3g} floor share {max(res.floor[k] / res.bound[k] for k in ref):.2f}")
    target(ratio, label=f"degree, {problem.dtype_name}: measured/bound")
    record_ratio(ratio, f"approx-degree-{problem.dtype_name}", problem=problem, degree=degree)
    assert ratio <= 1.0


def test_error_and_bound_fall_as_the_degree_grows():
    problem = make_problem("gaussian", 256, 3, 2, R=1.5, adapt="QKV", seed=5)
    ref, _ = reference(problem)
    errors, bounds = [], []
    for g in range(2, 13):
        res = approx_gradients(problem, degree=g, on_threshold="force")
        errors.append(max(_err(res, ref, k) for k in ref))
        bounds.append(max(res.bound.values()))
    assert all(b2 < b1 for b1, b2 in zip(bounds, bounds[1:]))
    assert all(e2 < e1 for e1, e2 in zip(errors, errors[2:]))
    assert errors[-1] < 1e-7 * errors[0]
    assert all(e <= b for e, b in zip(errors, bounds))


def test_default_takes_the_approximate_path_once_it_pays_off():
    problem = LoRAProblem.random(4096, 2, 2, adapt="QKV", logit_bound=1.0, seed=0)
    res = approx_gradients(problem, rtol=1e-3)
    assert res.path == "approx" and res.allclose and res.reason == "" and res.cost["ratio"] < 1.0
    assert res.rank == feature_rank(2, res.degree) and res.paper_rank == paper_rank_bound(2, res.degree)
    assert res.classes >= 1 and res.logit_bound <= logit_bound(problem) * (1 + 1e-9)
    assert set(res.method.split("+")) <= {"taylor", "chebyshev"}
    ref, allowance = reference(problem)
    for k in ref:
        assert _err(res, ref, k) <= res.bound[k] + allowance[k] <= 1e-3 * float(np.max(np.abs(ref[k]))) + 2 * allowance[k]
    assert math.isfinite(float(res.loss))


def test_small_L_returns_the_exact_path_with_the_reason():
    problem = LoRAProblem.random(200, 8, 4, adapt="QKV", logit_bound=1.0, seed=0)
    res = approx_gradients(problem, rtol=1e-3)
    assert res.path == "exact" and "L = 200" in res.reason and res.degree is None and res.allclose
    exact = exact_gradients(problem)
    for k in exact:
        np.testing.assert_array_equal(res.grads[k], exact[k])
    with pytest.raises(AboveThresholdError, match="L = 200"):
        approx_gradients(problem, rtol=1e-3, on_threshold="raise")


def test_above_the_threshold_the_default_is_exact_and_raise_names_the_cause():
    """Large R for the given L: the largest rank predicted faster misses the tolerance (measured, not
    just bounded); the default returns the exact path with the reason, "raise" raises it."""
    problem = make_problem("edge", 1024, 4, 2, R=12.0, seed=31, adapt="QV")  # logits at both ends of [-R, R]
    ref, allowance = reference(problem)
    res = approx_gradients(problem, rtol=1e-3)
    assert res.path == "exact" and "above the threshold" in res.reason and res.allclose
    assert measured_over_bound(res, ref, allowance) <= 1.0
    with pytest.raises(AboveThresholdError, match="threshold") as info:
        approx_gradients(problem, rtol=1e-3, on_threshold="raise")
    assert "on_threshold" in str(info.value)
    g = largest_cheaper_degree(cm.certify(problem))
    cert = ad.certify_adaptive(problem)
    g = max(h for h in range(1, g + 1) if cert.feature_plan(h).overflow_free)  # the largest one it can run
    forced = approx_gradients(problem, degree=g, on_threshold="force")
    assert max(_err(forced, ref, k) / float(np.max(np.abs(ref[k]))) for k in ref) > 1e-3
    assert measured_over_bound(forced, ref, allowance) <= 1.0


def test_an_explicit_degree_that_misses_the_tolerance():
    problem = aligned_problem(64, 4, 2, 6.0, seed=3, adapt="QKV")
    ref, allowance = reference(problem)
    with pytest.raises(AboveThresholdError, match="degree=1 certifies"):
        approx_gradients(problem, rtol=1e-6, degree=1, on_threshold="raise")
    fallback = approx_gradients(problem, rtol=1e-6, degree=1)
    assert fallback.path == "exact" and "degree=1" in fallback.reason
    weak = approx_gradients(problem, rtol=1e-6, degree=1, on_threshold="force")
    assert weak.degree == 1 and not weak.allclose and measured_over_bound(weak, ref, allowance) <= 1.0


def test_eps_is_a_deprecated_alias_of_atol():
    problem = LoRAProblem.random(2048, 2, 2, adapt="QV", logit_bound=0.5, seed=1)
    with pytest.warns(DeprecationWarning, match="atol"):
        res = approx_gradients(problem, eps=1e-3)
    assert res.atol == 1e-3 and res.rtol == 0.0 and res.allclose
    assert all(res.bound[k] <= 1e-3 for k in res.bound)


def test_softmax1_on_both_paths():
    """Softmax_1 (n = 1): certified on the approximate path and on the exact fallback."""
    problem = LoRAProblem.random(2048, 4, 2, adapt="QKV", logit_bound=1.0, seed=2, normalizer_offset=1.0)
    ref, allowance = reference(problem)
    res = approx_gradients(problem, rtol=1e-3)
    assert res.path == "approx" and res.allclose and measured_over_bound(res, ref, allowance) <= 1.0
    small = LoRAProblem.random(64, 4, 2, adapt="QKV", logit_bound=1.0, seed=2, normalizer_offset=3.0)
    ref, allowance = reference(small)
    ex = approx_gradients(small, rtol=1e-3)
    assert ex.path == "exact" and ex.allclose and measured_over_bound(ex, ref, allowance) <= 1.0


def test_array_api_strict_gives_the_same_result():
    a = approx_gradients(make_problem("gaussian", 64, 2, 2, R=0.5, seed=8), degree=4, on_threshold="force")
    b = approx_gradients(make_problem("gaussian", 64, 2, 2, R=0.5, seed=8, xp=array_api_strict), degree=4,
                         on_threshold="force")
    for k in a.grads:
        np.testing.assert_allclose(np.asarray(b.grads[k]), a.grads[k], rtol=1e-12, atol=1e-14)
        assert b.bound[k] == pytest.approx(a.bound[k], rel=1e-12)


# ----------------------------------------------------------------------------------------------
# bad arguments


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(eps=0.0), InvalidInputError, "rtol and atol"), (dict(eps=-1e-3), InvalidInputError, "eps"),
    (dict(eps=math.nan), InvalidInputError, "eps"), (dict(eps=math.inf), InvalidInputError, "eps"),
    (dict(eps="tiny"), InvalidTypeError, "eps"), (dict(eps=True), InvalidTypeError, "eps"),
    (dict(rtol=-1.0), InvalidInputError, "rtol"), (dict(atol=math.nan), InvalidInputError, "atol"),
    (dict(rtol=True), InvalidTypeError, "rtol"), (dict(rtol=0.0, atol=0.0), InvalidInputError, "rtol"),
    (dict(max_degree=0), InvalidInputError, "max_degree"), (dict(centre_queries="yes"), InvalidInputError,
                                                            "centre_queries"),
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


def test_a_degree_that_would_not_fit_in_memory_never_runs(monkeypatch):
    """The memory guard: a degree whose modelled peak exceeds the share of available memory is
    refused before any array is formed; "force" says so, the default falls back to the exact path."""
    from lora_proofcheck.gradients import approx as approx_mod

    p = LoRAProblem.random(512, 4, 2, adapt="QV", logit_bound=1.0, seed=2)
    ran = []
    monkeypatch.setattr(approx_mod, "plan_weight_gradients", lambda *a, **k: ran.append(1) or 1 / 0)
    monkeypatch.setattr(approx_mod, "available_memory", lambda: 1 << 16)  # 64 KiB: no degree fits
    with pytest.raises(AboveThresholdError, match=r"GiB available"):
        approx_gradients(p, rtol=1e-6, on_threshold="force")
    with pytest.raises(AboveThresholdError, match=r"GiB available"):
        approx_gradients(p, degree=3, on_threshold="force")
    res = approx_gradients(p, rtol=1e-6, on_threshold="exact")
    assert res.path == "exact" and not ran


def test_the_memory_model_is_within_a_factor_two_of_the_traced_peak(monkeypatch):
    import tracemalloc

    from lora_proofcheck.gradients import lowrank_path

    monkeypatch.setattr(lowrank_path, "recycle_block_memory", lambda xp: None)  # the untouched ballast
    for L, d, g, N in ((2048, 8, 6, 1), (1024, 8, 8, 1), (256, 4, 10, 2)):
        p = LoRAProblem.random(L, d, 2, adapt="QKV", logit_bound=1.0, seed=0, N=N)
        plan = ad.certify_adaptive(p).feature_plan(g)
        tracemalloc.start()
        try:
            lowrank_path.plan_weight_gradients(p, plan, "QKV")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        model = lowrank_path.chunked_bytes(p, feature_rank(d, g), "QKV")
        assert peak <= 2 * model, (L, d, g, peak, model)  # the guard doubles the model


def test_a_degree_inside_the_tie_band_is_not_cheaper(monkeypatch):
    """'Cheaper' means predicted below (1 - timing.TIE) of the exact path's time: a degree predicted
    0.975 x the exact path (issue 10's L = 2^13 cell, measured 1.08 x) is not taken."""
    from lora_proofcheck.gradients import approx as approx_mod
    from lora_proofcheck.gradients import timing

    assert timing.faster_than_exact(0.89, 1.0) and not timing.faster_than_exact(0.95, 1.0)
    p = LoRAProblem.random(4096, 8, 4, adapt="QKV", logit_bound=1.0, seed=0)
    search = approx_mod.Search(p, 1e-3, 0.0, "auto", None, 30, "auto")
    ratio = {g: search.seconds(g) / search.exact_seconds for g in range(1, 31)}
    cheap = search.cheaper_degrees()
    assert cheap == [g for g in range(1, len(cheap) + 1) if ratio[g] < 1 - timing.TIE]
    monkeypatch.setattr(timing, "TIE", 0.0)
    wide = search.cheaper_degrees()
    assert set(cheap) <= set(wide) and all(ratio[g] < 1 for g in wide)
    last = wide[-1]
    monkeypatch.setattr(timing, "TIE", 1.0 - ratio[last] + 1e-9)   # the last one now sits in the band
    assert search.cheaper_degrees() == wide[:-1]
    monkeypatch.setattr(timing, "TIE", 1.0)                         # nothing beats a band this wide
    res = approx_gradients(p, rtol=1e-3)
    assert res.path == "exact" and "tie band" in res.reason


def test_the_jump_to_the_final_degree_saves_pilots_and_stays_certified(monkeypatch):
    """Step 2's jump (approx.py): after the first pilot the search runs the degree its values point to.
    On the benchmark family at L = 2^14 (default rates; about 4 s) that is the whole search: pilot 2,
    then 5, where stepping ran 2, 3 and then 5. Either way the answer is certified against an exact
    reference."""
    from lora_proofcheck.gradients import approx as approx_mod
    from lora_proofcheck.gradients import timing

    monkeypatch.setattr(timing, "load_rates", lambda: timing.DEFAULT_RATES)
    p = LoRAProblem.random(16384, 8, 4, adapt="QKV", logit_bound=1.0, seed=0)
    ref = exact_gradients(p)
    runs, margin0 = {}, approx_mod.JUMP_MARGIN
    for margin in (margin0, 0.0):                     # 0: no guess ever meets the tolerance, no jump
        monkeypatch.setattr(approx_mod, "JUMP_MARGIN", margin)
        res = approx_gradients(p, rtol=1e-3)
        assert res.path == "approx" and res.allclose
        for k in ref:
            err = float(np.max(np.abs(np.asarray(res.grads[k]) - np.asarray(ref[k]))))
            assert err <= res.bound[k] <= res.tolerance[k]
            assert res.lower[k] <= float(np.max(np.abs(np.asarray(ref[k]))))
        runs[margin] = res
    jumped, stepped = runs[margin0], runs[0.0]
    assert len(jumped.pilots) < len(stepped.pilots) and jumped.degree == stepped.degree
