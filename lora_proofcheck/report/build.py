"""Run every section of a report and assemble the JSON-ready document (nothing is written here).

Order: environment, derivation proofs, errata re-checks, property grid, frontier, measured sweep,
timing, benchmark, then the ledger (which reads the sections), then the plots. Sections whose
optional stage is missing are recorded as {"status": "not available", "reason": ...}.
"""

from __future__ import annotations

import datetime
import math
import time
from pathlib import Path

from .. import __version__
from ..envinfo import collect
from . import errata as errata_mod
from . import ledger, properties, sweeps
from .config import ReportConfig
from .context import Context
from .outcome import Skip
from .progress import Progress

SCHEMA_VERSION = "1.0.0"
PAPER = {
    "title": "Computational Limits of Low-Rank Adaptation (LoRA) Fine-Tuning for Transformer Models",
    "authors": "Hu, Su, Kuo, Song, Liu",
    "arxiv": "2406.03136",
    "venue": "ICLR 2025",
}


def proof_thunks(mode: str) -> list:
    """The derivation proofs a mode runs, one callable each (for per-proof progress)."""
    from ..derivations import lowrank_proofs as lp  # noqa: PLC0415
    from ..derivations import proofs as pr  # noqa: PLC0415

    if mode == "tiny":
        return [
            pr.prove_shift_invariance,
            pr.prove_G_is_dL_dF,
            pr.prove_rowwise_form,
            lambda: pr.prove_lora_gradients("V"),
            lp.prove_face_split_identity,
            lp.prove_face_split_swap,
            lp.prove_rowdot,
        ]
    out = [pr.prove_shift_invariance, pr.prove_G_is_dL_dF, pr.prove_p_is_dL_dS, pr.prove_rowwise_form]
    for m in "QKV":
        out.append(lambda m=m: pr.prove_lora_gradients(m))
        out.append(lambda m=m: pr.prove_lora_gradients(m, cross=True, L_kv=3))
        if mode == "full":
            out.append(lambda m=m: pr.prove_lora_gradients(m, L=3))
    out += [
        lp.prove_face_split_identity,
        lp.prove_face_split_swap,
        lp.prove_rowdot,
        lambda: lp.prove_chain_exact_features(L=3),
        lambda: lp.prove_chain_exact_features(L=2, L_kv=3),
        lp.prove_chain_is_gradient_of_approximate_softmax,
        lambda: lp.prove_chain_exact_features(L=3, derivation=lp.lowrank.build_lemmas()),
        lambda: lp.prove_chain_is_gradient_of_approximate_softmax(derivation=lp.lowrank.build_lemmas()),
    ]
    return out


BENCH = {
    "quick": dict(
        L_list=(1024, 2048, 4096),
        repeats=1,
        eps=(1e-3,),
        budget_seconds=90.0,
        max_seconds=60.0,
        fit_min_L=1024,
        gemm_square=512,
    ),
    "full": dict(
        L_min=1024,
        L_max=32768,
        repeats=3,
        eps=(1e-3, 1e-6),
        budget_seconds=900.0,
        max_seconds=300.0,
        fit_min_L=4096,
        gemm_square=2048,
    ),
}


def benchmark(config: ReportConfig) -> dict:
    """The benchmark stage's run and summary (D's `bench`), or why it is not available."""
    if config.bench_file is not None:
        return recorded_benchmark(config.bench_file)
    if config.sizes["bench"] is None:
        return {
            "status": "not run",
            "reason": f"the benchmark is not part of the {config.mode} configuration",
        }
    try:
        from ..benchmarks import BenchConfig, run_benchmark, summarize  # noqa: PLC0415
    except ImportError as exc:
        return {"status": "not available", "reason": f"lora_proofcheck.benchmarks: {exc}"}
    settings = dict(BENCH[config.sizes["bench"]], seed=config.seed, backend=config.backend, progress=False)
    bench_config = BenchConfig(**settings)
    from ..benchmarks.worker import TORCH, approx_name  # noqa: PLC0415

    methods = ("exact-blocked", *(approx_name(e) for e in bench_config.eps), TORCH)
    bench_config = BenchConfig(**dict(settings, methods=methods))
    result = run_benchmark(bench_config)
    return {
        "status": "ok",
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        "summary": summarize(result),
        "results": result["results"],
    }


