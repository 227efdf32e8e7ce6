"""The certificate-violation campaign: it runs clean on the real certificate, finds and stores an
injected violation that replays, detects each kind of broken promise, and rejects bad arguments."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lora_proofcheck.certification import adaptive as ad
from lora_proofcheck.errors import InvalidInputError, InvalidTypeError
from lora_proofcheck.gradients.exact_path import exact_gradients
from lora_proofcheck.sweeps import stress
from lora_proofcheck.testing import FAMILIES, instances, make_problem

SMALL = {"round_size": 48, "cell_size": 8, "progress": False}


def _strip(summary):
    return {k: v for k, v in summary.items() if k != "run"}


@pytest.fixture
def weakened_bound(monkeypatch):
    """The certificate's bound made 1e4 x too small (the certificate is tight to about 1e3 on average) (an injected bug the campaign must find)."""
    original = ad.AdaptiveCertificate.bound_and_floor

    def tenth(self, degree, method="auto", *, chunk_rows=None):
        bound, floor = original(self, degree, method, chunk_rows=chunk_rows)
        return {k: v / 1e4 for k, v in bound.items()}, floor

    monkeypatch.setattr(ad.AdaptiveCertificate, "bound_and_floor", tenth)
    return monkeypatch


def test_a_small_campaign_runs_clean_and_its_summary_is_json_ready():
    s = stress.run_campaign(96, seed=1, **SMALL)
    json.dumps(s, allow_nan=False)
    assert s["schema"] == stress.SUMMARY_SCHEMA and set(stress.SUMMARY_KEYS) <= set(s)
    assert s["cases"] == 96 and s["violations"] == 0 and s["stopped"] == "cases done" and s["rounds"] == 2
    assert s["checked"] + s["declined"] + s["uncertified"] == s["cases"]
    assert s["checked"] > s["cases"] // 2  # the mix is mostly checkable, not mostly refusals
    assert set(s["families"]) == set(FAMILIES)
    for fam in s["families"].values():
        assert fam["cases"] > 0 and (fam["worst_ratio"] is None or 0 <= fam["worst_ratio"] <= 1)
        assert sum(fam["log10_ratio_histogram"].values()) == fam["checked"]
    assert {"dtype=float32", "attention=cross", "batch=N>1", "request=eps", "request=degree"} <= set(s["axes"])
    assert s["worst"][0]["ratio"] == s["worst_ratio"] == max(f["worst_ratio"] or 0 for f in s["families"].values())
    assert s["worst"] == sorted(s["worst"], key=lambda w: -w["ratio"])
    assert s["run"]["runner"] == "serial" and s["run"]["created"]


def test_campaign_is_the_same_serially_and_on_a_cluster(thread_cluster):
    a = stress.run_campaign(64, seed=5, **SMALL)
    b = stress.run_campaign(64, seed=5, scheduler=thread_cluster.scheduler_address, **SMALL)
    assert json.dumps(_strip(a), sort_keys=True) == json.dumps(_strip(b), sort_keys=True)
    assert _strip(a) != _strip(stress.run_campaign(64, seed=6, **SMALL))


def test_later_rounds_mutate_the_worst_cases():
    s = stress.run_campaign(96, seed=2, **SMALL)
    elites = {}
    round0 = stress.generate_round(0, 48, elites, 2)
    assert all(sp["origin"] == "fresh" for sp in round0)
    worst = s["worst"][0]
    parent = {k: worst[k] for k in round0[0]}
    elites[stress.niche(parent)] = [dict(parent, _ratio=worst["ratio"])]
    round1 = stress.generate_round(1, 48, elites, 2)
    mutants = [sp for sp in round1 if sp["origin"].startswith("mutant of")]
    assert len(mutants) == int(stress.EXPLOIT * 48)
    assert all(sp["family"] == parent["family"] and sp["dtype"] == parent["dtype"] for sp in mutants)
    assert all("_ratio" not in sp for sp in mutants)
    assert any(sp["R"] != parent["R"] or sp["seed"] != parent["seed"] for sp in mutants)
    assert stress.generate_round(1, 48, elites, 2) == round1  # a pure function of its inputs


def test_injected_violation_is_found_stored_and_replays(weakened_bound, tmp_path):
    out = tmp_path / "violation.json"
    s = stress.run_campaign(480, seed=0, case_out=out, **SMALL)
    assert s["violations"] >= 1 and s["stopped"] == "violation" and s["cases"] < 480
    v = s["violation"]
    assert v["file"] == str(out) and v["result"]["violation"] and v["result"]["ratio"] > 1
    assert v["result"]["reference"] in ("longdouble", "mpmath")  # float64 could not decide: the precise one did
    case = json.loads(out.read_text())
    assert case["schema"] == stress.CASE_SCHEMA and case["key"] == v["key"]
    # the stored instance is the case's instance, value for value (float32 included)
    problem, _call, _ = stress.load_case(out)
    rebuilt = stress.build(case["spec"])
    assert problem.dtype_name == rebuilt.dtype_name
    np.testing.assert_array_equal(np.asarray(problem.X), np.asarray(rebuilt.X))
    for m in rebuilt.adapted:
        np.testing.assert_array_equal(np.asarray(problem.A[m]), np.asarray(rebuilt.A[m]))
    again = stress.replay(out)
    assert again["violation"] and again["ratio"] == pytest.approx(v["result"]["ratio"], rel=1e-12)
    weakened_bound.undo()  # the real bound: the same instance and call hold
    fixed = stress.replay(out)
    assert not fixed["violation"] and fixed["ratio"] <= 1


