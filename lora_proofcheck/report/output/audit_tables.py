"""The tables and lines of a per-head audit (audit.json of `lora-proofcheck audit`), shared by the audit's
own audit.md / audit.html and the report's section "Where real heads sit" (`report --audit FILE.json`).

Every function reads JSON values only (as written to audit.json), never the audit's objects.
"""

from __future__ import annotations

__all__ = ["fmt", "gradient_lines", "gradient_title", "heads_table", "models_table", "softmax_1_table",
           "summary_table"]


def fmt(x, spec=".3g") -> str:
    """A cell: – for None, yes/no for booleans, `spec` for floats and very large integers."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int) and abs(x) >= 10**6:
        return format(float(x), spec)
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def _label(model: str, attention: str) -> str:
    return model if attention == "softmax" else f"{model} ({attention})"


def summary_table(summary: list) -> tuple[list, list, str]:
    """(header, rows, note): one row per model, attention and L."""
    rows = []
    for s in summary:
        r, rt = s["regimes"], s["regimes_true"]
        rows.append(
            [
                _label(s["model"], s.get("attention", "softmax")),
                s["L"],
                s["heads"],
                fmt(s["log_L"]),
                fmt(s["frontier_R"]),
                f"{fmt(s['logit_bound_median'])} ({fmt(s['logit_bound_max'])})",
                f"{fmt(s['max_abs_logit_median'])} ({fmt(s['max_abs_logit_max'])})",
                f"{s['heads_max_abs_logit_le_log_L']} / {s['heads']}",
                fmt(s["Gamma_over_sqrt_log_L_median"]),
                f"{r['below']}/{r['near']}/{r['above']}",
                f"{rt['below']}/{rt['near']}/{rt['above']}",
                f"{s['certifiable_heads']} / {s['heads']}",
            ]
        )
    header = [
        "model",
        "L",
        "heads",
        "log L",
        "frontier R*",
        "R median (max)",
        "true max|S| median (max)",
        "max|S| <= log L",
        "Gamma/sqrt(log L) med.",
        "regime b/n/a",
        "true-logit regime b/n/a",
        "certifiable (rtol 1e-2)",
    ]
    note = (
        "R: the logit bound the certificate uses (Cauchy-Schwarz); max|S|: the true largest logit the "
        "softmax sees; R*(L): the largest R at which the certified path (relative error 1e-2 on exp) is "
        "cheaper than the exact one; regimes below (R <= R*) / near (R* < R <= log L) / above (R > log L)."
    )
    return header, rows, note


def models_table(models: list) -> tuple[list, list, str]:
    """(header, rows, note): one row per model, with its sanity checks."""
    rows = []
    for m in models:
        sanity = "; ".join(
            f"{'' if e.get('attention', 'softmax') == 'softmax' else e['attention'] + ' '}L={e['L']}: "
            + ", ".join(f"{k} {fmt(v)}" for k, v in e["sanity"].items())
            for e in m["per_L"]
        )
        rows.append(
            [
                m["name"],
                m["architecture"],
                f"{m['n_layers']} x {m['n_heads']} ({m['n_kv_heads']} KV)",
                m["head_dim"],
                m["hidden_size"],
                fmt(m["causal"]),
                fmt(m["position_inside_attention"]),
                fmt(m["biases"]),
                (m["sha256"] or "–")[:16] + ("… (pinned, verified)" if m["sha256_verified"] else "…"),
                sanity,
            ]
        )
    header = [
        "model",
        "architecture",
        "layers x heads",
        "d_h",
        "hidden",
        "causal",
        "RoPE in attention",
        "QKV biases",
        "weights sha256",
        "sanity checks",
    ]
    note = (
        "Sanity: next-token NLL in nats per token (causal LMs; a broken pass gives about log of the "
        "vocabulary), mean-pooled embedding norm (encoders)."
    )
    return header, rows, note


def _need(n: dict) -> tuple[str, str, str]:
    if n["degree"] is not None:
        return str(n["degree"]), fmt(n["rank"]), fmt(n["cost_ratio"])
    return f">= {n['degree_lower_bound']}", ">= " + fmt(n["rank"]), ">= " + fmt(n["cost_ratio"])


def heads_table(heads: list, rtols: list) -> tuple[list, list, str]:
    """(header, rows, note): one row per head record."""
    rows = []
    for h in heads:
        row = [
            _label(h["model"], h.get("attention", "softmax")),
            h["L"],
            h["layer"],
            h["head"],
            fmt(h["norm_XW_Q"]),
            fmt(h["norm_XW_K"]),
            fmt(h["Gamma_over_sqrt_log_L"]),
            fmt(h["logit_bound"]),
            fmt(h["max_abs_logit"]),
            fmt(h["row_half_range_max"]),
        ]
        for n in h["needs"]:
            row += list(_need(n))
        row.append(h["regime"])
        rows.append(row)
    header = [
        "model",
        "L",
        "layer",
        "head",
        "||X'W'_Q||max",
        "||X'W'_K||max",
        "Gamma/sqrt(log L)",
        "R",
        "max|S|",
        "row half-range max",
    ]
    for t in rtols:
        header += [f"degree @{t:g}", f"rank @{t:g}", f"cost ratio @{t:g}"]
    header.append("regime")
    note = (
        "'>= g': the exact certified degree was not searched (R above the search radius); g is a proved "
        "lower bound (certification.polynomial.degree_lower_bound) and the rank and cost ratio shown are "
        "lower bounds too."
    )
    return header, rows, note


def softmax_1_table(comparison: list) -> tuple[list, list, str]:
    """(header, rows, note): the logit bounds with Softmax_1 switched in against the model's own."""
    rows = [
        [
            c["model"],
            c["L"],
            fmt(c["layer0_max_rel_diff"], ".2g"),
            fmt(c["median_ratio_all_heads"]),
            f"{c['heads_lower_with_softmax_1']} / {c['heads']}",
            ", ".join(fmt(p["median_ratio"], ".2f") for p in c["per_layer"]),
        ]
        for c in comparison
    ]
    header = [
        "model",
        "L",
        "layer 0: max rel. diff of R",
        "R ratio softmax_1 / softmax (median)",
        "heads with a lower R",
        "median R ratio per layer",
    ]
    note = (
        "Softmax_1 switched into the softmax-trained model at inference. Layer 0 reads the same X either way "
        "(its R must agree: a check of the switch); later layers read hidden states the switch changed."
    )
    return header, rows, note


