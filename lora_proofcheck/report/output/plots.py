"""The report's figures, drawn from the report's own numbers (matplotlib, Agg).

PNG bytes are deterministic for the same data: no "Software" metadata, fixed size and dpi.
A section that is not available still gets its figure, saying so, so every report has the same
set of files.
"""

from __future__ import annotations

import io
import math

import numpy as np

from ...benchmarks.plot import peers_figure

__all__ = ["AUDIT_PLOTS", "PLOTS", "bound_tightness", "error_vs_bound", "heads_figure", "layers_figure",
           "make_plots", "peers_frontier", "phase_diagram", "real_heads", "sweep", "time_vs_L"]

PLOTS = {
    "error_vs_bound.png": "Measured max-abs error of the approximate gradients against the certified bound "
    "(property grid; points below the diagonal keep the promise).",
    "bound_tightness.png": "Tightness of the certificate: error / bound against the logit bound R, per case.",
    "phase_diagram.png": "Analytic frontier: (a) crossing t* = Γ*/√ln L where the certified low-rank cost "
    "meets the exact cost; (b) log10 cost ratio over (L, t) for d = ⌈c·log2 L⌉, eps = 1/L "
    "(× = no degree cheaper than the exact path certifies eps).",
    "sweep.png": "Measured relative error at a fixed rank budget against x = √(R / ln L), several L.",
    "time_vs_L.png": "Time against L (log-log) with fitted slopes.",
    "peers_frontier.png": "Peers side by side (a recorded `bench --peers` run): relative Frobenius error of the "
    "LoRA gradients against time and against rank / feature count, per family and R at the largest L; filled: "
    "plug-in gradient (exact formulas at F~), open: model gradient (derivative of the approximate loss).",
    "real_heads.png": "Where real heads sit (recorded audit): every head's logit bound R (a) and true max "
    "|S_ij| "
    "(b) against L, with sqrt(log L), log L and the certifiable frontier R*(L) (rtol 1e-2): below the "
    "frontier the certified approximate path is cheaper than the exact one.",
}
#: the figures of `lora-proofcheck audit` (audit.html), drawn by the same functions
AUDIT_PLOTS = {
    "audit_heads.png": PLOTS["real_heads.png"].replace("Where real heads sit (recorded audit): every",
                                                       "Every"),
    "audit_layers.png": "Median (solid) and max (dashed) logit bound R per layer.",
}


