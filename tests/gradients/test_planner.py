"""The planner: the threshold report's definitions, and `plan` (no data) against the data's certificate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lora_proofcheck.certification import certificate as cm
from lora_proofcheck.errors import InvalidInputError, InvalidTypeError
from lora_proofcheck.gradients.approx import approx_gradients
from lora_proofcheck.gradients.planner import Plan, logit_bound, plan, threshold_report
from lora_proofcheck.kernels.features import feature_rank
from lora_proofcheck.testing import make_problem, upcast


def test_threshold_report_matches_its_definitions():
    problem = make_problem("gaussian", 100, 4, 2, R=2.0, adapt="QKV", cross=True, L_kv=60, N=2, seed=9)
    rep = threshold_report(problem)
    proj = cm.projections(problem)
    for m in "QKV":
        assert rep[f"norm_XW_{m}"] == pytest.approx(float(np.max(np.abs(proj["C"][m]))))
    assert rep["Gamma"] == max(rep["norm_XW_Q"], rep["norm_XW_K"])
    assert rep["sqrt_log_L"] == pytest.approx(math.sqrt(math.log(100)))
    assert rep["Gamma_over_sqrt_log_L"] == pytest.approx(rep["Gamma"] / rep["sqrt_log_L"])
    assert rep["logit_bound"] == logit_bound(problem) == pytest.approx(2.0, rel=1e-9)
    assert "Thm 4.1" in rep["statement"] and "sqrt(log L)" in rep["statement"]


def test_plan_feasible_and_above_threshold():
    ok = plan(1 << 16, 2, 0.5, rtol=0.0, atol=1e-3, adapt="QV", r=4)
    assert isinstance(ok, Plan) and ok.feasible and ok.cost["ratio"] < 1.0
    assert ok.rank == feature_rank(2, ok.degree) and ok.bound <= ok.tolerance == 1e-3
    assert ok.max_cheaper_degree >= ok.degree
    assert ok.cost["approx_seconds"] < ok.cost["exact_seconds"] and "defaults" in ok.cost["rates"]
    rel = plan(1 << 16, 2, 0.5, rtol=1e-3, adapt="QV", r=4)
    assert rel.tolerance == pytest.approx(1e-3 * rel.gradient_scale) and rel.bound <= rel.tolerance
    given = plan(1 << 16, 2, 0.5, rtol=1e-3, gradient_scale=2.0, adapt="QV", r=4)
    assert given.gradient_scale == 2.0 and given.tolerance == pytest.approx(2e-3)
    with pytest.warns(DeprecationWarning, match="atol"):
        old = plan(1 << 16, 2, 0.5, 1e-3, adapt="QV", r=4)
    assert old.degree == ok.degree and old.atol == 1e-3 and old.rtol == 0.0
    above = plan(256, 8, 20.0, rtol=0.0, atol=1e-6, adapt="QKV")
    assert not above.feasible and "above the threshold" in above.reason
    assert set(ok.assumptions) >= {"beta", "alpha", "input_bound", "query_bound", "key_bound"}


def test_plan_is_conservative_for_data_within_its_magnitudes():
    problem = make_problem("gaussian", 512, 2, 2, R=0.5, adapt="QV", seed=10)
    proj = cm.projections(problem)
    host = upcast(problem)
    mags = dict(input_bound=float(np.max(np.abs(host.X))), value_bound=float(np.max(np.abs(proj["C"]["V"]))),
                target_bound=float(np.max(np.abs(host.Y))), query_bound=float(np.max(np.abs(proj["C"]["Q"]))),
                key_bound=float(np.max(np.abs(proj["C"]["K"]))),
                adapter_bound=max(float(np.max(np.abs(v)))
                                  for v in list(host.A.values()) + list(host.B.values())))
    eps = 1e-2
    p = plan(512, 2, logit_bound(problem), rtol=0.0, atol=eps, adapt="QV", r=2, beta=problem.beta,
             alpha=problem.alpha, **mags)
    res = approx_gradients(problem, rtol=0.0, atol=eps, on_threshold="force")
    assert p.degree >= res.degree


@pytest.mark.parametrize("kwargs, name", [
    (dict(L=0), "L"), (dict(d=1.5), "d"), (dict(logit_bound=-1.0), "logit_bound"), (dict(eps=0.0), "rtol and atol"),
    (dict(adapt="QX"), "adapt"), (dict(r=0), "r"), (dict(method="remez"), "method"),
    (dict(dtype="float16"), "dtype"), (dict(input_bound=math.inf), "input_bound"), (dict(L_kv=-3), "L_kv"),
])
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_plan_rejects_bad_arguments(kwargs, name):
    args = dict(L=128, d=2, logit_bound=1.0, eps=1e-4)
    args.update(kwargs)
    with pytest.raises((InvalidInputError, InvalidTypeError), match=name):
        plan(args.pop("L"), args.pop("d"), args.pop("logit_bound"), args.pop("eps"), **args)

