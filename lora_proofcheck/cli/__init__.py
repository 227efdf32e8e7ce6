"""`lora-proofcheck`: argparse front end. Each stage module adds its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import ProofcheckError

# Modules providing add_commands(subparsers); each subparser sets `func(args) -> int`.
COMMAND_MODULES = (
    "lora_proofcheck.commands",
    "lora_proofcheck.planning",
    "lora_proofcheck.bench",
    "lora_proofcheck.report.command",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lora-proofcheck",
        description="Machine-checked verification of 'Computational Limits of LoRA' (Hu et al., ICLR 2025): "
                    "SymPy derivations -> generated kernels -> checks -> reports.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
