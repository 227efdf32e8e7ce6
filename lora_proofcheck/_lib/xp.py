"""Array-namespace helpers: one place that talks to array_api_compat.

Like einops, nothing here imports a framework the caller did not load: CuPy is touched only
when the caller's arrays are CuPy arrays (or when `xp="cupy"` is asked for by name).
"""

from __future__ import annotations

import importlib

import array_api_compat
import numpy as np

from ..errors import InvalidInputError, InvalidTypeError

__all__ = ["SUPPORTED_DTYPES", "dtype_name", "from_numpy", "namespace", "resolve_namespace", "synchronize",
           "to_host64", "to_numpy", "transposed_rows", "transposed_take"]

SUPPORTED_DTYPES = ("float32", "float64")


def namespace(**arrays):
    """The common array namespace of keyword-named arrays; mixed libraries raise, naming them."""
    names = list(arrays)
    for name, value in arrays.items():
        if not array_api_compat.is_array_api_obj(value):
            raise InvalidTypeError(
                f"{name} must be an array (NumPy, CuPy or another array-API library), "
                f"got {type(value).__name__}"
            )
    try:
        return array_api_compat.array_namespace(*arrays.values())
    except TypeError:
        kinds = {n: type(a).__module__.split(".")[0] for n, a in arrays.items()}
        first = kinds[names[0]]
        odd = [n for n in names if kinds[n] != first]
        raise InvalidTypeError(
            f"mixed array libraries: {names[0]} is a {first} array but "
            + ", ".join(f"{n} is a {kinds[n]} array" for n in odd)
        ) from None


def dtype_name(xp, dtype) -> str:
    """'float32' / 'float64' for supported dtypes, else the dtype's own spelling."""
    for name in SUPPORTED_DTYPES:
        if dtype == getattr(xp, name):
            return name
    return str(dtype)


def resolve_namespace(xp):
    """`xp` given as None (NumPy), a module, or a name ('numpy', 'cupy', 'array_api_strict')."""
    if xp is None:
        return array_api_compat.array_namespace(np.empty(0))
    if isinstance(xp, str):
        try:
            module = importlib.import_module(xp)
        except ImportError as exc:
            raise InvalidInputError(f"xp={xp!r}: cannot import that array library ({exc})") from None
        return array_api_compat.array_namespace(module.empty(0))
    return xp


def to_numpy(x) -> np.ndarray:
    """Copy an array of any supported library to host NumPy (for reports and oracles)."""
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def from_numpy(x: np.ndarray, xp, *, device=None):
    """Move a host array into namespace `xp` (on `device` when given)."""
    out = xp.asarray(x)
    if device is not None:
        out = array_api_compat.to_device(out, device)
    return out


def synchronize(x) -> None:
    """Wait for asynchronous devices (CuPy) so host timers measure finished work."""
    if array_api_compat.is_cupy_array(x):
        import cupy

        cupy.cuda.get_current_stream().synchronize()


def to_host64(x) -> np.ndarray:
    """`x` on the host as a float64 NumPy array."""
    return np.asarray(to_numpy(x), dtype=np.float64)


def transposed_rows(xp, a, rows):
    """Rows `rows` (a slice) of an (N, L, m) array, transposed to a C-contiguous (N, m, n) array:
    per-row scalars then broadcast along the contiguous axis (several times faster in NumPy)."""
    blk = a[:, rows, :]
    N, n, m = blk.shape
    # flattening the transposed view forces the C-order copy (reshaping to (N, m, n) would not)
    return xp.reshape(xp.reshape(xp.permute_dims(blk, (0, 2, 1)), (-1,)), (N, m, n))


def transposed_take(xp, a, idx):
    """Rows idx[s] of sample s of an (N, L, m) array (idx: (N, n) indices), as (N, m, n)."""
    if a.shape[0] == 1:
        rows = xp.expand_dims(xp.take(a[0, ...], idx[0, :], axis=0), axis=0)
    else:
        rows = xp.stack([xp.take(a[s, ...], idx[s, :], axis=0) for s in range(a.shape[0])], axis=0)
    return transposed_rows(xp, rows, slice(None))
