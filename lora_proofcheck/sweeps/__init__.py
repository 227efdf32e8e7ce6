"""Sweeps: the one engine for grids of independent cells (`engine`: serial, a local Dask cluster or
an existing one) and the certificate-violation campaign behind `lora-proofcheck stress` (`stress`)."""

from .engine import Cell, cell_seed, open_runner, run_sweep, runner_scope, stream_seed

__all__ = ["Cell", "cell_seed", "open_runner", "run_sweep", "runner_scope", "stream_seed"]
