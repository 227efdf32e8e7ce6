"""report.json, report.md and a self-contained report.html (plots embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from ..._lib.tables import html_table, markdown_table
from . import audit_tables

__all__ = ["CSS", "REAL_HEADS", "VERDICT_MARK", "audit_details", "markdown", "tables", "to_html", "write_all",
           "write_html", "write_json", "write_markdown", "write_plots"]

VERDICT_MARK = {
    "verified": "✅",
    "verified-with-correction": "✅✎",
    "supported": "☑️",
    "supported-with-correction": "☑️✎",
    "reduction verified": "🔗",
    "refuted-as-printed": "⚠️",
    "refuted": "❌",
    "not supported": "❌",
    "inconclusive": "❔",
}


def write_json(report: dict, path: Path) -> None:
    path.write_text(
        json.dumps(report, indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8"
    )


def write_plots(plots: dict, folder: Path) -> None:
    for name, (png, _) in plots.items():
        (folder / name).write_bytes(png)


# ---------------------------------------------------------------------------------------------
# shared content: (heading, rows) tables used by both Markdown and HTML


def _fmt(x, spec=".3g"):
    if x is None:
        return "–"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def _role_tag(c: dict) -> str:
    """' (timing)' / ' (evidence)' for the checks that never decide a verdict."""
    return f" ({c['role']})" if c["role"] in ("timing", "evidence") else ""


def _check_line(c: dict) -> str:
    if c["role"] in ("timing", "evidence"):
        met, unmet = ("within criterion", "outside criterion") if c["role"] == "timing" else (
            "holds", "does not hold")
        state = {None: c["status"].upper()}.get(c["holds"], met if c["holds"] else unmet)
        return f"[{c['role']}, not used for the verdict] {c['name']}: {state} — {c['measured']}"
    state = {
        True: "PASS" if c["role"] == "claim" else "paper's form holds",
        False: "FAIL" if c["role"] == "claim" else "paper's form fails",
        None: c["status"].upper(),
    }[c["holds"]]
    return f"[{c['role']}] {c['name']}: {state} — {c['measured']}"


def tables(report: dict) -> list:
    """[(title, header, rows, note)] in report order."""
    s = report["summary"]
    out = [
        (
            "Summary",
            ("item", "value"),
            [
                ("claims", str(s["claims"])),
                *[(f"verdict: {v}", str(n)) for v, n in s["verdict_counts"].items() if n],
                ("errata confirmed", f"{s['errata_confirmed']} / {s['errata_total']}"),
                ("derivation proofs holding", f"{s['proofs_holding']} / {s['proofs_total']}"),
                (
                    "property-grid points (violations)",
                    f"{_fmt(s['property_points'])} ({_fmt(s['property_violations'])})",
                ),
                (
                    "stress-campaign cases (violations)",
                    f"{_fmt(s.get('stress_cases'))} ({_fmt(s.get('stress_violations'))})",
                ),
            ],
            "",
        )
    ]
    out.append(
        (
            "Claim ledger",
            ("id", "claim", "kind", "verdict", "checks"),
            [
                (
                    c["id"],
                    c["title"],
                    c["kind"],
                    f"{VERDICT_MARK.get(c['verdict'], '')} {c['verdict']}",
                    "; ".join(
                        f"{k['name']}{_role_tag(k)}: "
                        f"{'✓' if k['holds'] else '✗' if k['holds'] is False else k['status']}"
                        for k in c["checks"]
                    ),
                )
                for c in report["claims"]
            ],
            "Verdicts come from the checks' outcomes (see the rules in the JSON schema "
            "description); ✎ marks a claim that holds only in corrected form, ⚠️ a statement false as "
            "printed (its corrected entry follows it), 🔗 a conditional lower bound whose reduction is verified.",
        )
    )
    errata = report["errata"] if isinstance(report["errata"], list) else []
    out.append(
        (
            "Errata",
            ("id", "title", "where", "status", "counterexample re-check"),
            [(e["id"], e["title"], e["where"], e["status"], e["summary"]) for e in errata],
            "E: the paper's; O: ours (claims this package made before, with the counterexample to our old "
            "wording: its \"paper's form\" is that wording).",
        )
    )
    proofs = report["proofs"] if isinstance(report["proofs"], list) else []
    out.append(
        (
            "Derivation proofs (exact, SymPy)",
            ("proof", "paper", "ran at", "holds", "proves", "s"),
            [
                (p["name"], p["paper"], p["size"], "yes" if p["holds"] else "NO",
                 (f"every size ({p.get('basis', '')}; sufficient: {p.get('sufficient_size')})" if p.get("all_sizes")
                  else f"this size only (every size needs {p.get('sufficient_size')})" if p.get("sufficient_size")
                  else "this size only"),
                 _fmt(p["seconds"], ".1f"))
                for p in proofs
            ],
            "Each proof is exact at the size it ran; it proves the identity for every size when that size "
            "covers the one its index counts require (derivations/sufficiency.py, Theorems 1 and 2). "
            "Negative controls hold when the all-size proof rejects the wrong form.",
        )
    )
    out.extend(_measurement_tables(report["measurements"]))
    env = report["environment"]
    versions = env.get("versions", {})
    out.append(
        (
            "Environment",
            ("item", "value"),
            [
                *[(k, str(v)) for k, v in versions.items()],
                *[
                    ("BLAS", f"{b.get('internal_api')} {b.get('version')} ({b.get('num_threads')} threads)")
                    for b in env.get("blas", [])
                ],
                ("CPU", f"{env.get('cpu', {}).get('model')} ({env.get('cpu', {}).get('cores')} cores)"),
                ("GPU", ", ".join(g["name"] for g in env.get("gpu", [])) or "none"),
                ("commit", _commit(env.get("commit", {}))),
                ("sweep engine", report.get("engine", {}).get("runner", "–")),
                (
                    "mode / seed / backend",
                    f"{report['config']['mode']} / {report['config']['seed']} / "
                    f"{report['config']['backend']}",
                ),
                ("total seconds", _fmt(report["timings"].get("total_seconds"), ".1f")),
            ],
            "",
        )
    )
    return out


def _commit(commit: dict) -> str:
    return f"{commit.get('id')}{' (dirty)' if commit.get('dirty') else ''}"


def _measurement_tables(m: dict) -> list:
    out = []
    props = m["properties"]
    if "rows" in props:
        cases = list(dict.fromkeys(r["case"] for r in props["rows"]))
        rows = []
        for case in cases:
            rs = [r for r in props["rows"] if r["case"] == case and r["status"] == "ok"]
            rows.append(
                (
                    case,
                    str(len(rs)),
                    str(sum(1 for r in rs if not r["holds"])),
                    _fmt(max((r["ratio"] for r in rs), default=None)),
                    str(sum(1 for r in props["rows"] if r["case"] == case and r["status"] != "ok")),
                )
            )
        out.append(
            (
                "Property grid: error vs certified bound",
                ("case", "points", "violations", "worst error/bound", "no certified degree"),
                rows,
                "Each point: LoRAProblem.random at (L, R), eps relative to max|grad| or a forced degree.",
            )
        )
    else:
        out.append(("Property grid", ("status", "reason"), [(props.get("status"), props.get("reason"))], ""))
    fr = m["frontier"]
    if "curves" in fr:
        rows = [(c["rule"], c["eps"], *(_fmt(p["t_star"]) for p in c["points"])) for c in fr["curves"]]
        L = [f"2^{p['log2L']}" for p in fr["curves"][0]["points"]]
        out.append(
            ("Phase frontier t* = Γ*/√ln L (cost crossing)", ("d rule", "eps", *L), rows, fr["definition"])
        )
    else:
        out.append(("Phase frontier", ("status", "reason"), [(fr.get("status"), fr.get("reason"))], ""))
    sw = m["sweep"]
    if "rows" in sw:
        xs = sorted({r["x"] for r in sw["rows"]})
        rows = [
            (
                str(L),
                *(
                    _fmt(next(r["rel_error"] for r in sw["rows"] if r["L"] == L and r["x"] == x), ".2e")
                    for x in xs
                ),
            )
            for L in sorted({r["L"] for r in sw["rows"]})
        ]
        out.append(
            (
                f"Measured sweep at fixed rank k = {sw['rank']} (relative max error)",
                ("L \\ x", *(f"{x:g}" for x in xs)),
                rows,
                sw["definition"],
            )
        )
    tm = m["timing"]
    if "rows" in tm:
        out.append(
            (
                "Timing (in-process)",
                ("method", "fitted slope"),
                [(k, _fmt(v, ".2f")) for k, v in tm["slopes"].items()],
                tm["source"],
            )
        )
    bench = m["benchmark"]
    if bench.get("status") == "ok":
        methods = bench["summary"]["methods"]
        rows = [
            (
                name,
                *(
                    ("–",) * 4
                    if s is None
                    else (
                        str(s["largest_L"]),
                        _fmt(s["median_s"], ".3g"),
                        _fmt(s["exponent"], ".2f"),
                        _fmt(s["max_abs_error"], ".1e"),
                    )
                ),
            )
            for name, s in methods.items()
        ]
        rows += [
            (
                f"target: {t['name']}",
                t["target"],
                _fmt(t["value"]),
                {True: "met", False: "NOT met", None: "not measured"}[t["met"]],
                t["note"],
            )
            for t in bench["summary"]["targets"]
        ]
        out.append(
            (
                "Benchmark summary (lora_proofcheck.bench)",
                (
                    "method / target",
                    "largest L / target",
                    "median s / value",
                    "exponent / met",
                    "max|err| / note",
                ),
                rows,
                bench.get("source", "run by this report"),
            )
        )
    else:
        out.append(
            ("Benchmark summary", ("status", "reason"), [(bench.get("status"), bench.get("reason"))], "")
        )
    out.append(_stress_table(m["stress"]))
    out.extend(_audit_tables(m["audit"]))
    out.extend(_peer_tables(m.get("peers", {"status": "not run", "reason": "absent"})))
    return out


REAL_HEADS = "Where real heads sit"


def _audit_tables(audit: dict) -> list:
    if audit.get("status") != "ok":
        return [(REAL_HEADS, ("status", "reason"), [(audit.get("status"), audit.get("reason"))], "")]
    header, rows, note = audit_tables.summary_table(audit["summary"])
    source = f"{audit['source']}; text: {audit['settings']['text']['source']}"
    out = [(REAL_HEADS, header, rows, f"{source}. {note}")]
    if audit["softmax_1_comparison"]:
        out.append((f"{REAL_HEADS}: Softmax_1 switched in",
                    *audit_tables.softmax_1_table(audit["softmax_1_comparison"])))
    out.append((f"{REAL_HEADS}: models", *audit_tables.models_table(audit["models"])))
    return out


def audit_details(audit: dict) -> list:
    """[(heading, lines)] of a recorded audit under its tables: what the paper's model does not cover, the
    gradient on a real head, what Softmax_1 switched in can and cannot show."""
    if audit.get("status") != "ok":
        return []
    out = [(f"What the paper's model does not cover, and how the audit treats it: {m['name']}",
             m["not_covered"]) for m in audit["models"]]
    out += [(audit_tables.gradient_title(g), audit_tables.gradient_lines(g))
            for g in audit["gradient_checks"]]
    if audit["softmax_1_scope"]:
        out.append(("Softmax_1 switched in: what it can and cannot show", [audit["softmax_1_scope"]]))
    return out


def _stress_table(section: dict) -> tuple:
    if section.get("status") != "ok":
        return ("Stress campaign", ("status", "reason"), [(section.get("status"), section.get("reason"))], "")
    s = section["summary"]

    def row(name, f):
        return (name, str(f["cases"]), str(f["checked"]), str(f["declined"]), str(f["uncertified"]),
                str(f["violations"]), _fmt(f["worst_ratio"]))

    rows = [row("all", s)] + [row(name, f) for name, f in s["families"].items()]
    rows += [row(name, f) for name, f in s["axes"].items()]
    note = (f"{section['source']}; seed {s['seed']}, stopped: {s['stopped']}. "
            f"ratio = measured max-abs error / (certified bound + reference allowance); a violation is "
            f"ratio > 1.")
    return (
        "Stress campaign: certificate violations (recorded)",
        ("family / axis", "cases", "checked", "declined", "infinite bound", "violations", "worst ratio"),
        rows,
        note,
    )


PEER_COLUMNS = tuple(f"{method} {mode}" for method in ("taylor", "chebyshev", "favor+", "support-basis")
                     for mode in ("plugin", "model"))


def _peer_tables(section: dict) -> list:
    """The peers section: the winner per instance, and the best error of every method and mode."""
    if section.get("status") != "ok":
        return [("Peers side by side", ("status", "reason"), [(section.get("status"), section.get("reason"))], "")]
    instances = section["summary"]["instances"]
    ok = [i for i in instances if i["status"] == "ok"]
    where = lambda i: (i["family"], str(i["L"]), _fmt(i["R"]), _fmt(i["max_abs_S"]))  # noqa: E731
    winners = []
    for i in ok:
        w = i["winner"]
        won = "none faster than exact" if w is None else (
            f"{w['method']} {w['param']} {w['mode']}: {w['frob_rel']:.2e} at {w['seconds']:.3g} s ({w['speedup']:.3g}x)")
        winners.append((*where(i), _fmt(i["exact_seconds"]), f"{i['float32_floor_frob_rel']:.1e}", won))
    winners += [(i["family"], str(i["L"]), "–", "–", "–", "–", f"{i['status']}: {i['reason']}")
                for i in instances if i["status"] != "ok"]
    best = []
    for i in ok:
        cells = []
        for name in PEER_COLUMNS:
            b = i["best_per_method"].get(name)
            cells.append("–" if b is None else f"{b['frob_rel']:.1e} ({b['param']}, {b['seconds']:.2g} s)")
        best.append((*where(i), *cells))
    note = (f"{section.get('source', '')}. Relative Frobenius error of all LoRA factors against the exact float64 "
            "gradient; the float32 exact path's error is the noise floor. plugin = the exact gradient formulas "
            "at F~ (the paper's chain); model = the derivative of the approximate loss (autograd through the "
            "approximation). Winner: lowest error among the rows faster than the exact float64 path.")
    return [
        ("Peers side by side: winner per instance",
         ("family", "L", "R", "max|S|", "exact s", "float32 floor", "winner (method param mode: error at time)"),
         winners, note),
        ("Peers side by side: best error per method and mode (parameter, seconds)",
         ("family", "L", "R", "max|S|", *PEER_COLUMNS), best, "Best over the degrees / feature counts measured."),
    ]


# ---------------------------------------------------------------------------------------------
# Markdown


def markdown(report: dict) -> str:
    p = report["paper"]
    parts = [
        f"# Verification report: *{p['title']}*",
        f"{p['authors']} — arXiv {p['arxiv']}, {p['venue']}. Generated by lora-proofcheck "
        f"{report['tool']['version']} ({report['config']['mode']} mode, seed {report['config']['seed']}, "
        f"backend {report['config']['backend']}) on {report['created']}.",
    ]
    for title, header, rows, note in tables(report):
        parts.append(f"## {title}")
        if note:
            parts.append(f"_{note}_")
        parts.append(markdown_table(header, rows))
        if title == "Claim ledger":
            parts.append(_md_claim_details(report["claims"]))
        if title == "Errata":
            parts.append(_md_errata_details(report["errata"] if isinstance(report["errata"], list) else []))
        if title == f"{REAL_HEADS}: models":  # the last of the audit's tables
            for heading, lines in audit_details(report["measurements"]["audit"]):
                parts.append(f"**{heading}**\n\n" + "\n".join(f"- {line}" for line in lines))
    parts.append("## Plots")
    for plot in report["plots"]:
        parts.append(f"![{plot['name']}]({plot['file']})\n\n_{plot['caption']}_")
    return "\n\n".join(parts) + "\n"


def _md_claim_details(claims) -> str:
    out = []
    for c in claims:
        lines = [f"**{c['id']} — {c['title']}** ({c['kind']}; verdict: {c['verdict']}). {c['statement']}", ""]
        lines.extend(f"- {_check_line(k)}" for k in c["checks"])
        if c["notes"]:
            lines.append(f"- note: {c['notes']}")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def _md_errata_details(errata) -> str:
    out = []
    for e in errata:
        ce = e.get("counterexample", {})
        out.append(
            f"**{e['id']} — {e['title']}** ({e['where']}; {e['status']})\n\n"
            f"- paper: {e['paper_form']}\n- correction: {e['correction']}\n"
            f"- counterexample: `{ce.get('file')}` (search: {ce.get('search', {}).get('criterion', '–')})\n"
            + "\n".join(f"- {_check_line(o)}" for o in e["outcomes"])
        )
    return "\n\n".join(out)


def write_markdown(report: dict, path: Path) -> None:
    path.write_text(markdown(report), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# HTML (self-contained)

CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}
td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}th{background:#f2f2f2}
figure{margin:1em 0}img{max-width:100%}.note{color:#555;font-style:italic}
details{margin:0.3em 0}code{background:#f6f6f6}"""


