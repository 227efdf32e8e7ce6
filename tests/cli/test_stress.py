"""`lora-proofcheck stress`: the summary it writes, the replay of a stored case, exit codes, clear
usage errors."""

from __future__ import annotations

import json
import sys

import pytest

from lora_proofcheck.certification import adaptive as ad
from lora_proofcheck.cli import main
from lora_proofcheck.sweeps import stress


def test_stress_command_writes_its_summary(tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["stress", "--cases", "24", "--round-size", "12", "--out", str(out), "--no-progress",
                 "--case-out", str(tmp_path / "v.json")]) == 0
    summary = json.loads(out.read_text())
    assert summary["schema"] == stress.SUMMARY_SCHEMA and summary["cases"] == 24 and summary["rounds"] == 2
    assert stress.load_summary(out) == summary  # what `report --stress` reads
    text = capsys.readouterr().out
    assert "stress: 24 cases" in text and "0 violations" in text and "edge" in text and f"wrote {out}" in text
    assert not (tmp_path / "v.json").exists()


def test_a_violation_exits_1_and_its_case_replays(tmp_path, capsys, monkeypatch):
    original = ad.AdaptiveCertificate.bound_and_floor

    def tenth(self, degree, method="auto", *, chunk_rows=None):  # an injected bug: bounds 1e4 x too small
        bound, floor = original(self, degree, method, chunk_rows=chunk_rows)
        return {k: v / 1e4 for k, v in bound.items()}, floor

    monkeypatch.setattr(ad.AdaptiveCertificate, "bound_and_floor", tenth)
    case = tmp_path / "v.json"
    assert main(["stress", "--cases", "96", "--round-size", "48", "--no-progress", "--case-out", str(case)]) == 1
    assert "VIOLATION" in capsys.readouterr().out and case.is_file()
    assert main(["stress", "--replay", str(case)]) == 1
    assert "VIOLATION reproduced" in capsys.readouterr().out
    monkeypatch.undo()  # the real certificate: the same instance and call hold
    assert main(["stress", "--replay", str(case)]) == 0
    assert ": holds:" in capsys.readouterr().out


@pytest.mark.parametrize("argv, match", [
    (["--cases", "0"], "--cases: expected a positive integer"),
    (["--cases", "x"], "--cases: expected a positive integer"),
    (["--workers", "0"], "--workers: expected a positive integer"),
    (["--scheduler", "localhost"], "tcp://HOST:PORT"),
    (["--workers", "2", "--scheduler", "tcp://h:1"], "not allowed with"),
    (["--seed", "-3"], "--seed"),
    (["--time-limit", "0"], "--time-limit"),
    (["--round-size", "0"], "--round-size"),
])
def test_stress_command_bad_arguments(argv, match, capsys):
    with pytest.raises(SystemExit) as info:
        main(["stress", *argv])
    assert info.value.code == 2 and match in capsys.readouterr().err


def test_stress_command_errors_exit_2(tmp_path, capsys, monkeypatch):
    assert main(["stress", "--replay", str(tmp_path / "none.json")]) == 2
    assert "--replay" in (err := capsys.readouterr().err) and "not a readable stress case" in err
    assert main(["stress", "--cases", "4", "--out", str(tmp_path / "no" / "s.json")]) == 2
    assert "--out" in (err := capsys.readouterr().err) and "does not exist" in err
    assert main(["stress", "--cases", "4", "--case-out", str(tmp_path)]) == 2
    assert "--case-out" in (err := capsys.readouterr().err) and "is a directory" in err
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    assert main(["stress", "--cases", "4", "--workers", "2", "--no-progress"]) == 2
    assert 'pip install -e ".[distributed]"' in capsys.readouterr().err
