"""Log-log figure of a benchmark result: median time and peak memory against L (matplotlib Agg).

The PNG is byte-for-byte reproducible from the same result: no software/date metadata.
"""

from __future__ import annotations

__all__ = ["plot"]


def plot(result: dict, path) -> None:
    """Write the figure to `path` (PNG)."""
    import matplotlib  # noqa: PLC0415 - ~0.5 s, so only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=100)
    methods = list(dict.fromkeys(e["method"] for e in result["results"]))
    for method in methods:
        ok = sorted((e for e in result["results"] if e["method"] == method and e["status"] == "ok"),
                    key=lambda e: e["L"])
        if not ok:
            continue
        L = [e["L"] for e in ok]
        fit = result["fits"].get(method, {})
        slope = f" (slope {fit['exponent']:.2f})" if fit.get("exponent") is not None else ""
        ax_t.plot(L, [e["median_s"] for e in ok], "o-", label=method + slope)
        ax_m.plot(L, [e["peak_rss_bytes"] / 2**20 for e in ok], "o-", label=method)
    machine = result.get("machine", {}).get("cpu", {})
    threads = result["config"].get("threads") or "default"
    ax_t.set(xlabel="sequence length L", ylabel="median seconds per gradient",
             title=f"d={result['config']['d']}, r={result['config']['r']}, {result['config']['backend']}, "
                   f"threads={threads}")
    ax_m.set(xlabel="sequence length L", ylabel="peak RSS of the process (MiB)",
             title=f"{machine.get('model', '')} ({machine.get('cores', '?')} cores)")
    for ax in (ax_t, ax_m):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)
