"""The report's peers section: a recorded `lora-proofcheck bench --peers --out` run carried into the
report (`peers_file`), summarized again from its rows; without one the section says it was not run
(a report never fills in numbers it did not measure or read)."""

from __future__ import annotations

import json
from pathlib import Path

from ...benchmarks.peers import summarize_peers
from ...errors import InvalidInputError

__all__ = ["peers", "recorded_peers"]


def peers(config) -> dict:
    """The peers section of a `ReportConfig`: the recorded run, or why there is none."""
    if config.peers_file is None:
        return {"status": "not run",
                "reason": "no recorded `lora-proofcheck bench --peers` run was given (report --peers FILE.json)"}
    return recorded_peers(config.peers_file)


def recorded_peers(path, *, name: str = "peers_file") -> dict:
    """A result written by `lora-proofcheck bench --peers --out`, checked and summarized; `name` is what
    errors call the argument (the CLI passes its flag)."""
    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
        if result.get("kind") != "peers":
            raise KeyError("kind 'peers'")
        rows, config = result["rows"], result["config"]
        summary = summarize_peers(result)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, StopIteration) as exc:
        raise InvalidInputError(f"{name} {str(path)!r} is not a readable `bench --peers` result ({exc})") from None
    return {
        "status": "ok",
        "source": f"recorded: {Path(path).name} ({result.get('created', 'unknown date')})",
        "config": config,
        "summary": summary,
        "rows": rows,
    }
