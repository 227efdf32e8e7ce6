"""Plain-text tables for the command line and `check`, printed by rich (no colour, no box: readable in logs)."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table

__all__ = ["key_value_table", "render_table"]


def render_table(header, rows, *, width: int = 200) -> str:
    """`rows` (sequences of strings) under `header` as plain text."""
    table = Table(*header, box=None, pad_edge=False)
    for row in rows:
        table.add_row(*row)
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, force_terminal=False, soft_wrap=False).print(table)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip().splitlines())


def key_value_table(rows, *, width: int = 200) -> str:
    """(name, value) rows, names right-aligned, without a header."""
    table = Table(box=None, pad_edge=False, show_header=False)
    table.add_column(justify="right")
    table.add_column()
    for key, value in rows:
        table.add_row(f"{key}:", value)
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, force_terminal=False, soft_wrap=False).print(table)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip().splitlines())
