"""Run every section of a report and assemble the JSON-ready document; `write_report` also writes it.

Order: environment, derivation proofs, errata re-checks, property grid, frontier, measured sweep,
timing, benchmark, stress, the recorded audit ("Where real heads sit"), the
recorded peers run, then the ledger (which
reads the sections), then the plots. A section that raises is recorded as {"status": "error",
"reason": ...} (its checks then report "error").

The property grid, the frontier and the measured sweep are sweeps of independent cells and run on
one sweep-engine runner per report (`sweeps.engine`: serial, `--workers N` or `--scheduler`); their
content is the same whatever runs them. Timing and the benchmark time code, so they always run
serially in this process; the stress section and the audit are recorded results, never runs.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

from tqdm import tqdm

from .._lib.envinfo import collect
from .._lib.jsonable import jsonable
from .._lib.records import Skip
from .._lib.version import __version__
from ..derivations import registry
from ..sweeps.engine import SerialRunner, runner_scope
from .claims import ledger
from .config import ReportConfig
from .context import Context
from .errata import catalogue as errata_mod
from .measurements import properties, sweeps
from .measurements.benchmark import benchmark
from .measurements.peers import peers
from .measurements.real_heads import real_heads
from .measurements.stress import stress
from .measurements.timing import timing
from .output import plots as plots_mod
from .output import writers
from .output.publish import write_atomically

__all__ = ["PAPER", "SCHEMA_VERSION", "build_report", "summarize", "write_report"]

SCHEMA_VERSION = "1.2.0"
#: the sections whose cells run on the report's sweep-engine runner
ENGINE_SECTIONS = ("properties", "frontier", "sweep")
MEASUREMENTS = ("properties", "frontier", "sweep", "timing", "benchmark", "stress", "audit", "peers")
PAPER = {
    "title": "Computational Limits of Low-Rank Adaptation (LoRA) for Transformer-Based Models",
    "authors": "Hu, Su, Kuo, Song, Liu",
    "arxiv": "2406.03136",
    "venue": "ICLR 2025",
}


def _section(ctx, key, fn, timings, progress=None):
    t0 = time.perf_counter()
    try:
        value = fn()
    except Skip as exc:
        ctx.put_skip(key, str(exc))
        value = {"status": "not available", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - the report records the failure; checks see "error"
        ctx.cache[key] = ("error", exc)
        value = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
    else:
        ctx.put(key, value)
    timings[key] = round(time.perf_counter() - t0, 3)
    if progress is not None and key not in ("errata", "properties", "frontier", "sweep", "proofs"):
        progress.step(key)
    return value


def write_report(config: ReportConfig, out: Path, *, stream=None, name: str = "out", workers=None,
                 scheduler=None) -> dict:
    """Build the report for `config` and publish it at `out` atomically; returns the report. The
    sweeps run serially, on a local Dask cluster of `workers` processes, or on the cluster at
    `scheduler` (one runner for the sweep sections, closed before anything is timed)."""
    def write(folder):
        report, plots = build_report(config, stream=stream, workers=workers, scheduler=scheduler)
        writers.write_all(report, plots, folder)
        return report

    return write_atomically(out, write, name=name)


def build_report(config: ReportConfig, *, stream=None, runner=None, workers=None,
                 scheduler=None) -> tuple[dict, dict]:
    """(report, plots) for `config`; plots maps file name -> (PNG bytes, caption). Progress (tqdm) goes
    to `stream` (None: none). The sweeps' cells run on `runner` (an open `sweeps.engine` runner;
    None: serially)."""
    t_start = time.perf_counter()
    if runner is None and workers is None and scheduler is None:
        runner = SerialRunner()
    ctx = Context(config)
    proofs = registry.proofs(config.sizes["proofs"])
    sizes = config.sizes
    total = (
        1
        + len(proofs)
        + len(errata_mod.ERRATA)
        + len(properties.property_cells(sizes))
        + len(sweeps.frontier_cells(sizes))
        + len(sweeps.sweep_cells(sizes))
        + 4
        + len(ledger.CLAIMS)
        + 1
    )
    progress = _Progress(total, stream)
    timings = {}

    env = _section(ctx, "environment", collect, timings, progress)

    def run_proofs():
        out = []
        for entry in proofs:
            p = registry.prove(entry)
            out.append(
                {
                    "name": p.name,
                    "statement": p.detail,
                    "paper": p.paper,
                    "holds": p.holds,
                    "size": p.size,
                    "all_sizes": bool(p.data.get("all_sizes")),
                    "sufficient_size": p.data.get("sufficient"),
                    "basis": p.data.get("basis", ""),
                    "measured": p.measured,
                    "seconds": round(p.seconds, 3),
                }
            )
            progress.step(f"proof: {p.name}")
        return out

    _section(ctx, "proofs", run_proofs, timings)
    _section(ctx, "errata", lambda: errata_mod.run_errata(progress), timings)
    # the cluster lives for the sweep sections only: left open, its idle worker processes took CPU
    # from the serial timing and benchmark sections (measured: benchmark 128 s serial, 394 s beside it)
    with runner_scope(workers, scheduler, runner=runner) as r:
        engine = {"runner": r.description, "workers": r.workers, "sections": list(ENGINE_SECTIONS)}
        _section(ctx, "properties", lambda: properties.property_grid(ctx, progress, r), timings)
        _section(ctx, "frontier", lambda: sweeps.frontier(ctx, progress, r), timings)
        _section(ctx, "sweep", lambda: sweeps.measured_sweep(ctx, progress, r), timings)
    _section(ctx, "timing", lambda: timing(ctx), timings, progress)
    _section(ctx, "benchmark", lambda: benchmark(config), timings, progress)
    _section(ctx, "stress", lambda: stress(config), timings, progress)
    _section(ctx, "audit", lambda: real_heads(config), timings, progress)
    _section(ctx, "peers", lambda: peers(config), timings, progress)
    t0 = time.perf_counter()
    claims = ledger.run_ledger(ctx, progress)
    timings["ledger"] = round(time.perf_counter() - t0, 3)

    section = lambda key: jsonable(_value(ctx, key))  # noqa: E731
    report = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "lora-proofcheck", "version": __version__},
        "paper": PAPER,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": config.as_dict(),
        "seeds": {
            "base": config.seed,
            "rule": "each use draws from numpy.random.default_rng(SeedSequence([seed, crc32(stream)]))",
            "counterexample_searches": "fixed seeds, stored with each counterexample",
        },
        "environment": jsonable(env),
        "summary": {},
        "proofs": section("proofs"),
        "claims": jsonable(claims),
        "errata": section("errata"),
        "measurements": {key: section(key) for key in MEASUREMENTS},
        "engine": engine,
        "plots": [],
        "timings": {"sections": timings},
    }
    t0 = time.perf_counter()
    plots = plots_mod.make_plots(report)
    timings["plots"] = round(time.perf_counter() - t0, 3)
    progress.step("plots")
    progress.close()
    report["plots"] = [
        {"name": name, "file": name, "caption": caption} for name, (_, caption) in plots.items()
    ]
    report["summary"] = summarize(report)
    report["timings"]["total_seconds"] = round(time.perf_counter() - t_start, 3)
    return report, plots


def _value(ctx, key):
    state, value = ctx.cache.get(key, ("skip", "not run"))
    if state == "ok":
        return value
    if state == "skip":
        return {"status": "not available", "reason": value}
    return {"status": "error", "reason": f"{type(value).__name__}: {value}"}


def summarize(report: dict) -> dict:
    claims = report["claims"]
    errata = report["errata"] if isinstance(report["errata"], list) else []
    props = report["measurements"]["properties"]
    stress_run = report["measurements"]["stress"].get("summary")
    proofs = report["proofs"] if isinstance(report["proofs"], list) else []
    return {
        "verdict_counts": ledger.verdict_counts(claims),
        "claims": len(claims),
        "errata_confirmed": sum(1 for e in errata if e["status"] == "confirmed"),
        "errata_total": len(errata),
        "proofs_holding": sum(1 for p in proofs if p["holds"]),
        "proofs_all_sizes": sum(1 for p in proofs if p["holds"] and p.get("all_sizes")),
        "proofs_total": len(proofs),
        "property_points": props.get("ran") if "rows" in props else None,
        "property_violations": props.get("violations") if "rows" in props else None,
        "stress_cases": None if stress_run is None else stress_run["cases"],
        "stress_violations": None if stress_run is None else stress_run["violations"],
    }


class _Progress:
    """`total` steps as a tqdm bar on `stream` (None: silent); `step(label)` marks one finished."""

    def __init__(self, total: int, stream):
        self.bar = tqdm(total=total, file=stream, disable=stream is None, unit="step", dynamic_ncols=True,
                        mininterval=0.5)

    def step(self, label: str) -> None:
        self.bar.set_postfix_str(label[:60], refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
