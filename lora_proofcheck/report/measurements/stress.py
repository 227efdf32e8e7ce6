"""The report's stress section: a RECORDED `lora-proofcheck stress --out` summary carried into the
report (`stress_file`, the `--stress FILE.json` flag), like a recorded benchmark. A report never
runs the campaign itself: 10^5 cases take tens of minutes, the report's own grids check the
certificate on a deterministic grid already."""

from __future__ import annotations

from pathlib import Path

from ...sweeps.stress import load_summary

__all__ = ["recorded_stress", "stress"]


def stress(config) -> dict:
    """The stress section of a `ReportConfig`: the recorded summary, or why there is none."""
    if config.stress_file is None:
        return {
            "status": "not run",
            "reason": "no recorded stress campaign (`lora-proofcheck stress --out FILE.json`, then "
                      "`report --stress FILE.json`); a report never runs the campaign itself",
        }
    return recorded_stress(config.stress_file)


def recorded_stress(path, *, name: str = "stress_file") -> dict:
    """A summary written by `lora-proofcheck stress --out`, checked; `name` is what errors call the
    argument (the CLI passes its flag)."""
    summary = load_summary(path, name=name)
    run = summary["run"]
    return {
        "status": "ok",
        "source": f"recorded: {Path(path).name} (lora-proofcheck {summary['tool'].get('version')}, "
                  f"{run.get('created', 'unknown date')}, {run.get('runner')}, {run.get('seconds')} s)",
        "summary": summary,
    }