def recorded_benchmark(path) -> dict:
    """A result written by `lora-proofcheck bench --out`, validated and summarized."""
    import json  # noqa: PLC0415

    from ..benchmarks import summarize  # noqa: PLC0415
    from ..errors import InvalidInputError  # noqa: PLC0415

    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
        result["results"], result["config"]  # noqa: B018 - the keys summarize needs
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"--bench {str(path)!r} is not a readable bench result ({exc})") from None
    return {
        "status": "ok",
        "source": f"recorded: {Path(path).name} ({result.get('created', 'unknown date')})",
        "settings": result["config"],
        "summary": summarize(result),
        "results": result["results"],
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


def build_report(config: ReportConfig, *, stream=None) -> tuple[dict, dict]:
    """(report, plots) for `config`; plots maps file name -> (PNG bytes, caption)."""
    from . import plots as plots_mod  # noqa: PLC0415 - matplotlib only when a report is built

    t_start = time.perf_counter()
    ctx = Context(config)
    proofs = proof_thunks(config.mode)
    sizes = config.sizes
    n_rules = len(sizes["frontier_d"]) + len(sizes["frontier_c"])
    total = (
        1
        + len(proofs)
        + len(errata_mod.ERRATA)
        + len(sizes["property_cases"])
        + 2 * n_rules
        + len(sizes["sweep_L"])
        + 2
        + len(ledger.CLAIMS)
        + 1
    )
    progress = Progress(total, stream=stream)
    timings = {}

    env = _section(ctx, "environment", collect, timings, progress)

    def run_proofs():
        out = []
        for thunk in proofs:
            p = thunk()
            out.append(
                {
                    "name": p.name,
                    "statement": p.statement,
                    "paper": p.paper,
                    "holds": p.holds,
                    "size": p.size,
                    "seconds": round(p.seconds, 3),
                }
            )
            progress.step(f"proof: {p.name}")
        return out

    _section(ctx, "proofs", run_proofs, timings)
    _section(ctx, "errata", lambda: errata_mod.run_errata(progress), timings)
    _section(ctx, "properties", lambda: properties.property_grid(ctx, progress), timings)
    _section(ctx, "frontier", lambda: sweeps.frontier(ctx, progress), timings)
    _section(ctx, "sweep", lambda: sweeps.measured_sweep(ctx, progress), timings)
    _section(ctx, "timing", lambda: sweeps.timing(ctx), timings, progress)
    _section(ctx, "benchmark", lambda: benchmark(config), timings, progress)
    t0 = time.perf_counter()
    claims = ledger.run_ledger(ctx, progress)
    timings["ledger"] = round(time.perf_counter() - t0, 3)

    section = lambda key: _jsonable(_value(ctx, key))  # noqa: E731
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
        "environment": _jsonable(env),
        "summary": {},
        "proofs": section("proofs"),
        "claims": _jsonable(claims),
        "errata": section("errata"),
        "measurements": {
            key: section(key) for key in ("properties", "frontier", "sweep", "timing", "benchmark")
        },
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
    proofs = report["proofs"] if isinstance(report["proofs"], list) else []
    return {
        "verdict_counts": ledger.verdict_counts(claims),
        "claims": len(claims),
        "errata_confirmed": sum(1 for e in errata if e["status"] == "confirmed"),
        "errata_total": len(errata),
        "proofs_holding": sum(1 for p in proofs if p["holds"]),
        "proofs_total": len(proofs),
        "property_points": props.get("ran") if "rows" in props else None,
        "property_violations": props.get("violations") if "rows" in props else None,
    }


def _jsonable(value):
    """Plain JSON values: tuples -> lists, numpy scalars -> Python, non-finite floats -> strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value
