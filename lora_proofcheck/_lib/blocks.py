"""Rows in blocks: the one block-size policy, the chunk runner, and the thread and allocator settings
both gradient paths and the certificate share.

Every O(L) pass of the package runs over blocks of rows sized by a byte budget (`BlockPolicy`):
the exact path's L x L_kv temporaries (`EXACT_BLOCKS`), the low-rank path's L x k features
(`LOWRANK_CHUNKS`) and the certificate's (N, d, rows) statistics (`CERTIFICATE_BLOCKS`). The
budgets were measured on the development machine (each constant says how).

A chunk's outputs are partial sums over its rows; `chunk_runner` adds them in chunk order whatever
thread computed them (`map` yields in submission order), so the result and its rounding are
deterministic. The partials are added in groups of ceil(sqrt(#chunks)) (`add_grouped`): each
partial then passes through at most `summation_depth(#chunks)` ~ 2 sqrt(#chunks) additions instead
of #chunks - 1, the depth the certificate's rounding floor counts (`certification/adaptive.py`, R4),
with two partials in memory at a time. NumPy's ufuncs are single-threaded but release the GIL, so chunks on threads use
both cores for the elementwise work too, while the total thread count stays the BLAS's own. One
`chunk_runner` serves every pass of a call: starting threads and finding the BLAS (threadpoolctl
scans the loaded libraries) cost milliseconds each, so both happen once.
"""

from __future__ import annotations

import contextlib
import functools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import array_api_compat

from .validate import check_optional_int

__all__ = ["BlockPolicy", "CERTIFICATE_BLOCKS", "EXACT_BLOCKS", "LOWRANK_CHUNKS", "accumulate", "add_grouped",
           "blas_threads", "chunk_runner", "chunk_sums", "group_size", "recycle_block_memory", "summation_depth",
           "worker_threads"]