def _pyplot():
    """matplotlib.pyplot on the Agg backend, imported on first use (~0.5 s, so only when a figure is drawn)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _num(x):
    if isinstance(x, str):
        return {"inf": math.inf, "-inf": -math.inf}.get(x, math.nan)
    return math.nan if x is None else float(x)


def _png(fig) -> bytes:
    for ax in fig.axes:  # minor tick labels of log axes overlap the major ones
        ax.xaxis.set_minor_formatter(_pyplot().NullFormatter())
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    _pyplot().close(fig)
    return buf.getvalue()


def _unavailable(ax, section: dict):
    ax.text(
        0.5,
        0.5,
        f"not available:\n{section.get('reason', section.get('status'))}"[:200],
        ha="center",
        va="center",
        wrap=True,
        transform=ax.transAxes,
    )
    ax.set_axis_off()


def error_vs_bound(report) -> bytes:
    section = report["measurements"]["properties"]
    fig, ax = _pyplot().subplots(figsize=(6, 5))
    rows = [
        r
        for r in section.get("rows", [])
        if r["status"] == "ok" and math.isfinite(_num(r["bound"])) and _num(r["error"]) > 0
    ]
    if not rows:
        _unavailable(ax, section if "rows" not in section else {"reason": "no finite points"})
        return _png(fig)
    for case in dict.fromkeys(r["case"] for r in rows):
        pts = [(_num(r["bound"]), _num(r["error"])) for r in rows if r["case"] == case]
        ax.scatter(*zip(*pts), s=14, label=case, alpha=0.8)
    lo = min(min(_num(r["error"]), _num(r["bound"])) for r in rows)
    hi = max(max(_num(r["error"]), _num(r["bound"])) for r in rows)
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="error = bound")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="certified bound (max-abs)",
        ylabel="measured max-abs error",
        title="approximate gradients: error vs certified bound",
    )
    ax.legend(fontsize=8)
    return _png(fig)


def bound_tightness(report) -> bytes:
    section = report["measurements"]["properties"]
    fig, ax = _pyplot().subplots(figsize=(6, 4))
    rows = [r for r in section.get("rows", []) if r["status"] == "ok" and _num(r["ratio"]) > 0]
    if not rows:
        _unavailable(ax, section if "rows" not in section else {"reason": "no finite points"})
        return _png(fig)
    cases = list(dict.fromkeys(r["case"] for r in rows))
    for i, case in enumerate(cases):
        pts = [
            (_num(r["R"]) * (1 + 0.04 * (i - len(cases) / 2)), _num(r["ratio"]))
            for r in rows
            if r["case"] == case
        ]
        ax.scatter(*zip(*pts), s=14, label=case, alpha=0.8)
    ax.axhline(1.0, color="k", ls="--", lw=1)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="logit bound R",
        ylabel="error / (bound + reference floor)",
        title="tightness of the certified bound",
    )
    Rs = sorted({_num(r["R"]) for r in rows})
    ax.set_xticks(Rs, [f"{R:g}" for R in Rs])
    ax.legend(fontsize=8)
    return _png(fig)


def phase_diagram(report) -> bytes:
    section = report["measurements"]["frontier"]
    fig, (a, b) = _pyplot().subplots(1, 2, figsize=(12, 4.8))
    if "curves" not in section:
        _unavailable(a, section)
        _unavailable(b, section)
        return _png(fig)
    for c in section["curves"]:
        pts = [(p["log2L"], _num(p["t_star"])) for p in c["points"] if p["t_star"] is not None]
        if pts:
            a.plot(
                *zip(*pts),
                marker="o",
                ms=3,
                ls="-" if c["eps"] == "1/L" else ":",
                label=f"{c['rule']}, eps={c['eps']}",
            )
    a.set(
        xlabel="log2 L",
        ylabel="t* = Γ*/√ln L (cost crossing)",
        title="(a) where low-rank stops beating exact",
    )
    a.legend(fontsize=7)
    rule = next((c["rule"] for c in section["curves"] if c["kind"] == "log"), section["curves"][0]["rule"])
    cells = [c for c in section["cells"] if c["rule"] == rule and c["eps"] == "1/L"]
    Ls = sorted({c["log2L"] for c in cells})
    ts = sorted({c["t"] for c in cells})
    grid = np.full((len(ts), len(Ls)), np.nan)
    for c in cells:  # no degree <= the largest cheaper one certifies eps: shown at the top of the scale
        ratio = _num(c["cost_ratio"])
        grid[ts.index(c["t"]), Ls.index(c["log2L"])] = math.log10(ratio) if ratio > 0 else np.nan
    shown = np.where(np.isnan(grid), 3.0, grid)
    im = b.imshow(
        shown,
        origin="lower",
        aspect="auto",
        cmap="coolwarm",
        vmin=-3,
        vmax=3,
        extent=(Ls[0] - 1, Ls[-1] + 1, -0.5, len(ts) - 0.5),
    )
    b.set_yticks(range(len(ts)), [f"{t:g}" for t in ts])
    for i in range(len(ts)):
        for j, L2 in enumerate(Ls):
            if np.isnan(grid[i, j]):
                b.text(L2, i, "×", ha="center", va="center", fontsize=7)
    curve = next(c for c in section["curves"] if c["rule"] == rule and c["eps"] == "1/L")
    star = [
        (p["log2L"], np.interp(_num(p["t_star"]), ts, range(len(ts))))
        for p in curve["points"]
        if p["t_star"] is not None
    ]
    if star:
        b.plot(*zip(*star), "k-", lw=2, label="t*(L)")
        b.legend(fontsize=8, loc="upper left")
    fig.colorbar(im, ax=b, label="log10(low-rank / exact flops); × = no cheaper degree certifies eps")
    b.set(xlabel="log2 L", ylabel="t = Γ/√ln L", title=f"(b) {rule}, eps = 1/L")
    fig.tight_layout()
    return _png(fig)


def sweep(report) -> bytes:
    section = report["measurements"]["sweep"]
    fig, ax = _pyplot().subplots(figsize=(6, 4.5))
    if "rows" not in section:
        _unavailable(ax, section)
        return _png(fig)
    for L in sorted({r["L"] for r in section["rows"]}):
        pts = sorted((_num(r["x"]), _num(r["rel_error"])) for r in section["rows"] if r["L"] == L)
        ax.plot(*zip(*pts), marker="o", ms=4, label=f"L = {L}")
    ax.axvline(1.0, color="k", ls="--", lw=1)
    ax.axhline(1e-2, color="gray", ls=":", lw=1)
    ax.set(
        yscale="log",
        xlabel="x = √(R / ln L)",
        ylabel="relative max error of the gradients",
        title=f"fixed rank k = {section['rank']} (degree {section['degree']}, d = {section['d']})",
    )
    ax.legend(fontsize=8)
    return _png(fig)


def _fit(Ls, ts):
    if len(set(Ls)) < 2:
        return None
    slope, _ = np.polyfit(np.log(Ls), np.log(ts), 1)
    return float(slope)


def time_vs_L(report) -> bytes:
    timing = report["measurements"]["timing"]
    bench = report["measurements"]["benchmark"]
    fig, ax = _pyplot().subplots(figsize=(6, 4.5))
    series = {}
    for r in timing.get("rows", []):
        series.setdefault(f"{r['method']} (in-process, best of 3)", []).append((r["L"], r["best_s"]))
    for r in bench.get("results", []):
        if r.get("status") == "ok":
            series.setdefault(f"bench: {r['method']}", []).append((r["L"], r["median_s"]))
    if not series:
        _unavailable(ax, timing)
        return _png(fig)
    for name, pts in series.items():
        pts.sort()
        Ls, ts = zip(*pts)
        slope = _fit(Ls, ts)
        ax.plot(Ls, ts, marker="o", ms=4, label=name + ("" if slope is None else f", slope {slope:.2f}"))
    ax.set(
        xscale="log", yscale="log", xlabel="L", ylabel="seconds", title="time vs L (fitted log-log slopes)"
    )
    ax.legend(fontsize=7)
    return _png(fig)


def peers_frontier(report) -> bytes:
    section = report["measurements"].get("peers", {"status": "not run", "reason": "absent"})
    if section.get("status") != "ok":
        fig, ax = _pyplot().subplots(figsize=(6, 3))
        _unavailable(ax, section)
        return _png(fig)
    return _png(peers_figure(section["rows"]))


def heads_figure(heads, curve) -> bytes:
    """Every head's logit bound and true max |S_ij| against L (one colour per model and attention), with
    sqrt(log L), log L and the frontier `curve` ([{L, head_dim, R}]). `heads`: dicts holding model,
    attention, L, logit_bound and max_abs_logit (audit.json's heads, or the report section's points)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    if not heads:
        for ax in axes:
            _unavailable(ax, {"reason": "no head records"})
        return _png(fig)
    groups = list(dict.fromkeys((h["model"], h.get("attention", "softmax")) for h in heads))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    Lg = np.array(sorted({c["L"] for c in curve} | {h["L"] for h in heads}), dtype=float)
    rng = np.random.default_rng(0)  # horizontal jitter only, for legibility
    for ax, key, title in ((axes[0], "logit_bound", "(a) logit bound R the certificate uses"),
                           (axes[1], "max_abs_logit", "(b) true max |S_ij|")):
        for i, (model, attention) in enumerate(groups):
            rows = [h for h in heads if (h["model"], h.get("attention", "softmax")) == (model, attention)]
            x = np.array([h["L"] for h in rows], dtype=float)
            x = x * np.exp2(0.12 * (i - (len(groups) - 1) / 2) + 0.04 * rng.standard_normal(len(x)))
            label = model if attention == "softmax" else f"{model} ({attention})"
            ax.scatter(x, [_num(h[key]) for h in rows], s=9, alpha=0.5, color=colors[i % len(colors)],
                       marker="o" if attention == "softmax" else "^", label=f"{label} heads")
        ax.plot(Lg, np.sqrt(np.log(Lg)), "k:", label="sqrt(log L)")
        ax.plot(Lg, np.log(Lg), "k--", label="log L")
        for j, d in enumerate(sorted({c["head_dim"] for c in curve})):
            pts = [(c["L"], _num(c["R"])) for c in curve if c["head_dim"] == d and _num(c["R"]) > 0]
            if pts:
                ax.plot(*zip(*pts), ".-", color=("red", "purple", "brown")[j % 3],
                        label=f"frontier R*(L), d_h = {d}")
        ax.set(xscale="log", yscale="log", xlabel="L (tokens)", title=title)
        ax.set_xscale("log", base=2)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("logit magnitude")
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def layers_figure(models) -> bytes:
    """Median (solid) and max (dashed) logit bound per layer, one line per model, attention and L
    (audit.json's models)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    i = 0
    for m in models:
        for entry in m["per_L"]:
            layers = [p["layer"] for p in entry["per_layer"]]
            c = colors[i % len(colors)]
            tag = "" if entry.get("attention", "softmax") == "softmax" else f" {entry['attention']}"
            ax.plot(layers, [p["logit_bound_median"] for p in entry["per_layer"]], "-", color=c,
                    label=f"{m['name']}{tag} L={entry['L']}")
            ax.plot(layers, [p["logit_bound_max"] for p in entry["per_layer"]], "--", color=c)
            i += 1
    ax.set(yscale="log", xlabel="layer", ylabel="logit bound R")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def real_heads(report) -> bytes:
    section = report["measurements"]["audit"]
    if section.get("status") != "ok":
        fig, ax = _pyplot().subplots(figsize=(12, 5))
        _unavailable(ax, section)
        return _png(fig)
    return heads_figure(section["points"], section["frontier_curve"])


def make_plots(report) -> dict:
    """{file name: (PNG bytes, caption)} for every figure in PLOTS."""
    makers = {
        "error_vs_bound.png": error_vs_bound,
        "bound_tightness.png": bound_tightness,
        "phase_diagram.png": phase_diagram,
        "sweep.png": sweep,
        "time_vs_L.png": time_vs_L,
        "real_heads.png": real_heads,
        "peers_frontier.png": peers_frontier,
    }
    return {name: (makers[name](report), caption) for name, caption in PLOTS.items()}
