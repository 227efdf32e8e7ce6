"""The ledger's verdicts follow the checks, the errata re-checks can fail, the searches reproduce
the stored counterexamples, and the dense chain oracle agrees with the exact path."""

import copy
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lora_proofcheck._lib.records import Outcome, Skip, run_check
from lora_proofcheck.gradients.exact_path import exact_gradients
from lora_proofcheck.problem import LoRAProblem
from lora_proofcheck.report.claims import ledger
from lora_proofcheck.report.config import ReportConfig
from lora_proofcheck.report.context import Context
from lora_proofcheck.report.errata import catalogue as errata
from lora_proofcheck.report.errata import search
from lora_proofcheck.report.errata.evaluators import EVALUATORS
from lora_proofcheck.report.errata.instances import load, problem_from_json, problem_to_json, stored_names
from lora_proofcheck.testing import dense_chain as chain


def _o(role, holds, status="ran", required=True):
    return Outcome("c", holds, "", role=role, status=status, required=required)


def test_verdict_rules():
    V = ledger.verdict
    assert V(ledger.SYMBOLIC, [_o("claim", True)]) == "verified"
    assert V(ledger.SYMBOLIC, [_o("claim", True), _o("literal", False)]) == "verified-with-correction"
    assert V(ledger.SYMBOLIC, [_o("claim", True), _o("literal", True)]) == "verified"
    assert V(ledger.NUMERIC, [_o("claim", False), _o("claim", True)]) == "refuted"
    assert V(ledger.ASYMPTOTIC, [_o("claim", True), _o("literal", False)]) == "supported-with-correction"
    assert V(ledger.ASYMPTOTIC, [_o("claim", False)]) == "not supported"
    assert V(ledger.SYMBOLIC, [_o("claim", True), _o("claim", None, "skipped")]) == "inconclusive"
    assert V(ledger.SYMBOLIC, [_o("claim", True), _o("claim", None, "skipped", required=False)]) == "verified"
    assert V(ledger.SYMBOLIC, [_o("claim", None, "error")]) == "inconclusive"
    assert V(ledger.SYMBOLIC, [_o("literal", False)]) == "inconclusive"
    # timings never decide a verdict (they vary between runs with the same seed), nor does evidence
    assert V(ledger.ASYMPTOTIC, [_o("claim", True), _o("timing", False)]) == "supported"
    assert V(ledger.SYMBOLIC, [_o("claim", True), _o("evidence", False)]) == "verified"
    assert V(ledger.SYMBOLIC, [_o("evidence", True)]) == "inconclusive"
    # an empirical claim is worded like an asymptotic one
    assert V(ledger.EMPIRICAL, [_o("claim", True)]) == "supported"
    assert V(ledger.EMPIRICAL, [_o("claim", False)]) == "not supported"
    assert V(ledger.EMPIRICAL, [_o("claim", None, "skipped"), _o("evidence", True)]) == "inconclusive"


def test_app_g_is_inconclusive_whatever_the_audit_shows():
    """Its deciding checks cannot run here (they skip, saying why); the audit's evidence is shown but cannot
    make the verdict 'supported' or 'not supported', however it comes out."""
    (claim,) = [c for c in ledger.CLAIMS if c.id == "App. G"]
    assert claim.kind == ledger.EMPIRICAL
    deciding = [c for c in claim.checks if c.role == "claim"]
    assert deciding and all(c.required for c in deciding)
    ctx = Context(ReportConfig("tiny"))
    for c in deciding:
        out = run_check(c.name, c.role, c.fn, ctx)
        assert out.status == "skipped" and out.holds is None
        assert "cannot run here" in out.measured or "no pretrained outlier-free" in out.measured
    for evidence in (True, False):
        outcomes = [run_check(c.name, c.role, c.fn, ctx) for c in deciding]
        outcomes += [_o("evidence", evidence) for c in claim.checks if c.role == "evidence"]
        assert ledger.verdict(claim.kind, outcomes) == "inconclusive"


def test_a_failing_check_changes_the_verdict(monkeypatch):
    ctx = Context(ReportConfig("tiny"))
    claim = ledger.CLAIMS[0]
    ok = ledger.Claim(claim.id, claim.title, claim.statement, claim.kind, claim.checks)
    broken = dataclasses.replace(
        ok, checks=(ledger.Check("always false", lambda ctx: (False, "0 != 1", {})),)
    )
    crashing = dataclasses.replace(ok, checks=(ledger.Check("crash", lambda ctx: 1 / 0),))
    monkeypatch.setattr(ledger, "CLAIMS", (ok, broken, crashing))
    verdicts = [c["verdict"] for c in ledger.run_ledger(ctx)]
    assert verdicts == ["verified", "refuted", "inconclusive"]


def test_run_check_records_skips_and_errors():
    def skip(ctx):
        raise Skip("stage missing")

    assert run_check("s", "claim", skip, None).status == "skipped"
    out = run_check("e", "claim", lambda ctx: {}["missing"], None)
    assert out.status == "error" and out.holds is None and "KeyError" in out.measured


