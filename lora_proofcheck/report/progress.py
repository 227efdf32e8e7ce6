"""A small progress bar on stderr for `lora-proofcheck report`.

On a terminal one line is redrawn in place; otherwise (logs, CI, tests) one line is printed per
finished step, so captured output stays readable.
"""

from __future__ import annotations

import sys
import time


class Progress:
    """`total` steps; `step(label)` marks one finished. `stream=None` disables output."""

    def __init__(self, total: int, stream=sys.stderr, width: int = 30):
        self.total = max(1, int(total))
        self.done = 0
        self.stream = stream
        self.width = width
        self.t0 = time.perf_counter()
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())

    def step(self, label: str) -> None:
        self.done = min(self.total, self.done + 1)
        if self.stream is None:
            return
        filled = round(self.width * self.done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        line = f"[{bar}] {self.done:>3}/{self.total} {time.perf_counter() - self.t0:6.1f}s  {label}"
        if self.tty:
            self.stream.write("\r" + line[:120].ljust(120))
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None and self.tty and self.done < self.total:
            self.stream.write("\n")
            self.stream.flush()
