"""`lora-proofcheck`: the command line, one module per command group.

    regen, check, env   `core`
    plan                `plan`
    bench               `bench`
    report              `report`
    stress              `stress`
    audit               `audit`

Each module's `add_commands(subparsers)` adds its subcommands; a subparser sets `func(args) -> int`.
Errors the package raises on purpose (`ProofcheckError`) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import ProofcheckError
from . import audit, bench, core, plan, report, stress

__all__ = ["build_parser", "main"]

COMMAND_MODULES = (core, plan, bench, report, stress, audit)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lora-proofcheck",
        description="Machine-checked verification of 'Computational Limits of Low-Rank Adaptation (LoRA) for "
                    "Transformer-Based Models' (Hu et al., ICLR 2025): SymPy derivations -> generated kernels "
                    "-> checks -> reports.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.add_commands(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ProofcheckError as exc:
        print(f"lora-proofcheck {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
