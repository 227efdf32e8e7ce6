"""`lora-proofcheck bench`: the exact path (dense, blocked), the approximate path and PyTorch
autograd on identical instances, timed and memory-measured one process per measurement; and
`bench --peers` (`peers`): the peer approximations' gradient error against time, in this process.

Kept light to import: every measurement process imports this package, so the figure (`plot`,
matplotlib) is a module of its own, imported where a plot is drawn.
"""

from .analysis import fit_exponent, summarize
from .runner import BenchConfig, run_benchmark
from .schema import RESULT_SCHEMA

__all__ = ["BenchConfig", "RESULT_SCHEMA", "fit_exponent", "run_benchmark", "summarize"]
