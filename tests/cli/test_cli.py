"""The command line: help, env, check's exit status, plan's exit codes, clear errors."""

import json
import subprocess
import sys

import pytest

from lora_proofcheck import checks
from lora_proofcheck._lib.records import Outcome
from lora_proofcheck.cli import build_parser, main


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("regen", "check", "env"):
        assert command in out


def test_env_json(capsys):
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["versions"]["sympy"] == "1.14.0" and "cores" in info["cpu"] and "commit" in info


def test_check_reports_failures(monkeypatch, capsys):
    bad = Outcome("demo", False, "1e+00", detail="a failing check")
    good = Outcome("demo2", True, "0", detail="a passing check")
    monkeypatch.setattr(checks, "all_checks", lambda full=False: [good, bad])
    assert main(["check"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "1 passed, 1 failed" in out
    monkeypatch.setattr(checks, "all_checks", lambda full=False: [good])
    assert main(["check"]) == 0


def test_unknown_command_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["frobnicate"])
    assert exc.value.code == 2


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "lora_proofcheck", "env"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "sympy" in out.stdout


def test_cli_plan_exit_codes_and_json(capsys):
    assert main(["plan", "--L", "65536", "--d", "2", "--logit-bound", "0.5", "--atol", "1e-3", "--rtol", "0"]) == 0
    assert "FEASIBLE" in capsys.readouterr().out
    assert main(["plan", "--L", "256", "--d", "8", "--logit-bound", "20", "--atol", "1e-6", "--rtol", "0", "--adapt", "QKV",
                 "--json"]) == 3
    data = json.loads(capsys.readouterr().out)
    assert data["feasible"] is False and "above the threshold" in data["reason"]
    assert main(["plan", "--L", "0", "--d", "2", "--logit-bound", "1", "--atol", "1e-3"]) == 2
    assert "L must be" in capsys.readouterr().err
    assert main(["plan", "--d", "2", "--logit-bound", "1"]) == 2
    assert "--L" in capsys.readouterr().err
    assert main(["plan", "--L", "65536", "--d", "2", "--logit-bound", "0.5", "--rtol", "1e-3"]) == 0
    out = capsys.readouterr().out
    assert "tolerance" in out and "time ratio" in out and "defaults" in out


def test_cli_plan_calibrate_caches_the_rates(capsys, monkeypatch, tmp_path):
    from lora_proofcheck.gradients import calibration, timing

    monkeypatch.setenv("LORA_PROOFCHECK_CACHE", str(tmp_path))
    small = (("exact", 256, 4, None), ("exact", 512, 4, None), ("exact", 384, 8, None),
             ("approx", 512, 2, 2), ("approx", 1024, 2, 3), ("approx", 512, 4, 2), ("approx", 768, 2, 4),
             ("approx", 1024, 4, 2))
    monkeypatch.setattr(calibration.calibrate, "__kwdefaults__", {"repeats": 1, "grid": small, "threads": None})
    assert main(["plan", "--calibrate"]) == 0
    out = capsys.readouterr().out
    assert "cached in" in out and timing.cache_path().is_file()
    rates = timing.load_rates()
    assert rates.source.startswith("calibrated") and set(rates.seconds) == set(timing.DEFAULT_RATES.seconds)