def test_every_erratum_has_a_stored_counterexample():
    assert set(stored_names()) == {e.id for e in errata.ERRATA} == set(EVALUATORS)


def test_recheck_reports_a_paper_form_that_holds():
    """E5's (3.2) drops W̄*_Q; with W*_Q = 0 that slip is harmless, and the re-check must say so."""
    record = copy.deepcopy(load("E5"))
    d = record["instance"]["d"]
    record["instance"]["W"]["Q"] = [[0.0] * d for _ in range(d)]
    result = EVALUATORS["E5"](record)
    assert result["numeric"]["rel_diff_3_2"] < 1e-12
    assert result["paper_fails"] is False and result["ours_holds"] is True


def test_recheck_reports_a_broken_correction(monkeypatch):
    """If the correction were wrong on the instance, the erratum is not confirmed."""
    real = EVALUATORS["E2"]
    monkeypatch.setitem(
        EVALUATORS, "E2", lambda record, symbolic=True: {**real(record, symbolic=False), "ours_holds": False}
    )
    assert errata.recheck(errata.BY_ID["E2"])["status"] == "correction fails"


@pytest.mark.parametrize("name", ["E3", "E5", "E7", "E2"])
def test_search_reproduces_the_stored_counterexample(name):
    found = search.SEARCHES[name]()
    stored = load(name)
    strip = lambda r: {k: v for k, v in r.items() if k != "found"}  # noqa: E731
    assert strip(found) == strip(stored)


def test_instances_round_trip_exactly():
    p = LoRAProblem.random(5, 3, 2, adapt="QKV", cross=True, L_kv=4, seed=9)
    q = problem_from_json(problem_to_json(p))
    for m in "QKV":
        assert np.array_equal(p.W[m], q.W[m]) and np.array_equal(p.A[m], q.A[m])
    assert np.array_equal(p.X_kv, q.X_kv) and (p.alpha, p.beta) == (q.alpha, q.beta)


@settings(deadline=None)
@given(
    L=st.integers(2, 9),
    d=st.integers(1, 4),
    r=st.integers(1, 3),
    cross=st.booleans(),
    R=st.floats(0.1, 4.0),
    seed=st.integers(0, 2**31 - 1),
    module=st.sampled_from("QK"),
)
def test_chain_oracle_matches_the_exact_path(L, d, r, cross, R, seed, module):
    """The report's dense paper-notation oracle equals the generated exact kernels (both adapters)."""
    p = LoRAProblem.random(
        L, d, r, adapt="QK", cross=cross, L_kv=L + 1 if cross else None, logit_bound=R, seed=seed
    )
    pi = chain.paper_inputs(p, module)
    gA, gB = chain.adapter_gradients(pi, chain.exact_terms(pi).P)
    want = exact_gradients(p)
    scale = max(np.max(np.abs(want[f"A_{module}"])), np.max(np.abs(want[f"B_{module}"])), 1e-300)
    assert np.max(np.abs(gA - want[f"A_{module}"])) <= 1e-12 * scale
    assert np.max(np.abs(gB - want[f"B_{module}"])) <= 1e-12 * scale


def test_paper_literal_factors_differ_from_the_corrected_ones():
    """Lemma 3.6/3.7 as printed (U1 ⊘ U2 with q = C3 c^T; F~ diag(r~)) do not give p~1, p~2."""
    from lora_proofcheck.certification.polynomial import exp_polynomial

    p = LoRAProblem.random(12, 3, 2, adapt="QV", logit_bound=1.0, seed=4)
    pi = chain.paper_inputs(p, "Q")
    poly = exp_polynomial(1.0, degree=3)
    ap = chain.approx_terms(pi, poly)
    ours, paper = chain.lowrank_factors(pi, poly), chain.lowrank_factors(pi, poly, paper_literal=True)
    scale = np.max(np.abs(ap.p1))
    assert np.max(np.abs(ours.U3 @ ours.V3.T - ap.p1)) <= 1e-12 * scale
    assert np.max(np.abs(ours.U4 @ ours.V4.T - ap.p2)) <= 1e-12 * scale
    assert np.max(np.abs(paper.U3 @ paper.V3.T - ap.p1)) > 1e-3 * scale
    assert np.max(np.abs(paper.U4 @ paper.V4.T - ap.p2)) > 1e-3 * scale


def _frontier(log_ts, fixed_ts):
    points = lambda ts: [{"log2L": 10 + 2 * i, "t_star": t} for i, t in enumerate(ts)]  # noqa: E731
    return {
        "curves": [
            {"rule": "d = 8", "kind": "fixed", "eps": "1/L", "points": points(fixed_ts)},
            {"rule": "d = ⌈0.5·log2 L⌉", "kind": "log", "eps": "1/L", "points": points(log_ts)},
        ],
        "cells": [],
    }