def test_non_finite_gradients_under_a_finite_bound_are_a_violation(monkeypatch):
    real = stress.certified_call

    def nan_grads(problem, **kw):
        res = real(problem, **kw)
        return stress.Certified({k: np.full(np.shape(g), np.nan) for k, g in res.grads.items()}, res.bound,
                                res.degree, res.path, res.method)

    monkeypatch.setattr(stress, "certified_call", nan_grads)
    res = stress.check_instance(make_problem("gaussian", 16, 2, 1, R=0.5, seed=1), mode="degree", degree=4)
    assert res["violation"] and "non-finite" in res["kind"]


def test_a_bound_above_the_requested_eps_is_a_violation(monkeypatch):
    real = stress.certified_call

    def loose(problem, **kw):
        res = real(problem, **kw)
        return stress.Certified(res.grads, {k: b * 1e6 for k, b in res.bound.items()}, res.degree, res.path,
                                res.method)

    monkeypatch.setattr(stress, "certified_call", loose)
    res = stress.check_instance(make_problem("aligned", 16, 2, 1, R=0.5, seed=1), mode="eps", eps_rel=1e-6)
    assert res["violation"] and res["kind"] == "certified bound above the requested eps"


def test_an_exception_from_the_certified_call_is_a_stored_finding(monkeypatch, tmp_path):
    def crash(problem, **kw):
        raise FloatingPointError("overflow in the kernel")

    monkeypatch.setattr(stress, "certified_call", crash)
    s = stress.run_campaign(16, case_out=tmp_path / "c.json", **SMALL)
    assert s["violations"] and "FloatingPointError" in s["violation"]["result"]["kind"]
    assert (tmp_path / "c.json").is_file()


def test_a_broken_case_builder_reaches_the_caller_with_its_type(monkeypatch):
    def broken(*a, **k):
        raise ZeroDivisionError("builder bug")

    monkeypatch.setattr(instances, "make_problem", broken)
    with pytest.raises(ZeroDivisionError, match="builder bug") as info:
        stress.run_campaign(16, **SMALL)
    assert any("stress/0/" in n for n in info.value.__notes__)


def test_certified_call_answers_both_requests_and_declines_honestly():
    p = make_problem("gaussian", 24, 2, 1, R=0.5, seed=3)
    by_degree = stress.certified_call(p, degree=3)
    assert by_degree.degree == 3 and by_degree.path == "approx" and set(by_degree.bound) == set(by_degree.grads)
    by_tol = stress.certified_call(p, tol=1e-6)
    assert max(by_tol.bound.values()) <= 1e-6
    assert stress.certified_call(p, tol=1e-300).startswith("declined: ")  # below the rounding floor
    assert stress.certified_call(make_problem("gaussian", 24, 8, 1, R=6.0, seed=3), tol=1e-12).startswith(
        ("cost: ", "declined: "))


def test_precise_reference_is_used_where_float64_cannot_decide(monkeypatch):
    """A bound shrunk to just above the measured error: float64's allowance cannot decide, long double can."""
    if not stress.oracles.LONGDOUBLE_EXTENDED:
        pytest.skip("long double is float64 on this platform (the mpmath reference then decides)")
    real = stress.certified_call
    p = make_problem("aligned", 16, 2, 1, R=1.0, seed=2)
    res0 = real(p, degree=3)
    ref = {k: np.asarray(v) for k, v in exact_gradients(p).items()}
    err = {k: float(np.max(np.abs(np.asarray(res0.grads[k]) - ref[k]))) for k in ref}
    tight = {k: err[k] * (1 + 1e-9) + 1e-300 for k in err}
    monkeypatch.setattr(stress, "certified_call", lambda problem, **kw: stress.Certified(
        res0.grads, tight, 3, "approx", res0.method))
    out = stress.check_instance(p, mode="degree", degree=3)
    assert out["reference"] == "longdouble" and not out["violation"]


# ----------------------------------------------------------------------------------------------
# arguments and stored files


@pytest.mark.parametrize("kw, err, match", [
    ({"cases": 0}, InvalidInputError, "cases must be >= 1"),
    ({"cases": "10"}, InvalidTypeError, "cases must be an integer"),
    ({"cases": 10, "round_size": 0}, InvalidInputError, "round_size"),
    ({"cases": 10, "cell_size": 1.5}, InvalidTypeError, "cell_size"),
    ({"cases": 10, "seed": -1}, InvalidInputError, "seed"),
    ({"cases": 10, "time_limit": 0}, InvalidInputError, "time_limit"),
    ({"cases": 10, "time_limit": math.inf}, InvalidInputError, "time_limit"),
    ({"cases": 10, "workers": 0}, InvalidInputError, "workers"),
    ({"cases": 10, "case_out": 5}, InvalidTypeError, "case_out must be a path"),
])
def test_bad_campaign_arguments(kw, err, match):
    with pytest.raises(err, match=match):
        stress.run_campaign(**kw)


def test_case_out_must_be_writable(tmp_path):
    with pytest.raises(InvalidInputError, match="is a directory"):
        stress.run_campaign(4, case_out=tmp_path)
    with pytest.raises(InvalidInputError, match="does not exist"):
        stress.run_campaign(4, case_out=tmp_path / "no" / "c.json")


def test_bad_stored_files_are_clear_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="case .* not a readable stress case"):
        stress.replay(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "something else"}))
    with pytest.raises(InvalidInputError, match="--replay .*schema"):
        stress.load_case(bad, name="--replay")
    with pytest.raises(InvalidInputError, match="not a readable stress summary .*schema"):
        stress.load_summary(bad)
    s = stress.run_campaign(8, **SMALL)
    good = tmp_path / "s.json"
    stress.write_json(good, s)
    assert stress.load_summary(good) == s
    del s["families"]["edge"]["worst_ratio"], s["axes"]
    stress.write_json(good, s)
    with pytest.raises(InvalidInputError, match="missing axes, families.edge.worst_ratio"):
        stress.load_summary(good)
