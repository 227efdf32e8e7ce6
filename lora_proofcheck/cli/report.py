"""`lora-proofcheck report --out DIR [--quick | --full] [--backend numpy|cupy] [--seed N] [--bench FILE]
[--stress FILE] [--audit FILE] [--peers FILE] [--workers N | --scheduler tcp://HOST:PORT]`.

The report is written atomically (`report.output.publish`): DIR is either the complete new report
or untouched.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..report.build import write_report
from ..report.config import ReportConfig, check_backend
from ..report.measurements.benchmark import recorded_benchmark
from ..report.measurements.peers import recorded_peers
from ..report.measurements.real_heads import recorded_audit
from ..report.measurements.stress import recorded_stress
from .arguments import add_engine_arguments, seed

__all__ = ["add_commands"]


def add_commands(sub) -> None:
    p = sub.add_parser(
        "report",
        help="verification report: claim ledger, errata, phase transition, benchmark summary",
        description="Run the derivation proofs, the claim ledger's checks, the errata re-checks on their "
        "stored counterexamples, the property grid (approximate error vs certified bound), the analytic "
        "and measured phase-transition sweeps and the benchmark summary; write report.json "
        "(versioned schema), report.md, a self-contained report.html and PNG plots into --out, "
        "atomically. Default size: --full. Exit status 1 when a claim is refuted or not supported or a "
        "derivation proof fails ('refuted-as-printed' marks a statement of the paper that is false as printed, "
        "next to its corrected entry, and is a finding like an erratum, not a failure); 2 on a bad argument.",
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
    p.add_argument("--seed", type=seed, default=0, help="base seed of every random instance (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--bench", metavar="FILE.json", default=None,
                   help="summarize this recorded `lora-proofcheck bench --out` result instead of running "
                        "the mode's own (small) benchmark")
    p.add_argument("--stress", metavar="FILE.json", default=None,
                   help="carry this recorded `lora-proofcheck stress --out` summary into the report (the report "
                        "never runs the campaign itself)")
    p.add_argument("--peers", metavar="FILE.json", default=None,
                   help="carry this recorded `lora-proofcheck bench --peers --out` result into the report (the "
                        "peers section: frontier plot and tables); without it the section says it was not run")
    add_engine_arguments(p)
    p.add_argument("--audit", metavar="FILE.json", default=None,
                   help="carry this recorded `lora-proofcheck audit --out DIR` result (DIR/audit.json) into the "
                        "report: the section 'Where real heads sit' and the evidence of the App. G claim")
    p.set_defaults(func=_report, mode="full")


def _report(args) -> int:
    check_backend(args.backend, name="--backend")
    if args.bench is not None:
        recorded_benchmark(args.bench, name="--bench")  # fail fast, naming the flag, before any work
    if args.stress is not None:
        recorded_stress(args.stress, name="--stress")
    if args.audit is not None:
        recorded_audit(args.audit, name="--audit")
    if args.peers is not None:
        recorded_peers(args.peers, name="--peers")
    config = ReportConfig(mode=args.mode, seed=args.seed, backend=args.backend, bench_file=args.bench,
                          stress_file=args.stress, audit_file=args.audit, peers_file=args.peers)
    report = write_report(config, args.out, stream=None if args.no_progress else sys.stderr, name="--out",
                          workers=args.workers, scheduler=args.scheduler)
    s = report["summary"]
    counts = ", ".join(f"{n} {v}" for v, n in s["verdict_counts"].items() if n)
    print(f"wrote {args.out}/report.json, report.md, report.html and {len(report['plots'])} plots "
          f"(sweeps: {report['engine']['runner']})")
    print(
        f"claims: {s['claims']} ({counts}); errata confirmed: {s['errata_confirmed']}/{s['errata_total']}; "
        f"proofs: {s['proofs_holding']}/{s['proofs_total']}"
    )
    bad = s["verdict_counts"].get("refuted", 0) + s["verdict_counts"].get("not supported", 0)
    return 1 if bad or s["proofs_holding"] < s["proofs_total"] else 0
