"""`lora-proofcheck bench`: the exact path (dense, blocked), the approximate path and PyTorch
autograd on identical instances, timed and memory-measured one process per measurement.

Kept light to import: every measurement process imports this package, so matplotlib (`plot`)
loads only when asked for.
"""

from .analysis import fit_exponent, summarize
from .runner import BenchConfig, run_benchmark
from .schema import RESULT_SCHEMA

__all__ = ["BenchConfig", "RESULT_SCHEMA", "fit_exponent", "plot", "run_benchmark", "summarize"]


def __getattr__(name):
    if name == "plot":
        from .plot import plot  # noqa: PLC0415

        return plot
    raise AttributeError(name)
