"""The audit's argument checks and its text: each error names the argument and its command-line flag."""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path

from .._lib.validate import check_choice, check_int, check_modules, check_real
from ..errors import InvalidInputError, InvalidTypeError
from .capture import ATTENTIONS
from .loaders import LoadedModel

__all__ = [
    "DEFAULT_TEXT",
    "check_adapt",
    "check_attentions",
    "check_lengths",
    "check_models",
    "check_rtols",
    "read_text",
]

#: the text shipped with the package (package data): original English prose written for the project, MIT
DEFAULT_TEXT = "default_text.txt"


def check_models(model) -> list:
    """One model (a name, a path or a `LoadedModel`) or a non-empty list of them -> a list."""
    single = isinstance(model, (str, os.PathLike, LoadedModel))
    models = [model] if single else model
    if not isinstance(models, (list, tuple)) or not models:
        raise InvalidTypeError(
            "model (--model) must be a name, a path, a loaded model, or a non-empty list of them"
        )
    for m in models:
        if not isinstance(m, (str, os.PathLike, LoadedModel)):
            raise InvalidTypeError(f"model (--model) entries must be names or paths, got {type(m).__name__}")
    return list(models)


def read_text(text) -> tuple[str, dict]:
    """(content, provenance) of the text file (None: the text shipped with the package)."""
    if text is None:
        content = resources.files(__package__).joinpath(DEFAULT_TEXT).read_text(encoding="utf-8")
        source = f"lora_proofcheck/audit/{DEFAULT_TEXT} (shipped; original English prose, MIT)"
    else:
        if not isinstance(text, (str, os.PathLike)):
            raise InvalidTypeError(f"text (--text) must be a path to a text file, got {type(text).__name__}")
        path = Path(text)
        if not path.is_file():
            raise InvalidInputError(f"text (--text) {str(text)!r} is not an existing file")
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(
                f"text (--text) {str(text)!r} cannot be read as UTF-8 text ({exc})"
            ) from None
        source = str(path)
    if not content.strip():
        raise InvalidInputError(f"text (--text) {source!r} is empty")
    return content, {
        "source": source,
        "sha256": hashlib.sha256(content.encode("utf-8")).hexdigest(),
        "characters": len(content),
    }


def _as_list(values) -> list:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        return [values]
    return list(values)


def check_lengths(lengths) -> list:
    """Distinct integers L >= 2, sorted."""
    values = [check_int("lengths (--lengths)", L, 2) for L in _as_list(lengths)]
    if not values:
        raise InvalidInputError("lengths (--lengths) must hold at least one L >= 2")
    if len(set(values)) != len(values):
        raise InvalidInputError(f"lengths (--lengths) has repeated values: {values}")
    return sorted(values)


def check_rtols(rtols) -> list:
    """Relative tolerances in (0, 1)."""
    values = [check_real("rtol (--rtol)", t) for t in _as_list(rtols)]
    if not values or any(not 0.0 < t < 1.0 for t in values):
        raise InvalidInputError(f"rtol (--rtol) values must lie in (0, 1), got {values}")
    return values


def check_attentions(attention) -> list:
    """Distinct names of `capture.ATTENTIONS`, in the order given."""
    values = [check_choice("attention (--attention)", a, tuple(ATTENTIONS)) for a in _as_list(attention)]
    if not values or len(set(values)) != len(values):
        raise InvalidInputError(
            f"attention (--attention) must list distinct variants of {tuple(ATTENTIONS)}, got {values}"
        )
    return values


def check_adapt(adapt) -> str:
    return check_modules(adapt, "adapt (--adapt)")