def _h(x) -> str:
    return html.escape(str(x))


def to_html(report: dict, plots: dict) -> str:
    p = report["paper"]
    parts = [
        f"<h1>Verification report: <i>{_h(p['title'])}</i></h1>",
        f"<p>{_h(p['authors'])} — arXiv {_h(p['arxiv'])}, {_h(p['venue'])}. lora-proofcheck "
        f"{_h(report['tool']['version'])}, {_h(report['config']['mode'])} mode, seed "
        f"{_h(report['config']['seed'])}, backend {_h(report['config']['backend'])}, "
        f"{_h(report['created'])}.</p>",
    ]
    for title, header, rows, note in tables(report):
        parts.append(f"<h2>{_h(title)}</h2>")
        if note:
            parts.append(f'<p class="note">{_h(note)}</p>')
        parts.append(html_table(header, rows))
        if title == "Claim ledger":
            for c in report["claims"]:
                items = "".join(f"<li>{_h(_check_line(k))}</li>" for k in c["checks"])
                parts.append(
                    f"<details><summary>{_h(c['id'])} — {_h(c['title'])}: {_h(c['verdict'])}</summary>"
                    f"<p>{_h(c['statement'])}</p><ul>{items}</ul>"
                    + (f'<p class="note">{_h(c["notes"])}</p>' if c["notes"] else "")
                    + "</details>"
                )
        if title == "Errata":
            for e in report["errata"] if isinstance(report["errata"], list) else []:
                items = "".join(f"<li>{_h(_check_line(o))}</li>" for o in e["outcomes"])
                parts.append(
                    f"<details><summary>{_h(e['id'])} — {_h(e['title'])}: {_h(e['status'])}</summary>"
                    f"<p><b>paper:</b> {_h(e['paper_form'])}<br><b>correction:</b> {_h(e['correction'])}"
                    f"<br><b>counterexample:</b> <code>{_h(e['counterexample'].get('file'))}</code></p>"
                    f"<ul>{items}</ul></details>"
                )
        if title == f"{REAL_HEADS}: models":
            for heading, lines in audit_details(report["measurements"]["audit"]):
                items = "".join(f"<li>{_h(line)}</li>" for line in lines)
                parts.append(f"<details><summary>{_h(heading)}</summary><ul>{items}</ul></details>")
    parts.append("<h2>Plots</h2>")
    for plot in report["plots"]:
        data = base64.b64encode(plots[plot["name"]][0]).decode("ascii")
        parts.append(
            f'<figure data-plot="{_h(plot["name"])}"><img alt="{_h(plot["name"])}" '
            f'src="data:image/png;base64,{data}"><figcaption>{_h(plot["caption"])}</figcaption></figure>'
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>lora-proofcheck report</title>'
        f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def write_html(report: dict, plots: dict, path: Path) -> None:
    path.write_text(to_html(report, plots), encoding="utf-8")


def write_all(report: dict, plots: dict, folder: Path) -> list[str]:
    """Every file of a report into `folder` (which must exist); returns the file names."""
    write_plots(plots, folder)
    write_json(report, folder / "report.json")
    write_markdown(report, folder / "report.md")
    write_html(report, plots, folder / "report.html")
    return sorted(["report.json", "report.md", "report.html", *plots])