def gradient_title(g: dict | None) -> str:
    """The heading of one gradient check (its attention, when it ran)."""
    if not g or "skipped" in g:
        return "The LoRA gradient on a real head"
    return f"The LoRA gradient on a real head ({g['model']}, {g.get('attention', 'softmax')})"


def gradient_lines(g: dict | None) -> list:
    """The gradient check on a real head, as sentences."""
    if g is None:
        return ["(not run)"]
    if "skipped" in g:
        return [f"skipped: {g['skipped']}"]
    p = g["problem"]
    n = p.get("normalizer_offset", 0.0)
    lines = [
        f"Head: {g['model']} layer {g['layer']} head {g['head']} at L = {g['L']}, attention "
        f"{g.get('attention', 'softmax')}"
        f" ({g['why']}).",
        f"Problem: X' = {p['X']} (L = {p['L']}, d = {p['d']}); {p['W']}; beta = {p['beta']:.4g}; normaliser "
        f"offset n = {n:g}; LoRA on {p['adapt']}, r = {p['r']}, alpha = {p['alpha']:g}, {p['adapters']}.",
        f"Target: {p['target']} (noise = {p['noise']:g}).",
        f"The problem's queries equal the captured ones to {g['q_rel_diff_vs_captured']:.2g} (relative).",
        f"Exact gradient (generated kernels) vs PyTorch autograd (float64): max abs difference "
        f"{g['exact_vs_autograd_max_abs']:.3g}, relative to the gradient's max {g['gradient_max_abs']:.3g}: "
        f"{g['exact_vs_autograd_rel']:.2g}; losses {g['loss']:.10g} vs {g['torch_loss']:.10g}.",
    ]
    if g["logit_bound"] is None:
        lines.append(
            f"threshold_report (the logit bound and the paper's norms) declined: {g['threshold_report']}"
        )
    else:
        lines.append(
            f"Logit bound R = {g['logit_bound']:.4g}, Gamma = {g['Gamma']:.4g} (Gamma / sqrt(log L) = "
            f"{g['Gamma_over_sqrt_log_L']:.3g}), ||X'||_max = {g['norm_X_kv']:.4g}."
        )
    for a in g["approx"]:
        if a["path"] == "declined":
            lines.append(
                f"approx_gradients at eps = {a['eps']:.3g} (rtol {a['rtol']:g} of the gradient's max): "
                f"declined ({a.get('error', 'error')}). Reason: {a['reason']}"
            )
        else:
            lines.append(
                f"approx_gradients at eps = {a['eps']:.3g}: path {a['path']}, degree {a['degree']}, "
                f"bound {a['bound']:.3g}, error vs exact {a['error_vs_exact']:.3g}."
            )
    fb = g.get("fallback")
    if fb is not None and fb["path"] == "declined":
        lines.append(f"on_threshold='exact': declined too ({fb['reason']}).")
    elif fb is not None:
        lines.append(
            f"on_threshold='exact': path {fb['path']}, certified bound {fmt(fb['bound'])} (rounding floor), "
            f"error vs the exact gradient {fmt(fb['error_vs_exact'])}."
        )
    f = g["forced"]
    if "skipped" in f:
        lines.append(f"forced degree: skipped ({f['skipped']}).")
    else:
        lines.append(
            f"forced degree {f['degree']} (rank {f['rank']}, {f['method']}, delta {fmt(f['delta'])}): "
            "measured error "
            f"{fmt(f['error_vs_exact'])} against a certified bound {fmt(f['bound'])}, at "
            f"{fmt(f['cost_ratio'])} x "
            "the exact path's flops"
            + {
                True: " (the bound holds).",
                False: " (THE BOUND FAILS).",
                None: ": an infinite bound, the certificate certifies nothing here.",
            }[f["bound_holds"]]
        )
    lines.append(f"largest degree cheaper than the exact path here: {fmt(g['largest_cheaper_degree'])}.")
    return lines