@dataclass(frozen=True)
class BlockPolicy:
    """Rows per block: as many as fit `budget_bytes` (at `bytes_per_row` each), at least `min_rows`
    and at most `max_rows` (None: no cap)."""

    budget_bytes: int
    min_rows: int
    max_rows: int | None = None

    def rows(self, bytes_per_row: int, total: int | None = None) -> int:
        """Rows per block, capped at `total` when given (then one block is the whole)."""
        rows = max(self.min_rows, self.budget_bytes // max(int(bytes_per_row), 1))
        if self.max_rows is not None:
            rows = min(rows, self.max_rows)
        return rows if total is None else min(total, rows)

    def slices(self, total: int, bytes_per_row: int) -> list[slice]:
        """The blocks of range(total) as slices (the array API allows no out-of-bounds stops)."""
        step = self.rows(bytes_per_row)
        return [slice(s, min(s + step, total)) for s in range(0, total, step)]


# Exact path: bytes of one L x L_kv-shaped array of a block. Measured on the dev machine (Zen 3,
# 1 thread, d = 8, allocator thresholds raised as below): 18-23 ns per logit from 0.5 to 4 MiB,
# best near 2 MiB; past ~16 MiB the temporaries are mmap-ed afresh per block (page faults) again.
# At least 8 rows: each block also pays O(N L_kv d^2) for C2, C3 and the two X_kv^T products (GEMMs
# with inner dimension d, ~140 ns per key per block). At L_kv = 2^17: 4 rows 41 ns/logit, 8 rows 30,
# 16 rows 30 (then page faults creep in).
EXACT_BLOCKS = BlockPolicy(budget_bytes=2 << 20, min_rows=8)
# Low-rank path: bytes of one chunk's features (rows x k): a few MiB, so that the features a GEMM
# reads back are still in the (32 MiB L3 / 1 MiB L2 per core) caches of the dev machine. Measured
# at d = 8, L = 16384 (k = 495 / 1287): 4-16 MiB within 10% of each other, whole arrays 2-3x slower.
# At most 4096 rows: at small k the budget alone allows whole-array chunks, whose other per-row
# temporaries (width ~d^2) leave the caches: L = 16384, d = 8, k = 9 or 45 took 1.5-1.9 s as one
# 16384-row chunk and 0.05-0.15 s in chunks of 2048-8192 rows (and the rtol search's pilots run there).
# 16 MiB, not 8: at k = 6435 (g = 7) 8 MiB leaves 162-row chunks, and the forced path at L = 16384
# took 0.98 s against 0.87 s at 324 rows (Xeon, best of 3;
# g = 3-6 within +-5 %); the floor's depth grows by the extra rows, small beside its k - 1 term.
LOWRANK_CHUNKS = BlockPolicy(budget_bytes=16 << 20, min_rows=64, max_rows=4096)
# Certificate: every (N, d, rows) float64 temporary at most 512 KiB: cache-resident and recycled by
# the allocator. Measured at L = 16384, d = 8: 64K entries ~1.3x faster than 16K or 256K; at least
# 64 rows per block (for wide N d: bounds the per-block overhead).
CERTIFICATE_BLOCKS = BlockPolicy(budget_bytes=512 << 10, min_rows=64)

# Size of the one allocation that raises glibc's mmap/trim thresholds (`recycle_block_memory`):
# below glibc's 32 MiB cap, and 2x it bounds the free heap kept per malloc arena.
MALLOC_THRESHOLD_BYTES = 24 << 20


def recycle_block_memory(xp) -> None:
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


def accumulate(acc: dict, key: str, value, op) -> None:
    """acc[key] = op(acc[key], value), or value the first time (sums and extremes over blocks)."""
    acc[key] = value if key not in acc else op(acc[key], value)


def group_size(n_chunks: int) -> int:
    """ceil(sqrt(n_chunks)): the partials per group in `add_grouped`."""
    return math.isqrt(max(n_chunks, 1) - 1) + 1


def summation_depth(n_chunks: int) -> int:
    """The most additions one partial passes through in `add_grouped(parts, n_chunks)`:
    (G - 1) inside its group and ceil(n_chunks / G) - 1 adding the group totals (G = group_size).

    >>> [summation_depth(c) for c in (1, 2, 4, 9, 10, 100)]
    [0, 1, 2, 4, 5, 18]
    """
    if n_chunks <= 1:
        return 0
    G = group_size(n_chunks)
    return (G - 1) + (-(-n_chunks // G) - 1)


def add_grouped(parts, n_chunks: int) -> dict:
    """Entrywise sum of dicts of arrays: left to right within groups of `group_size(n_chunks)`,
    then the group totals left to right (deterministic; depth `summation_depth`)."""
    G = group_size(n_chunks)
    total = group = None
    count = 0
    for part in parts:
        group = part if group is None else {k: group[k] + part[k] for k in group}
        count += 1
        if count == G:
            total = group if total is None else {k: total[k] + group[k] for k in total}
            group, count = None, 0
    if group is not None:
        total = group if total is None else {k: total[k] + group[k] for k in total}
    return total


@functools.lru_cache(maxsize=1)
def blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries, found once per process."""
    from threadpoolctl import ThreadpoolController  # noqa: PLC0415 - scans the loaded libraries: only when used

    return ThreadpoolController()


def blas_threads() -> int:
    """Threads of NumPy's BLAS as threadpoolctl reports them (1 when it cannot tell)."""
    counts = [info.get("num_threads") or 1 for info in blas_controller().info() if info.get("user_api") == "blas"]
    return max(counts, default=1)


def worker_threads(xp, threads=None) -> int:
    """Threads that row blocks run on: `threads` (a positive int), else the BLAS thread count;
    always 1 outside NumPy (a GPU queue, CuPy, serialises the blocks anyway)."""
    threads = check_optional_int("threads", threads, 1)
    if not array_api_compat.is_numpy_namespace(xp):
        return 1
    return blas_threads() if threads is None else threads


@contextlib.contextmanager
def chunk_runner(workers: int, n_rows: int, rows: int):
    """Yields sums(chunk, n) = sum over s in range(0, n, rows) of chunk(s) (a dict of arrays), run on
    `workers` threads (no more than the chunks of n_rows rows) with the BLAS on one thread each."""
    workers = min(workers, -(-n_rows // rows))
    if workers == 1:
        yield lambda chunk, n: add_grouped(map(chunk, range(0, n, rows)), -(-n // rows))
        return
    with blas_controller().limit(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        yield lambda chunk, n: add_grouped(pool.map(chunk, range(0, n, rows)), -(-n // rows))


def chunk_sums(chunk, n_rows: int, rows: int, workers: int) -> dict:
    """One `chunk_runner` pass."""
    with chunk_runner(workers, n_rows, rows) as sums:
        return sums(chunk, n_rows)
