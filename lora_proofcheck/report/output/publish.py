"""Atomic output folders: everything is written into a temporary sibling `.DIR.tmp-*`, probed before
any work, and renamed to DIR at the end. An existing DIR is replaced only if it holds a previous
output of the same kind. Any failure or interrupt removes the temporary folder, so DIR is either the
complete new output or untouched. (Reports and audits both publish this way.)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ...errors import InvalidInputError

__all__ = ["prepare_output", "publish", "write_atomically"]


def prepare_output(out: Path, *, name: str = "out", marker: str = "report.json") -> Path:
    """Validate the output folder and create the temporary sibling folder the output is built in.

    An existing folder may be replaced only if it holds a previous output (`marker`); `name` is what
    errors call the argument (the CLI passes its flag)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{name} {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / marker).is_file():
        raise InvalidInputError(
            f"{name} {str(out)!r} is a non-empty directory that does not hold a previous output ({marker}); "
            "refusing to replace it"
        )
    parent = out.resolve().parent
    if not parent.exists():
        raise InvalidInputError(f"{name} {str(out)!r}: parent directory {str(parent)!r} does not exist")
    if not parent.is_dir():
        raise InvalidInputError(f"{name} {str(out)!r}: {str(parent)!r} is not a directory")
    try:
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    except OSError as exc:
        raise InvalidInputError(
            f"{name} {str(out)!r}: cannot write in {str(parent)!r} ({exc.strerror})"
        ) from None


def publish(tmp: Path, out: Path) -> None:
    """Move the finished folder into place (replacing a previous report)."""
    out = Path(out)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a report is for reading
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.resolve().parent))
        os.rmdir(old)
        out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            old.rename(out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def write_atomically(out: Path, write, *, name: str = "out", marker: str = "report.json"):
    """Run `write(folder)` into a temporary sibling of `out` and publish it as `out`; a failure or an
    interrupt removes the temporary folder and leaves `out` as it was. Returns what `write` returns."""
    tmp = prepare_output(out, name=name, marker=marker)
    try:
        value = write(tmp)
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return value
