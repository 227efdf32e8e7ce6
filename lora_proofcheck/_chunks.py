"""Sums over row chunks, on several threads with the BLAS pinned to one (shared by both paths).

A chunk's outputs are partial sums over its rows; they are added in chunk order whatever thread
computed them (`map` yields in submission order), so the result and its rounding are deterministic.
NumPy's ufuncs are single-threaded but release the GIL, so chunks on threads use both cores for
the elementwise work too, while the total thread count stays the BLAS's own.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor


def add_in_order(parts) -> dict:
    """Entrywise sum of dicts of arrays, left to right."""
    total = None
    for part in parts:
        total = part if total is None else {k: total[k] + part[k] for k in total}
    return total


def chunk_sums(chunk, n_rows: int, rows: int, workers: int) -> dict:
    """sum over s in range(0, n_rows, rows) of chunk(s) (a dict of arrays), on `workers` threads."""
    starts = range(0, n_rows, rows)
    if workers == 1 or len(starts) == 1:
        return add_in_order(map(chunk, starts))
    from threadpoolctl import threadpool_limits  # noqa: PLC0415 - only threaded runs need it

    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(min(workers, len(starts))) as pool:
        return add_in_order(pool.map(chunk, starts))
