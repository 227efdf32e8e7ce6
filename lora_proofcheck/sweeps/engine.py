"""The one sweep engine: cells run serially, on a local Dask cluster, or on an existing one.

A sweep is a list of `Cell`s. Each cell is a pure function of its parameters: `fn(**params,
seed=seed)` returns JSON-ready data, and `seed` comes from the cell's key alone
(`cell_seed(base_seed, key)` = `stream_seed(base_seed, "/".join(key))`, the report's seed rule),
so a cell draws the same instance whatever runs it. Results stream back as cells finish
(`Runner.stream`) and `run_sweep` returns them sorted by key: the same JSON serially (the
default), on `workers=N` (a Dask LocalCluster on this machine: N worker processes, one thread
each, random ports) or on `scheduler="tcp://HOST:PORT"` (a running cluster whose workers can
import this package). `distributed` is the optional extra `pip install -e ".[distributed]"`,
imported only when a cluster is asked for.

Identical results also need one BLAS thread count everywhere (a multithreaded GEMM rounds
differently): the engine pins the BLAS to one thread while it streams in this process
(`_BlasPin`); Dask's worker processes start single-threaded (its Nanny sets
OMP/OPENBLAS/MKL_NUM_THREADS=1).

A cell's exception reaches the caller with its own type (Dask re-raises remote errors as their
type); the cell's key is added as a note (`add_note`), and the rest of the sweep is cancelled.

A cell function whose module the workers cannot import (a script, a notebook, a test module that
pytest imported under its own name) is shipped by value (`cloudpickle.register_pickle_by_value`):
by reference, Dask's workers fail to unpickle the task and the sweep waits forever (seen with
pytest's `--import-mode=importlib`, whose test modules no fresh process can import).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import re
import sys
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from .._lib.blocks import blas_controller
from .._lib.jsonable import jsonable
from .._lib.validate import check_bool, check_optional_int, check_seed
from ..errors import InvalidInputError, InvalidTypeError

__all__ = ["INSTALL_HINT", "Cell", "DaskRunner", "SerialRunner", "cell_seed", "check_scheduler", "key_stream",
           "open_runner", "progress_bar", "run_sweep", "runner_scope", "stream_seed", "to_json"]

INSTALL_HINT = 'pip install -e ".[distributed]"'
_ADDRESS = re.compile(r"^(tcp|tls)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
CONNECT_TIMEOUT = "10s"
_KEY_PART = (str, int, float)


# ----------------------------------------------------------------------------------------------
# cells and seeds


def stream_seed(base_seed: int, stream: str) -> int:
    """A 32-bit seed from a base seed and a stream name, stable across versions and machines:
    SeedSequence([base_seed, crc32(stream)])."""
    return int(np.random.SeedSequence([base_seed, zlib.crc32(stream.encode())]).generate_state(1)[0])


def key_stream(key: tuple) -> str:
    """The seed stream name of a key: its parts joined by '/' (("property", "QV", 64, 0.5) ->
    "property/QV/64/0.5")."""
    return "/".join(str(part) for part in key)


def cell_seed(base_seed: int, key) -> int:
    """The seed of the cell keyed `key` (a tuple, or its stream name)."""
    return stream_seed(base_seed, key if isinstance(key, str) else key_stream(key))


@dataclass(frozen=True)
class Cell:
    """One point of a sweep: `key` (a tuple of str/int/float, unique in its sweep; it orders the
    results and names the seed) and `params` (JSON-ready keyword arguments of the cell function)."""

    key: tuple
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        key = self.key if isinstance(self.key, tuple) else (self.key,)
        if not key:
            raise InvalidInputError("a cell key must have at least one part")
        for part in key:
            if isinstance(part, bool) or not isinstance(part, _KEY_PART):
                raise InvalidTypeError(f"cell key parts must be str, int or float, got {type(part).__name__} "
                                       f"in {key!r}")
            if isinstance(part, float) and not math.isfinite(part):
                raise InvalidInputError(f"cell key parts must be finite, got {part!r} in {key!r}")
        if not isinstance(self.params, dict):
            raise InvalidTypeError(f"cell params must be a dict, got {type(self.params).__name__}")
        if "seed" in self.params:
            raise InvalidInputError(f"cell {key!r}: 'seed' is derived from the key, not a parameter")
        object.__setattr__(self, "key", key)


def _check_cells(cells) -> list[Cell]:
    cells = list(cells)
    seen, shape = set(), None
    for c in cells:
        if not isinstance(c, Cell):
            raise InvalidTypeError(f"cells must be Cell instances, got {type(c).__name__}")
        if c.key in seen:
            raise InvalidInputError(f"duplicate cell key {c.key!r}")
        seen.add(c.key)
        kinds = tuple(float if isinstance(p, (int, float)) else str for p in c.key)
        if shape is None:
            shape = kinds
        elif kinds != shape:  # sorting needs comparable keys
            raise InvalidInputError(f"cell keys must share one layout (str/number per position): {c.key!r} "
                                    f"differs from the first cell's")
    return cells


def run_cell(fn: Callable, cell: Cell, base_seed: int):
    """Evaluate one cell (on whichever process runs it): fn(**params, seed=...) made JSON-ready."""
    value = jsonable(fn(**cell.params, seed=cell_seed(base_seed, cell.key)))
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidTypeError(f"sweep cell {key_stream(cell.key)!r} returned data that is not JSON-ready "
                               f"({exc})") from None
    return value


class _BlasPin:
    """The BLAS on one thread while a runner of this process streams (reference-counted: nested
    sweeps share one setting).

    Why: a multithreaded GEMM rounds differently from a single-threaded one (measured: property
    grid errors differ at 3e-7 relative between 2 BLAS threads and 1), so identical results need
    one BLAS thread count everywhere. Worker processes have it from the start (the Nanny sets
    OMP/OPENBLAS/MKL_NUM_THREADS=1). In this process the limit is set from the caller's thread:
    OpenBLAS 0.3.31 ignored threadpoolctl limits set from a worker thread (measured), while one
    set from the main thread holds for every thread. The chunked passes (`_lib.blocks`) sum
    their chunks in order whatever their thread count, so they are unaffected either way."""

    def __init__(self):
        self.lock = threading.Lock()
        self.count = 0
        self.limiter = None

    def __enter__(self):
        with self.lock:
            if self.count == 0:
                self.limiter = blas_controller().limit(limits=1, user_api="blas")
            self.count += 1
        return self

    def __exit__(self, *exc):
        with self.lock:
            self.count -= 1
            if self.count == 0:
                self.limiter.restore_original_limits()
                self.limiter = None
        return False


_PIN = _BlasPin()


def _pinned(on: bool):
    return _PIN if on else contextlib.nullcontext()


def _note(exc: BaseException, cell: Cell) -> BaseException:
    if hasattr(exc, "add_note"):  # Python >= 3.11
        exc.add_note(f"in sweep cell {key_stream(cell.key)!r} (params {cell.params!r})")
    return exc


# ----------------------------------------------------------------------------------------------
# argument checks


def check_scheduler(scheduler):
    """A scheduler address 'tcp://HOST:PORT' (or tls://, inproc://), an existing
    distributed.Client, or None."""
    if scheduler is None:
        return None
    if not isinstance(scheduler, str):
        if type(scheduler).__name__ == "Client" and type(scheduler).__module__.startswith("distributed"):
            return scheduler
        raise InvalidTypeError(f"scheduler must be an address string like 'tcp://HOST:PORT', got "
                               f"{type(scheduler).__name__}")
    if scheduler.startswith("inproc://"):
        return scheduler
    m = _ADDRESS.match(scheduler)
    if m is None or not 0 < int(m.group(3)) < 65536:
        raise InvalidInputError(f"scheduler must look like 'tcp://HOST:PORT' (PORT in 1..65535), got "
                                f"{scheduler!r}")
    return scheduler


def _distributed():
    try:
        import distributed  # noqa: PLC0415 - the optional extra, only when a cluster is asked for
    except ImportError as exc:
        raise InvalidInputError(f"running cells on Dask workers needs the optional 'distributed' package "
                                f"({exc}); install it with: {INSTALL_HINT}") from None
    return distributed


# ----------------------------------------------------------------------------------------------
# runners


class SerialRunner:
    """Cells one after another in this process."""

    description = "serial"
    workers = 1

    def __init__(self, pin_blas: bool = True):
        self.pin_blas = check_bool("pin_blas", pin_blas)

    def stream(self, fn: Callable, cells: Iterable[Cell], base_seed: int = 0) -> Iterator[tuple]:
        cells = _check_cells(cells)
        with _pinned(self.pin_blas):
            for cell in cells:
                try:
                    result = run_cell(fn, cell, base_seed)
                except BaseException as exc:  # noqa: BLE001 - re-raised with the cell's key
                    raise _note(exc, cell)
                yield cell.key, result

    def close(self) -> None:
        pass


class _ByValue:
    """A cell function pickled by value; called like it (unpickled once per worker process)."""

    def __init__(self, blob: bytes):
        self.blob = blob
        self._fn = None

    def __getstate__(self):
        return {"blob": self.blob}

    def __setstate__(self, state):
        self.blob, self._fn = state["blob"], None

    def __call__(self, **kwargs):
        if self._fn is None:
            import cloudpickle

            self._fn = cloudpickle.loads(self.blob)
        return self._fn(**kwargs)


def _module_importable(name: str) -> bool:
    """Whether this process could import module `name` afresh (run on the workers)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class DaskRunner:
    """Cells as tasks of a Dask client (a LocalCluster of this runner's, or an existing cluster)."""

    def __init__(self, client, cluster=None, description="dask", *, own_client=True, pin_blas=True):
        # workers in this process (threads) share its BLAS: pin it from here (`_BlasPin`)
        self.pin_blas = pin_blas and str(client.scheduler.address).startswith("inproc://")
        self.client = client
        self.cluster = cluster
        self.description = description
        self.own_client = own_client  # a Client the caller lent stays open
        self._importable = {}

    def _ship(self, fn: Callable):
        """`fn` as the workers can unpickle it: itself when they can import its module, else its
        cloudpickle by value (module docstring). In-process workers share this process's modules."""
        name = getattr(fn, "__module__", None)
        if self.pin_blas or not name or name == "__main__":
            return fn  # inproc workers; __main__ is pickled by value anyway
        if name not in self._importable:
            self._importable[name] = all(self.client.run(_module_importable, name).values())
        if self._importable[name]:
            return fn
        import cloudpickle  # comes with distributed

        cloudpickle.register_pickle_by_value(sys.modules[name])
        try:
            return _ByValue(cloudpickle.dumps(fn))
        finally:
            cloudpickle.unregister_pickle_by_value(sys.modules[name])

    @property
    def workers(self) -> int:
        return max(1, len(self.client.scheduler_info(n_workers=-1).get("workers", {})))

    def stream(self, fn: Callable, cells: Iterable[Cell], base_seed: int = 0) -> Iterator[tuple]:
        distributed = _distributed()
        cells = _check_cells(cells)
        if not cells:
            return
        fn = self._ship(fn)
        with _pinned(self.pin_blas):
            n = len(cells)
            futures = self.client.map(run_cell, [fn] * n, cells, [base_seed] * n, pure=False)
            by_future = {f.key: c for f, c in zip(futures, cells)}
            done = False
            try:
                for fut, result in distributed.as_completed(futures, loop=self.client.loop, with_results=True,
                                                               raise_errors=False):
                    cell = by_future[fut.key]
                    if fut.status == "error":
                        try:
                            fut.result()  # re-raises the cell's exception with its own type and traceback
                        except BaseException as exc:  # noqa: BLE001 - re-raised with the cell's key
                            raise _note(exc, cell) from None
                    yield cell.key, result
                done = True
            finally:
                if not done:
                    self.client.cancel(futures)

    def close(self) -> None:
        if self.own_client:
            with contextlib.suppress(Exception):
                self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()


def open_runner(workers=None, scheduler=None, *, processes: bool = True, pin_blas: bool = True):
    """A runner: serial (both None), a LocalCluster of `workers` processes (threads when
    processes=False), or a client attached to `scheduler`. Close it (or use `runner_scope`).
    pin_blas=False lets cells use the BLAS's own thread count (the last bits of results then
    depend on what ran them)."""
    workers = check_optional_int("workers", workers, 1)
    scheduler = check_scheduler(scheduler)
    check_bool("processes", processes)
    check_bool("pin_blas", pin_blas)
    if workers is not None and scheduler is not None:
        raise InvalidInputError("give either workers (a local cluster) or scheduler (an existing one), not both")
    if workers is None and scheduler is None:
        return SerialRunner(pin_blas)
    distributed = _distributed()
    if scheduler is not None:
        if not isinstance(scheduler, str):
            return DaskRunner(scheduler, None, f"client of {scheduler.scheduler.address}", own_client=False,
                              pin_blas=pin_blas)
        try:
            client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise InvalidInputError(f"scheduler {scheduler!r}: cannot connect ({type(exc).__name__}: {exc})") \
                from None
        return DaskRunner(client, None, f"scheduler {scheduler}", pin_blas=pin_blas)
    # No fixed ports: scheduler_port=0 and dashboard_address=":0" are random free ports (the scheduler
    # always serves HTTP, on 8787 unless told; the dashboard proper needs bokeh).
    cluster = distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=processes, dashboard_address=":0",
        scheduler_port=0, silence_logs=logging.CRITICAL,
    )
    try:
        client = distributed.Client(cluster, set_as_default=False)
    except BaseException:
        cluster.close()
        raise
    kind = "processes" if processes else "threads"
    return DaskRunner(client, cluster, f"LocalCluster({workers} {kind}, 1 thread each)", pin_blas=pin_blas)


