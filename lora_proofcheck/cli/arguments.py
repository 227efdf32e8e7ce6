"""Argument types and groups shared by the commands: range-checked argparse types, and the sweep
engine's `--workers N | --scheduler tcp://HOST:PORT` pair (report, stress)."""

from __future__ import annotations

import argparse
import math

from .._lib.validate import MAX_SEED
from ..errors import InvalidInputError
from ..sweeps.engine import INSTALL_HINT, check_scheduler

__all__ = ["add_engine_arguments", "address", "positive_float", "positive_int", "ranged", "seed"]


def ranged(cast, ok, what: str):
    """An argparse type: `cast(text)` that must satisfy `ok`, else "expected <what>"."""
    def convert(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return convert


positive_int = ranged(int, lambda v: v >= 1, "a positive integer")
positive_float = ranged(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
seed = ranged(int, lambda v: 0 <= v <= MAX_SEED, "an integer in [0, 2**63 - 1]")


def address(text: str) -> str:
    """A Dask scheduler address (`sweeps.engine.check_scheduler`)."""
    try:
        return check_scheduler(text)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_engine_arguments(parser) -> None:
    """--workers N (a local Dask cluster) or --scheduler ADDRESS (an existing one); serial without."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--workers", type=positive_int, default=None, metavar="N",
                       help=f"run the sweeps' cells on a local Dask cluster of N worker processes (needs "
                            f"{INSTALL_HINT}); default: serially in this process")
    group.add_argument("--scheduler", type=address, default=None, metavar="tcp://HOST:PORT",
                       help="run the sweeps' cells on an existing Dask cluster (its workers need lora-proofcheck "
                            "installed and Dask's nanny, the default of `dask worker`)")
