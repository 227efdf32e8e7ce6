"""The report's benchmark section: a small run of `lora_proofcheck.benchmarks` at the mode's preset, or a
recorded `lora-proofcheck bench --out` result carried into the report (`bench_file`)."""

from __future__ import annotations

import json
from pathlib import Path

from ...benchmarks import BenchConfig, run_benchmark, summarize
from ...benchmarks.presets import PRESETS
from ...benchmarks.worker import TORCH, approx_name
from ...errors import InvalidInputError

__all__ = ["benchmark", "recorded_benchmark"]


def benchmark(config) -> dict:
    """The benchmark section of a `ReportConfig`: the recorded file, the mode's run, or why none."""
    if config.bench_file is not None:
        return recorded_benchmark(config.bench_file)
    if config.sizes["bench"] is None:
        return {
            "status": "not run",
            "reason": f"the benchmark is not part of the {config.mode} configuration",
        }
    settings = dict(PRESETS[f"report-{config.sizes['bench']}"], seed=config.seed, backend=config.backend,
                    progress=False)
    eps = settings.get("eps", BenchConfig.eps)
    methods = ("exact-blocked", *(approx_name(e) for e in eps), TORCH)
    result = run_benchmark(BenchConfig(**dict(settings, methods=methods)))
    return {
        "status": "ok",
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        "summary": summarize(result),
        "results": result["results"],
    }


def recorded_benchmark(path, *, name: str = "bench_file") -> dict:
    """A result written by `lora-proofcheck bench --out`, validated and summarized; `name` is what
    errors call the argument (the CLI passes its flag)."""
    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
        result["results"], result["config"]  # noqa: B018 - the keys summarize needs
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"{name} {str(path)!r} is not a readable bench result ({exc})") from None
    return {
        "status": "ok",
        "source": f"recorded: {Path(path).name} ({result.get('created', 'unknown date')})",
        "settings": result["config"],
        "summary": summarize(result),
        "results": result["results"],
    }
