"""`lora-proofcheck stress --cases N [--workers N | --scheduler tcp://HOST:PORT] [--out FILE]` and
`lora-proofcheck stress --replay CASE.json`: the certificate-violation campaign (`sweeps.stress`).

Exit status: 0 no violation, 1 a violation (stored with --case-out) or a replayed case that
still violates, 2 a bad argument.
"""

from __future__ import annotations

from pathlib import Path

from ..sweeps import stress
from .arguments import add_engine_arguments, positive_float, positive_int, seed

__all__ = ["add_commands", "format_summary"]


def add_commands(sub) -> None:
    p = sub.add_parser(
        "stress",
        help="search adversarial instances for a certificate violation",
        description="Certificate-violation campaign: cases across the adversarial families (aligned, "
                    "concentrated, residual, edge-of-bound, Gaussian), self/cross attention, batches, "
                    "float32/float64, every degree up to the rank cap and tolerances 1e-12..1e-1, with a "
                    "mutation search toward the worst measured/bound. Stops after the first round with a "
                    "violation and stores it (--case-out) as a replayable case. The --out summary is what "
                    "`lora-proofcheck report --stress FILE` carries. Exit status 1 on a violation, 2 on a "
                    "bad argument.",
    )
    p.add_argument("--cases", type=positive_int, default=10000, help="cases to run (default 10000)")
    add_engine_arguments(p)
    p.add_argument("--out", type=Path, default=None, metavar="FILE.json",
                   help="write the JSON summary here (for `report --stress`)")
    p.add_argument("--case-out", type=Path, default=Path("stress-violation.json"), metavar="FILE.json",
                   help="where a violation is stored (default ./stress-violation.json)")
    p.add_argument("--seed", type=seed, default=0, help="base seed of the campaign (default 0)")
    p.add_argument("--round-size", type=positive_int, default=stress.ROUND_CASES, metavar="M",
                   help=f"cases per search round (default {stress.ROUND_CASES})")
    p.add_argument("--time-limit", type=positive_float, default=None, metavar="SECONDS",
                   help="stop after the round that passes this wall time")
    p.add_argument("--replay", type=Path, default=None, metavar="CASE.json",
                   help="re-check a stored case instead of searching")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=_stress)


def _stress(args) -> int:
    if args.replay is not None:
        res = stress.replay(args.replay, name="--replay")
        verdict = "VIOLATION reproduced" if res["violation"] else "holds"
        print(f"{args.replay}: {verdict}: status {res['status']}, ratio {res.get('ratio')}, "
              f"kind {res.get('kind')}, reference {res.get('reference')}")
        return 1 if res["violation"] else 0
    out = None if args.out is None else stress.check_out("--out", args.out)
    case_out = stress.check_out("--case-out", args.case_out)
    summary = stress.run_campaign(args.cases, seed=args.seed, workers=args.workers, scheduler=args.scheduler,
                                  round_size=args.round_size, time_limit=args.time_limit, case_out=case_out,
                                  progress=False if args.no_progress else None)
    if out is not None:
        stress.write_json(out, summary)
    print(format_summary(summary))
    if out is not None:
        print(f"wrote {out}")
    return 1 if summary["violations"] else 0


def format_summary(s: dict) -> str:
    """The campaign's summary in a few lines: totals, then the worst ratio per family."""
    head = (f"stress: {s['cases']} cases ({s['checked']} checked, {s['declined']} declined, "
            f"{s['uncertified']} with an infinite bound), {s['violations']} violations, worst ratio "
            f"{_g(s['worst_ratio'])}, {s['run']['seconds']:.1f} s on {s['run']['runner']} "
            f"(stopped: {s['stopped']})")
    lines = [head]
    for fam, f in s["families"].items():
        lines.append(f"  {fam:>12}: {f['cases']:>7} cases, {f['checked']:>7} checked, worst {_g(f['worst_ratio'])}")
    if s["violation"] is not None:
        v = s["violation"]
        lines.append(f"VIOLATION {v['key']}: {v['result'].get('kind')} (ratio {_g(v['result'].get('ratio'))}); "
                     f"stored in {v.get('file')}; replay: lora-proofcheck stress --replay {v.get('file')}")
    return "\n".join(lines)


def _g(x) -> str:
    return "n/a" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))
