"""`lora-proofcheck report --out DIR [--quick | --full] [--backend numpy|cupy] [--seed N]`.

Atomic: the output directory is probed (a temporary sibling `.DIR.tmp-*` is created) before any
work; every file is written there and the folder is renamed to DIR at the end. An existing DIR
is replaced only if it holds a previous report. Any failure or interrupt removes the temporary
folder, so DIR is either the complete new report or untouched.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ..errors import InvalidInputError
from .config import MAX_SEED, ReportConfig

REPORT_FILES = ("report.json", "report.md", "report.html")


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**63 - 1], got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**63 - 1], got {text!r}")
    return value


def add_commands(sub) -> None:
    p = sub.add_parser(
        "report",
        help="verification report: claim ledger, errata, phase transition, benchmark summary",
        description="Run the derivation proofs, the claim ledger's checks, the errata re-checks on their "
        "stored counterexamples, the property grid (approximate error vs certified bound), the analytic "
        "and measured phase-transition sweeps and the benchmark summary; write report.json "
        "(versioned schema), report.md, a self-contained report.html and PNG plots into --out, "
        "atomically. Default size: --full. Exit status 1 when a claim is refuted or not supported or a "
        "derivation proof fails; 2 on a bad argument.",
    )
    p.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="output directory (created or replaced)"
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        dest="mode",
        action="store_const",
        const="quick",
        help="small grids and sizes: a few minutes on 2 cores",
    )
    size.add_argument(
        "--full", dest="mode", action="store_const", const="full", help="the full grids (default)"
    )
    size.add_argument("--tiny", dest="mode", action="store_const", const="tiny", help=argparse.SUPPRESS)
    p.add_argument(
        "--backend",
        default="numpy",
        metavar="{numpy,cupy}",
        help="array library of the property grid and sweeps (default numpy)",
    )
    p.add_argument("--seed", type=_seed, default=0, help="base seed of every random instance (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--bench", metavar="FILE.json", default=None,
                   help="summarize this recorded `lora-proofcheck bench --out` result instead of running "
                        "the mode's own (small) benchmark")
    p.set_defaults(func=_report, mode="full")


def check_backend(backend: str) -> None:
    if backend not in ("numpy", "cupy"):
        raise InvalidInputError(f"--backend must be 'numpy' or 'cupy', got {backend!r}")
    if backend == "cupy":
        try:
            import cupy  # noqa: PLC0415

            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # noqa: BLE001 - no CuPy, no driver, no device
            raise InvalidInputError(
                f"--backend cupy: CuPy with a CUDA device is not available here ({exc})"
            ) from None
        if count < 1:
            raise InvalidInputError("--backend cupy: CuPy found no CUDA device")


def prepare_output(out: Path) -> Path:
    """Validate --out and create the temporary sibling folder the report is built in."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "report.json").is_file():
        raise InvalidInputError(
            f"--out {str(out)!r} is a non-empty directory that does not hold a report; refusing to replace it"
        )
    parent = out.resolve().parent
    if not parent.exists():
        raise InvalidInputError(f"--out {str(out)!r}: parent directory {str(parent)!r} does not exist")
    if not parent.is_dir():
        raise InvalidInputError(f"--out {str(out)!r}: {str(parent)!r} is not a directory")
    try:
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    except OSError as exc:
        raise InvalidInputError(
            f"--out {str(out)!r}: cannot write in {str(parent)!r} ({exc.strerror})"
        ) from None


def publish(tmp: Path, out: Path) -> None:
    """Move the finished folder into place (replacing a previous report)."""
    out = Path(out)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a report is for reading
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.resolve().parent))
        os.rmdir(old)
        out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            old.rename(out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def write_report(config: ReportConfig, out: Path, *, stream=sys.stderr) -> dict:
    """Build the report for `config` and publish it at `out` atomically; returns the report."""
    from . import build, writers  # noqa: PLC0415

    tmp = prepare_output(out)
    try:
        report, plots = build.build_report(config, stream=stream)
        writers.write_all(report, plots, tmp)
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _report(args) -> int:
    check_backend(args.backend)
    if args.bench is not None:
        from .build import recorded_benchmark  # noqa: PLC0415

        recorded_benchmark(args.bench)  # fail fast, naming --bench, before any work
    config = ReportConfig(mode=args.mode, seed=args.seed, backend=args.backend, bench_file=args.bench)
    report = write_report(config, args.out, stream=None if args.no_progress else sys.stderr)
    s = report["summary"]
    counts = ", ".join(f"{n} {v}" for v, n in s["verdict_counts"].items() if n)
    print(f"wrote {args.out}/report.json, report.md, report.html and {len(report['plots'])} plots")
    print(
        f"claims: {s['claims']} ({counts}); errata confirmed: {s['errata_confirmed']}/{s['errata_total']}; "
        f"proofs: {s['proofs_holding']}/{s['proofs_total']}"
    )
    bad = s["verdict_counts"].get("refuted", 0) + s["verdict_counts"].get("not supported", 0)
    return 1 if bad or s["proofs_holding"] < s["proofs_total"] else 0
