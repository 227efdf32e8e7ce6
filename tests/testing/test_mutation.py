"""The mutation script's own machinery, cheaply: the table is current against the source, a mutant
lands in a temporary copy and never in the checkout. No mutant's tests run here (that is the
on-demand `python -m lora_proofcheck.testing.mutation`, minutes long)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_proofcheck.errors import InvalidInputError, ProofcheckError
from lora_proofcheck.testing import mutation

REPO = Path(__file__).resolve().parents[2]


def test_every_mutant_is_current_and_names_existing_tests():
    names = [m.name for m in mutation.MUTANTS]
    assert len(names) >= 30 and len(set(names)) == len(names)
    for m in mutation.MUTANTS:
        assert (REPO / m.path).read_text(encoding="utf-8").count(m.old) == 1, m.name
        assert m.old != m.new and m.tests, m.name
        assert all((REPO / t.split("::")[0]).is_file() for t in m.tests), m.name


def test_a_mutant_changes_the_copy_only(tmp_path):
    m = mutation.select(["v-coefficient-x0.85"])[0]
    before = (REPO / m.path).read_text(encoding="utf-8")
    root = mutation.copy_tree(REPO, tmp_path)
    assert not list(root.rglob("__pycache__"))
    mutation.apply_mutant(m, root)
    text = (root / m.path).read_text(encoding="utf-8")
    assert m.new in text and m.old not in text
    assert (REPO / m.path).read_text(encoding="utf-8") == before
    with pytest.raises(ProofcheckError, match="occurs 0 times"):  # applied twice: stale
        mutation.apply_mutant(m, root)


def test_selection_listing_and_table(capsys):
    with pytest.raises(InvalidInputError, match="unknown mutant"):
        mutation.select(["no-such-mutant"])
    assert mutation.main(["--list", "--only", "gamma-sign-flip"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gamma-sign-flip") and "survives:" in out
    results = [{"name": "gamma-sign-flip", "status": "survived", "how": "passed", "seconds": 1.0,
                "first_failure": ""},
               {"name": "exact-floor-x0.01", "status": "killed", "how": "failed", "seconds": 2.0,
                "first_failure": "FAILED tests/x.py::test_y"}]
    text = mutation.table(results)
    assert "2 n u" in text and "FAILED tests/x.py::test_y" in text and "score: 1/2 killed (50.0%)" in text
