"""The builder: write every generated file of `targets` (or, with `check`, only compare).

`regen(check=True)` reports stale files without writing (the test suite runs it, like SymPy's
checked-in parser builders).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from .targets import targets

__all__ = ["regen"]


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    os.replace(tmp, path)


def regen(check: bool = False) -> tuple[list, float]:
    """Write (or with `check`, compare) every generated file; returns (stale paths, seconds)."""
    t0 = time.perf_counter()
    stale = []
    for path, text in targets().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            stale.append(path)
            if not check:
                _atomic_write(path, text)
    return stale, time.perf_counter() - t0
