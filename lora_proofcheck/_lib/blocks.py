"""Sums over row chunks, on several threads with the BLAS pinned to one (shared by both paths).

A chunk's outputs are partial sums over its rows; they are added in chunk order whatever thread
computed them (`map` yields in submission order), so the result and its rounding are deterministic.
NumPy's ufuncs are single-threaded but release the GIL, so chunks on threads use both cores for
the elementwise work too, while the total thread count stays the BLAS's own.  One `chunk_runner`
serves every pass of a call: starting threads and finding the BLAS (threadpoolctl scans the
loaded libraries) cost milliseconds each, so both happen once.
"""

from __future__ import annotations

import contextlib
import functools
from concurrent.futures import ThreadPoolExecutor


def add_in_order(parts) -> dict:
    """Entrywise sum of dicts of arrays, left to right."""
    total = None
    for part in parts:
        total = part if total is None else {k: total[k] + part[k] for k in total}
    return total


@functools.lru_cache(maxsize=1)
def blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries, found once per process."""
    from threadpoolctl import ThreadpoolController  # noqa: PLC0415 - only threaded runs need it

    return ThreadpoolController()


@contextlib.contextmanager
def chunk_runner(workers: int, n_rows: int, rows: int):
    """Yields sums(chunk, n) = sum over s in range(0, n, rows) of chunk(s) (a dict of arrays), run on
    `workers` threads (no more than the chunks of n_rows rows) with the BLAS on one thread each."""
    workers = min(workers, -(-n_rows // rows))
    if workers == 1:
        yield lambda chunk, n: add_in_order(map(chunk, range(0, n, rows)))
        return
    with blas_controller().limit(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        yield lambda chunk, n: add_in_order(pool.map(chunk, range(0, n, rows)))


def chunk_sums(chunk, n_rows: int, rows: int, workers: int) -> dict:
    """One `chunk_runner` pass."""
    with chunk_runner(workers, n_rows, rows) as sums:
        return sums(chunk, n_rows)
