"""Core subcommands: regen, check, env."""

from __future__ import annotations

import json

from .. import checks
from .._lib.envinfo import collect
from ..codegen.regen import regen

__all__ = ["add_commands"]


def add_commands(sub) -> None:
    p = sub.add_parser("regen", help="regenerate the kernels from the SymPy derivations",
                       description="Print every derivation into its generated kernel module (and the "
                                   "derivation records under derivations/). Deterministic.")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if a checked-in generated file differs")
    p.set_defaults(func=_regen)

    p = sub.add_parser("check", help="quick verification run, printed as a table",
                       description="Run the symbolic proofs (the registry's quick tier: the decomposition, "
                                   "the LoRA gradients and the low-rank chains, each for every size; the peers' "
                                   "model gradient at fixed sizes), the oracle comparisons (finite "
                                   "differences, PyTorch autograd, array-api-strict) and the approximate-path checks.")
    p.add_argument("--full", action="store_true", help="the proofs' full tier (adds the fixed-size one-piece proofs and the negative "
                        "controls) and larger settings")
    p.set_defaults(func=_check)

    p = sub.add_parser("env", help="versions, BLAS, CPU and GPU")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_env)


def _regen(args) -> int:
    stale, seconds = regen(check=args.check)
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'}: {path}")
    verb = "differ from the derivations" if args.check else "regenerated"
    print(f"{len(stale)} file(s) {verb} ({seconds:.2f} s)")
    return 1 if (args.check and stale) else 0


def _check(args) -> int:
    results = checks.all_checks(full=args.full)
    print(checks.format_table(results))
    failed = [r for r in results if not r.holds]
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def _env(args) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info["versions"].items():
        print(f"{key:>18}: {value}")
    for b in info["blas"]:
        print(f"{'BLAS':>18}: {b['internal_api']} {b['version']} ({b['num_threads']} threads, {b['architecture']})")
    c = info["cpu"]
    print(f"{'CPU':>18}: {c['model']} ({c['cores']} cores, {c['machine']})")
    print(f"{'GPU':>18}: " + (", ".join(g["name"] for g in info["gpu"]) or "none (CuPy/CUDA not available)"))
    print(f"{'commit':>18}: {info['commit']['id']}{' (dirty)' if info['commit']['dirty'] else ''}")
    return 0
