"""Tables: plain text for the command line and `check` (printed by rich: no colour, no box, readable in
logs), and the Markdown and HTML tables of the reports and audits."""

from __future__ import annotations

import html
import io

from rich.console import Console
from rich.table import Table

__all__ = ["html_table", "key_value_table", "markdown_table", "render_table"]


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


def markdown_table(header, rows) -> str:
    """A GitHub-flavoured Markdown table (cells' bars escaped, newlines flattened).

    >>> print(markdown_table(["a", "b"], [[1, "x|y"]]))
    | a | b |
    |---|---|
    | 1 | x\\|y |
    """
    cell = lambda x: str(x).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header, rows) -> str:
    """An HTML table, every cell escaped."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
