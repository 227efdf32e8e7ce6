"""The exact path: loss and LoRA gradients through the generated O(L^2 d) kernels.

Dense for small sizes; beyond that the query rows are processed in blocks (every block still sees
all keys, so each block's softmax is exact and no online rescaling is needed): peak memory
O(workers * N * block_rows * L_kv + L * d) instead of O(N * L * L_kv).

Why blocks are also *faster*: with d ~ 8 every kernel step is a memory-bound pass over an
L x L_kv array, and every fresh large temporary costs page faults (dense at L = 4096: ~70 ns of
system time per logit against ~25 ns of arithmetic). Blocks of about 2 MiB per array
(`_lib.blocks.EXACT_BLOCKS`) are recycled by the allocator (`recycle_block_memory`) and stay in
cache. Independent blocks run on several threads (NumPy's ufuncs are single-threaded but release
the GIL) while the BLAS is pinned to one thread, so the total thread count stays the BLAS's own
(threadpoolctl limits are respected).
"""

from __future__ import annotations

from .._lib.blocks import EXACT_BLOCKS, chunk_sums, recycle_block_memory, worker_threads
from ..errors import InvalidInputError
from ..kernels import _generated_exact as gen
from ..kernels import _generated_lora as gen_lora
from ..problem import LoRAProblem, check_problem

__all__ = ["blocked_rows", "choose_block_rows", "exact_gradients", "lora_factor_gradients", "loss",
           "weight_gradients"]


def choose_block_rows(problem: LoRAProblem, block_rows="auto") -> int | None:
    """Rows per block (None: dense). `block_rows` is "auto", None (dense) or a positive int."""
    if block_rows is None:
        return None
    if block_rows == "auto":  # dense when the whole problem is one block anyway
        rows = blocked_rows(problem)
        return None if rows >= problem.L else rows
    if isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1:
        raise InvalidInputError(f"block_rows must be 'auto', None or a positive int, got {block_rows!r}")
    return None if block_rows >= problem.L else block_rows


def blocked_rows(problem: LoRAProblem) -> int:
    """Rows per block of the blocked path: `EXACT_BLOCKS` bytes per L x L_kv-shaped array, at least
    its minimum, at most L (then the blocked path is the dense one)."""
    itemsize = 4 if problem.dtype_name == "float32" else 8
    return EXACT_BLOCKS.rows(itemsize * problem.N * problem.L_kv, total=problem.L)


def _blocked_sums(problem: LoRAProblem, kernel, args, rows, workers) -> dict:
    """Sum over the batch and over row blocks of every output of `kernel`, in a fixed order."""
    xp = problem.xp

    def block(i):  # row blocks add up: every term is a sum over query rows
        out = kernel(problem.X3[:, i:i + rows, :], *args, problem.Y3[:, i:i + rows, :], problem.beta,
                     problem.log_n)
        return {k: xp.sum(v, axis=0) for k, v in out.items()}

    if rows < problem.L:
        recycle_block_memory(xp)
    return chunk_sums(block, problem.L, rows, workers)


def weight_gradients(problem: LoRAProblem, modules: str, *, block_rows="auto", threads=None):
    """Batch-mean loss and {mu: dL/dW_mu} for `modules` (a string over 'QKV').

    `threads` (blocked NumPy runs only): worker threads over the row blocks, each with a
    single-threaded BLAS; default the BLAS's own thread count (so threadpoolctl limits apply).
    """
    problem = check_problem(problem)
    W = problem.weights()
    kernel = getattr(gen, f"exact_gradients_{modules}")
    rows = choose_block_rows(problem, block_rows) or problem.L
    workers = worker_threads(problem.xp, threads) if rows < problem.L else 1
    total = _blocked_sums(problem, kernel, (problem.Xkv3, W["Q"], W["K"], W["V"]), rows, workers)
    n = problem.N
    return total["loss"] / n, {m: total[f"dW_{m}"] / n for m in modules}


def loss(problem: LoRAProblem, *, block_rows="auto", threads=None):
    """The loss L = 1/(2N) sum_n ||F_n X'_n W_V - Y_n||_F^2 (F the row softmax, or Softmax_1 when the
    problem's normalizer_offset is > 0), a 0-d array in the input's namespace.

    Parameters
    ----------
    problem : LoRAProblem
    block_rows : "auto", None or int, optional
        Query rows per block of the exact path (None: dense).
    threads : int, optional
        Threads over the row blocks (default: the BLAS's own thread count).

    Examples
    --------
    >>> import lora_proofcheck as lp
    >>> p = lp.LoRAProblem.random(L=64, d=4, r=2, seed=0)
    >>> round(float(lp.loss(p)), 6)
    237.215665
    """
    value, _ = weight_gradients(problem, "V", block_rows=block_rows, threads=threads)
    return value


def exact_gradients(problem: LoRAProblem, *, block_rows="auto", threads=None) -> dict:
    """Exact dL/dA_mu and dL/dB_mu for every adapted module.

    Parameters
    ----------
    problem : LoRAProblem
    block_rows : "auto", None or int, optional
        Rows per block: "auto" goes blocked (`blocked_rows`) once one block is smaller than L;
        None is dense.
    threads : int, optional
        Threads over the row blocks (default: the BLAS's own thread count).

    Returns
    -------
    dict
        "A_Q" (r x d), "B_Q" (d x r), ... for the adapted modules, in the input's namespace, dtype
        and device.

    Examples
    --------
    >>> import lora_proofcheck as lp
    >>> g = lp.exact_gradients(lp.LoRAProblem.random(L=64, d=4, r=2, adapt="QKV", seed=0))
    >>> sorted(g), g["A_Q"].shape, g["B_Q"].shape
    (['A_K', 'A_Q', 'A_V', 'B_K', 'B_Q', 'B_V'], (2, 4), (4, 2))
    """
    problem = check_problem(problem)
    _, dW = weight_gradients(problem, "".join(problem.adapted), block_rows=block_rows, threads=threads)
    return lora_factor_gradients(problem, dW)


def lora_factor_gradients(problem: LoRAProblem, dW: dict) -> dict:
    """{"A_mu": (alpha/r) B^T dW_mu, "B_mu": (alpha/r) dW_mu A^T} for the adapted modules."""
    out = {}
    for m in problem.adapted:
        g = gen_lora.lora_gradients(dW[m], problem.A[m], problem.B[m], problem.scale)
        out[f"A_{m}"], out[f"B_{m}"] = g["dA"], g["dB"]
    return out