def test_phase_evidence_can_fail():
    """The Thm 4.1 evidence checks decide on the data: a drifting log-rule frontier or a flat sweep fails."""
    from lora_proofcheck.report.claims import measured as ca

    ctx = Context(ReportConfig("tiny"))
    ctx.put("frontier", _frontier([0.4, 0.4, 0.39, 0.38], [0.3, 0.4, 0.5, 0.6]))
    assert ca.frontier_band(ctx)[0] is True
    ctx.put("frontier", _frontier([0.4, 0.5, 0.7, 0.9], [0.3, 0.35, 0.4, 0.45]))
    assert ca.frontier_band(ctx)[0] is False
    rows = [
        {"L": 256, "x": x, "rel_error": err, "finite": True}
        for x, err in ((0.25, 1e-6), (0.5, 1e-4), (1.0, 1e-1), (1.5, 0.5))
    ]
    ctx.put("sweep", {"rows": rows, "rank": 70, "degree": 4, "d": 4})
    assert ca.sweep_blowup(ctx)[0] is True
    flat = [dict(r, rel_error=1e-6 * (1 + r["x"])) for r in rows]
    ctx.put("sweep", {"rows": flat, "rank": 70, "degree": 4, "d": 4})
    assert ca.sweep_blowup(ctx)[0] is False


def test_chain_inequality_allows_rounding_at_equality_only():
    """An inequality attained with equality may exceed 1 by a few ulps of its float64 evaluation
    (seen in --full: Lemma 3.7 at 1 + 7e-16); anything beyond rounding still fails."""
    from lora_proofcheck.report.claims import numeric as cn

    class Ctx:
        def __init__(self, worst):
            self.grid = {"worst": {"L3.7": worst}, "rows": [{}] * 3}

        def cached(self, key, fn):
            return self.grid

    check = cn.chain_inequality(("L3.7",), "Lemma 3.7")
    ok, text, _ = check(Ctx(1.0 + 7e-16))
    assert ok and "attained" in text
    ok, text, _ = check(Ctx(0.5))
    assert ok and "attained" not in text
    assert not check(Ctx(1.0 + 1e-9))[0]
    assert not check(Ctx(1.001))[0]


def test_printed_and_conditional_verdicts():
    V = ledger.verdict
    # a statement quoted as printed whose literal check fails is false as printed (a finding, like an
    # erratum); if its printed form survives the check there is no claim-role evidence: inconclusive
    assert V(ledger.ASYMPTOTIC, [_o("literal", False)], printed=True) == "refuted-as-printed"
    assert V(ledger.ASYMPTOTIC, [_o("literal", True)], printed=True) == "inconclusive"
    assert V(ledger.ASYMPTOTIC, [_o("literal", False)]) == "inconclusive"
    assert V(ledger.CONDITIONAL, [_o("claim", True)]) == "reduction verified"
    assert V(ledger.CONDITIONAL, [_o("claim", False)]) == "refuted"


def test_a_generality_claim_fails_on_a_proof_of_its_sizes_only():
    from lora_proofcheck.report.claims import measured as ca

    ctx = Context(ReportConfig("tiny"))
    ctx.put("proofs", [{"name": "p = dL/dS", "size": "L=2", "holds": True, "all_sizes": False},
                       {"name": "G = dL/dF", "size": "L=1", "holds": True, "all_sizes": True}])
    assert ca.proof("p = dL/dS")(ctx)[0] is True  # it holds where it ran
    ok, text, _ = ca.proof("p = dL/dS", general=True)(ctx)
    assert not ok and "fixed sizes only" in text
    assert ca.proof(("G = dL/dF",), general=True)(ctx)[0] is True
    with pytest.raises(Skip):  # every name part must match a proof
        ca.proof(("G = dL/dF", "missing"))(ctx)


def test_e6_rescaling_recheck_can_fail():
    """With t = 1 (no rescaling) the hard instance's norms stay sqrt(log L) kappa: no inconsistency shown."""
    record = copy.deepcopy(load("E6")["rescaling"])
    assert EVALUATORS["E6"](load("E6"), symbolic=False)["outcomes"][0]["holds"] is False
    from lora_proofcheck.report.errata.evaluators import evaluate_e6_rescaling

    result = evaluate_e6_rescaling(record, symbolic=False)
    assert result["inconsistent"] and result["logits_unchanged"]
    record["t"] = 1.0
    assert not evaluate_e6_rescaling(record, symbolic=False)["inconsistent"]


def test_o1_recheck_can_fail():
    """With C1 = 0 (W*_Q = 0, B_Q = 0) every logit is 0, where p'/p = 1 for the Taylor features: there the
    chain IS the gradient of the approximate loss, and the re-check must say the old wording survives."""
    record = copy.deepcopy(load("O1"))
    d, r = record["instance"]["d"], record["instance"]["r"]
    record["instance"]["W"]["Q"] = [[0.0] * d for _ in range(d)]
    record["instance"]["B"]["Q"] = [[0.0] * r for _ in range(d)]
    result = EVALUATORS["O1"](record, symbolic=False)
    assert result["paper_fails"] is False and result["ours_holds"] is True
    assert result["numeric"]["min_qk_rel_diff"] < 1e-12


def test_search_reproduces_the_o1_and_e6_rescaling_counterexamples():
    strip = lambda r: {k: v for k, v in r.items() if k != "found"}  # noqa: E731
    assert strip(search.search_o1()) == strip(load("O1"))
    assert search.search_e6_rescaling() == load("E6")["rescaling"]