@contextlib.contextmanager
def runner_scope(workers=None, scheduler=None, *, processes: bool = True, runner=None, pin_blas: bool = True):
    """`with runner_scope(...) as r:` opens (and closes) a runner, or lends an open one."""
    if runner is not None:
        if workers is not None or scheduler is not None:
            raise InvalidInputError("give an open runner or workers/scheduler, not both")
        yield runner
        return
    r = open_runner(workers, scheduler, processes=processes, pin_blas=pin_blas)
    try:
        yield r
    finally:
        r.close()


def progress_bar(total: int, desc: str, progress=None, unit: str = "cell"):
    """A tqdm bar on stderr. progress=None: only on a terminal (tqdm's own rule); True/False force it."""
    return tqdm(total=total, desc=desc, unit=unit, disable=None if progress is None else not progress,
                dynamic_ncols=True, mininterval=0.5)


def run_sweep(fn: Callable, cells: Iterable[Cell], *, base_seed: int = 0, workers=None, scheduler=None,
              processes: bool = True, runner=None, progress=None, desc: str = "sweep",
              pin_blas: bool = True, on_result: Callable | None = None) -> dict:
    """{key: fn(**params, seed=cell_seed(base_seed, key))} for every cell, in key order.

    Results stream in as cells finish (a tqdm bar counts them); the returned dict is sorted by key
    and the same whatever ran the cells. `runner`: an open runner to reuse (one cluster for a whole
    report); else one is opened from workers/scheduler (serial when both are None) and closed.
    `on_result(key, result)` is called as each cell arrives (e.g. to step another progress bar)."""
    if not callable(fn):
        raise InvalidTypeError(f"fn must be callable, got {type(fn).__name__}")
    base_seed = check_seed("base_seed", base_seed)
    if on_result is not None and not callable(on_result):
        raise InvalidTypeError(f"on_result must be callable or None, got {type(on_result).__name__}")
    cells = _check_cells(cells)
    out = {}
    with runner_scope(workers, scheduler, processes=processes, runner=runner, pin_blas=pin_blas) as r, \
            progress_bar(len(cells), desc, progress) as bar:
        for key, result in r.stream(fn, cells, base_seed):
            out[key] = result
            bar.update(1)
            if on_result is not None:
                on_result(key, result)
    return {key: out[key] for key in sorted(out)}


def to_json(results: dict) -> str:
    """Canonical JSON of a sweep's results (keys as their stream names): the identity tests' form."""
    return json.dumps({key_stream(k): v for k, v in results.items()}, sort_keys=True, allow_nan=False)
