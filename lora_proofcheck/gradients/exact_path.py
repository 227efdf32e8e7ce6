"""The exact path: loss and LoRA gradients through the generated O(L^2 d) kernels.

Dense for small sizes; beyond that the query rows are processed in blocks (every block still sees
all keys, so each block's softmax is exact and no online rescaling is needed): peak memory
O(workers * N * block_rows * L_kv + L * d) instead of O(N * L * L_kv).

Why blocks are also *faster*: with d ~ 8 every kernel step is a memory-bound pass over an
L x L_kv array, and every fresh large temporary costs page faults (dense at L = 4096: ~70 ns of
system time per logit against ~25 ns of arithmetic). Blocks of about 2 MiB per array are recycled
by the allocator (`_recycle_block_memory`) and stay in cache. Independent blocks run on several threads (NumPy's ufuncs are
single-threaded but release the GIL) while the BLAS is pinned to one thread, so the total thread
count stays the BLAS's own (threadpoolctl limits are respected).
"""

from __future__ import annotations

import operator

import array_api_compat

from ._chunks import blas_controller, chunk_sums
from .errors import InvalidInputError, InvalidTypeError
from .kernels import _generated_exact as gen
from .kernels import _generated_lora as gen_lora
from .problem import LoRAProblem

# Bytes of one L x L_kv-shaped array of a block. Measured on the dev machine (Zen 3, 1 thread,
# d = 8, allocator thresholds raised as below): 18-23 ns per logit from 0.5 to 4 MiB, best near
# 2 MiB; past ~16 MiB the temporaries are mmap-ed afresh per block (page faults) again.
BLOCK_BYTES = 2 << 20
# Rows per block at least: each block also pays O(N L_kv d^2) for C2, C3 and the two X_kv^T
# products (GEMMs with inner dimension d, ~140 ns per key per block). At L_kv = 2^17: 4 rows
# 41 ns/logit, 8 rows 30, 16 rows 30 (then page faults creep in).
MIN_BLOCK_ROWS = 8
# Size of the one allocation that raises glibc's mmap/trim thresholds (`_recycle_block_memory`):
# below glibc's 32 MiB cap, and 2x it bounds the free heap kept per malloc arena.
MALLOC_THRESHOLD_BYTES = 24 << 20


def _check_problem(problem) -> LoRAProblem:
    if not isinstance(problem, LoRAProblem):
        raise InvalidTypeError(f"problem must be a LoRAProblem, got {type(problem).__name__}")
    return problem


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
    """Rows per block of the blocked path: BLOCK_BYTES per L x L_kv-shaped array, at least
    MIN_BLOCK_ROWS, at most L (then the blocked path is the dense one)."""
    itemsize = 4 if problem.dtype_name == "float32" else 8
    rows = max(MIN_BLOCK_ROWS, BLOCK_BYTES // (itemsize * problem.N * problem.L_kv))
    return min(problem.L, rows)


def blas_threads() -> int:
    """Threads of NumPy's BLAS as threadpoolctl reports them (1 when it cannot tell)."""
    counts = [info.get("num_threads") or 1 for info in blas_controller().info() if info.get("user_api") == "blas"]
    return max(counts, default=1)


def worker_threads(problem: LoRAProblem, threads=None) -> int:
    """Threads the blocked path runs its row blocks on: `threads`, else the BLAS thread count;
    always 1 outside NumPy."""
    if threads is not None:
        if isinstance(threads, bool):
            raise InvalidTypeError("threads must be a positive int or None, got bool")
        try:
            threads = operator.index(threads)
        except TypeError:
            raise InvalidTypeError(f"threads must be a positive int or None, got {type(threads).__name__}") \
                from None
        if threads < 1:
            raise InvalidInputError(f"threads must be a positive int or None, got {threads}")
    # Host threads only help NumPy: a GPU queue (CuPy) serialises the blocks anyway.
    if not array_api_compat.is_numpy_namespace(problem.xp):
        return 1
    return blas_threads() if threads is None else threads


def _recycle_block_memory(xp) -> None:
    """Let glibc malloc keep the blocks' temporaries instead of returning them to the OS.

    glibc hands a freed heap top back to the OS once it exceeds the trim threshold (twice the
    mmap threshold, initially 128 KiB), so every block would page-fault its ~2 MiB temporaries in
    again: measured, as much system time as the arithmetic. Freeing one mmap-ed chunk raises both
    thresholds to its size ("dynamic mmap threshold", mallopt(3); at most 32 MiB), after which the
    temporaries are recycled in the heap. One untouched allocation does it; elsewhere it is a no-op.
    """
    if array_api_compat.is_numpy_namespace(xp):
        ballast = xp.empty((MALLOC_THRESHOLD_BYTES // 8,), dtype=xp.float64)
        del ballast


def _blocked_sums(problem: LoRAProblem, kernel, args, rows, workers) -> dict:
    """Sum over the batch and over row blocks of every output of `kernel`, in a fixed order."""
    xp = problem.xp

    def block(i):  # row blocks add up: every term is a sum over query rows
        out = kernel(problem.X3[:, i:i + rows, :], *args, problem.Y3[:, i:i + rows, :], problem.beta)
        return {k: xp.sum(v, axis=0) for k, v in out.items()}

    if rows < problem.L:
        _recycle_block_memory(xp)
    return chunk_sums(block, problem.L, rows, workers)


def weight_gradients(problem: LoRAProblem, modules: str, *, block_rows="auto", threads=None):
    """Batch-mean loss and {mu: dL/dW_mu} for `modules` (a string over 'QKV').

    `threads` (blocked NumPy runs only): worker threads over the row blocks, each with a
    single-threaded BLAS; default the BLAS's own thread count (so threadpoolctl limits apply).
    """
    problem = _check_problem(problem)
    W = problem.weights()
    kernel = getattr(gen, f"exact_gradients_{modules}")
    rows = choose_block_rows(problem, block_rows) or problem.L
    workers = worker_threads(problem, threads) if rows < problem.L else 1
    total = _blocked_sums(problem, kernel, (problem.Xkv3, W["Q"], W["K"], W["V"]), rows, workers)
    n = problem.N
    return total["loss"] / n, {m: total[f"dW_{m}"] / n for m in modules}


def loss(problem: LoRAProblem, *, block_rows="auto", threads=None):
    """L = 1/(2N) sum_n ||F_n X'_n W_V - Y_n||_F^2, a 0-d array in the input's namespace."""
    value, _ = weight_gradients(problem, "V", block_rows=block_rows, threads=threads)
    return value


def exact_gradients(problem: LoRAProblem, *, block_rows="auto", threads=None) -> dict:
    """Exact dL/dA_mu and dL/dB_mu for every adapted module, keyed "A_Q", "B_Q", ...

    Arrays are in the input's namespace, dtype and device. `block_rows` picks dense (None) or
    row-blocked evaluation; "auto" goes blocked (`blocked_rows`) once one block is smaller than L.
    """
    problem = _check_problem(problem)
    _, dW = weight_gradients(problem, "".join(problem.adapted), block_rows=block_rows, threads=threads)
    return lora_factor_gradients(problem, dW)


def lora_factor_gradients(problem: LoRAProblem, dW: dict) -> dict:
    """{"A_mu": (alpha/r) B^T dW_mu, "B_mu": (alpha/r) dW_mu A^T} for the adapted modules."""
    out = {}
    for m in problem.adapted:
        g = gen_lora.lora_gradients(dW[m], problem.A[m], problem.B[m], problem.scale)
        out[f"A_{m}"], out[f"B_{m}"] = g["dA"], g["dB"]
    return out
