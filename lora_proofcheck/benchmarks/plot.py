"""Log-log figures of a benchmark result: median time and peak memory against L; and the peers'
frontier, gradient error against time and against rank / feature count (matplotlib Agg).

The PNG is byte-for-byte reproducible from the same result: no software/date metadata.
"""

from __future__ import annotations

__all__ = ["PEER_MARKERS", "peers_figure", "plot", "plot_peers"]

PEER_MARKERS = {"taylor": "o", "chebyshev": "s", "favor+": "^", "support-basis": "D"}
PEER_LABELS = {"taylor": "T", "chebyshev": "C", "favor+": "F", "support-basis": "SB"}
MODE_COLOURS = {"plugin": "C0", "model": "C3"}


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


def _pyplot():
    import matplotlib  # noqa: PLC0415 - ~0.5 s, so only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def peers_figure(rows: list):
    """The frontier of a `bench --peers` run: per (family, R), at the largest L measured, relative
    Frobenius error against seconds (left) and against rank / feature count (right), log-log.
    Filled markers: plug-in; open: model. Dashed: the exact float64 path's time; dotted: the exact
    float32 path's error (the noise floor)."""
    plt = _pyplot()
    ok = [r for r in rows if r["status"] == "ok"]
    largest = {}
    for r in ok:
        key = (r["family"], r["target_R"])
        largest[key] = max(largest.get(key, 0), r["L"])
    keys = list(dict.fromkeys((r["family"], r["target_R"]) for r in ok))
    fig, axes = plt.subplots(max(1, len(keys)), 2, figsize=(12, 3.4 * max(1, len(keys))), dpi=100, squeeze=False)
    if not keys:
        for ax in axes[0]:
            ax.text(0.5, 0.5, "no measured rows", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        return fig
    for (ax_t, ax_k), key in zip(axes, keys):
        group = [r for r in ok if (r["family"], r["target_R"]) == key and r["L"] == largest[key]]
        exact = next((r for r in group if r["method"] == "exact-float64"), None)
        floor = next((r for r in group if r["method"] == "exact-float32"), None)
        for r in group:
            if r["mode"] not in MODE_COLOURS:
                continue
            y = max(r["frob_rel"], 1e-17)
            style = dict(marker=PEER_MARKERS[r["method"]], color=MODE_COLOURS[r["mode"]], ls="none", ms=6,
                         mfc=MODE_COLOURS[r["mode"]] if r["mode"] == "plugin" else "none")
            label = f"{PEER_LABELS[r['method']]}{r['param']}"
            ax_t.plot(r["seconds"], y, **style)
            ax_t.annotate(label, (r["seconds"], y), fontsize=6, xytext=(3, 2), textcoords="offset points")
            ax_k.plot(r["rank"], y, **style)
            ax_k.annotate(label, (r["rank"], y), fontsize=6, xytext=(3, 2), textcoords="offset points")
        if exact is not None:
            ax_t.axvline(exact["seconds"], color="k", ls="--", lw=0.8)
        if floor is not None:
            for ax in (ax_t, ax_k):
                ax.axhline(max(floor["frob_rel"], 1e-17), color="k", ls=":", lw=0.8)
        head = group[0]
        title = (f"{key[0]}, L = {head['L']}, R = {head['R']:.3g}, max|S| = {head['max_abs_S']:.3g}")
        ax_t.set(xscale="log", yscale="log", xlabel="seconds per gradient (best of repeats)",
                 ylabel="relative Frobenius error", title=title)
        ax_k.set(xscale="log", yscale="log", xlabel="rank k (polynomials, support basis) / features m (FAVOR+)",
                 ylabel="relative Frobenius error", title=title)
        for ax in (ax_t, ax_k):
            ax.grid(True, which="both", alpha=0.3)
            ax.xaxis.set_minor_formatter(plt.NullFormatter())  # minor labels of log axes overlap
    handles = [plt.Line2D([], [], marker=PEER_MARKERS[m], color="0.3", ls="none", label=f"{PEER_LABELS[m]}g: {m}")
               for m in PEER_MARKERS]
    handles += [plt.Line2D([], [], marker="o", color=c, mfc=c if mode == "plugin" else "none", ls="none",
                           label=f"{mode} gradient") for mode, c in MODE_COLOURS.items()]
    handles += [plt.Line2D([], [], color="k", ls="--", lw=0.8, label="exact float64 time"),
                plt.Line2D([], [], color="k", ls=":", lw=0.8, label="exact float32 error (noise floor)")]
    axes[0][1].legend(handles=handles, fontsize=7, loc="best")
    fig.suptitle("peers: gradient error against time and rank (filled: plug-in = exact formulas at F~; "
                 "open: model = derivative of the approximate loss)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))  # room for the suptitle
    return fig


def plot_peers(result: dict, path) -> None:
    """Write the frontier of a `bench --peers` result to `path` (PNG)."""
    fig = peers_figure(result["rows"])
    fig.savefig(path, format="png", metadata={"Software": None})
    _pyplot().close(fig)
