"""`lora-proofcheck check`: every check passes here, the proofs it runs are the registry's, and the table
prints every row."""

from __future__ import annotations

from lora_proofcheck import checks
from lora_proofcheck._lib.records import Outcome
from lora_proofcheck.checks.approx_checks import approx_checks
from lora_proofcheck.checks.exact_checks import check_proofs
from lora_proofcheck.derivations import registry


def test_approx_checks_pass():
    results = approx_checks(False)
    assert len(results) >= 3
    for r in results:
        assert r.holds, (r.name, r.measured)


def test_check_runs_the_registry_tiers(monkeypatch):
    """`check` runs the registry's quick tier (`check --full` its full tier), one row per proof."""
    every = {"all_sizes": True}
    fake = (registry.ProofEntry("a", lambda: Outcome("a", True, detail="s", paper="p", size="z", data=every), "fast"),
            registry.ProofEntry("b", lambda: Outcome("b", False), "full"))
    monkeypatch.setattr(registry, "PROOFS", fake)
    assert [(r.name, r.detail, r.holds) for r in check_proofs()] == [("proof: a", "p; ran at z; proves every size",
                                                                      True)]
    assert [r.name for r in check_proofs(full=True)] == ["proof: a", "proof: b"]


def test_quick_tier_holds_the_lowrank_proofs():
    names = [p.name for p in registry.proofs("quick")]
    assert sum("chain" in n and "rule" not in n for n in names) == 4 + 2 * len(registry.SUBSETS)
    assert "face-splitting identity" in names


def test_table_has_a_row_per_result():
    results = approx_checks(False)
    text = checks.format_table(results)
    assert all(r.name in text for r in results) and text.count("PASS") == len(results)
