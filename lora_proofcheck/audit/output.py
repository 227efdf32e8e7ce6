"""The audit's files: audit.json (versioned schema `report/output/audit.schema.json`), audit.md, a
self-contained audit.html and its PNG figures. `api.audit_model` writes them into a folder published
atomically (`report.output.publish.write_atomically`); the tables, figures and JSON writer are the
report's own, so `lora-proofcheck report --audit FILE.json` shows the same numbers the same way.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from .._lib.jsonable import jsonable
from .._lib.tables import html_table, markdown_table
from ..report.output import audit_tables
from ..report.output.plots import AUDIT_PLOTS, heads_figure, layers_figure
from ..report.output.schema import validate_audit
from ..report.output.writers import CSS, write_json

__all__ = [
    "AUDIT_FILES",
    "AUDIT_PLOTS",
    "markdown",
    "plots",
    "sections",
    "to_html",
    "validate",
    "write_files",
]

AUDIT_FILES = ("audit.json", "audit.md", "audit.html")


def validate(audit: dict) -> None:
    """Raise jsonschema.ValidationError when `audit`, as written, does not follow the schema."""
    validate_audit(jsonable(audit))


def plots(audit: dict) -> dict:
    """{file name: PNG bytes} of AUDIT_PLOTS."""
    return {
        "audit_heads.png": heads_figure(audit["heads"], audit["frontier"]["curve"]),
        "audit_layers.png": layers_figure(audit["models"]),
    }


def _intro(audit: dict) -> str:
    st = audit["settings"]
    return (
        f"lora-proofcheck {audit['tool']['versions'].get('lora-proofcheck', '?')}, audit schema "
        f"{audit['schema_version']}, {audit['created']}. Models: {', '.join(st['models'])}; attention: "
        f"{', '.join(st['attentions'])}; L = {', '.join(map(str, st['lengths']))}; text: "
        f"{st['text']['source']} "
        f"(sha256 {st['text']['sha256'][:16]}…); rtol {', '.join(f'{t:g}' for t in st['rtols'])}; cost ratio "
        "for "
        f"LoRA on {st['adapt']}; forward pass in {st['dtype']}; exact degree search up to R = "
        f"{st['exact_degree_radius']:g}."
    )


def sections(audit: dict) -> list:
    """[(title, kind, content, note)] in order: kind "table" (header, rows), "plots" (names), "lines"."""
    out = [
        (
            "Where the heads sit",
            "table",
            audit_tables.summary_table(audit["summary"])[:2],
            audit_tables.summary_table(audit["summary"])[2],
        ),
        ("Figures", "plots", list(AUDIT_PLOTS), ""),
    ]
    if audit.get("softmax_1_scope"):
        header, rows, note = audit_tables.softmax_1_table(audit["softmax_1_comparison"])
        out.append(("Softmax_1 switched in", "lines", [audit["softmax_1_scope"]], ""))
        out.append(("Softmax_1 against softmax, per model and L", "table", (header, rows), note))
    header, rows, note = audit_tables.models_table(audit["models"])
    out.append(("Models", "table", (header, rows), note))
    for m in audit["models"]:
        out.append(
            (
                f"What the paper's model does not cover, and how the audit treats it: {m['name']}",
                "lines",
                m["not_covered"],
                "",
            )
        )
    for g in audit["gradient_checks"]:
        out.append((audit_tables.gradient_title(g), "lines", audit_tables.gradient_lines(g), ""))
    header, rows, note = audit_tables.heads_table(audit["heads"], audit["settings"]["rtols"])
    out.append(("Every head", "table", (header, rows), note))
    out.append(("Definitions", "lines", [f"{k}: {v}" for k, v in audit["definitions"].items()], ""))
    return out


def markdown(audit: dict) -> str:
    parts = ["# Where real attention heads sit: per-head audit", "", _intro(audit), ""]
    for title, kind, content, note in sections(audit):
        parts += [f"## {title}", ""]
        if note:
            parts += [f"*{note}*", ""]
        if kind == "table":
            parts += [markdown_table(*content), ""]
        elif kind == "plots":
            parts += [f"![{name}]({name})\n\n*{AUDIT_PLOTS[name]}*\n" for name in content]
        else:
            parts += [f"- {line}" for line in content] + [""]
    return "\n".join(parts)


def to_html(audit: dict, pngs: dict) -> str:
    h = html.escape
    parts = ["<h1>Where real attention heads sit: per-head audit</h1>", f"<p>{h(_intro(audit))}</p>"]
    for title, kind, content, note in sections(audit):
        parts.append(f"<h2>{h(title)}</h2>")
        if note:
            parts.append(f'<p class="note">{h(note)}</p>')
        if kind == "table" and title == "Every head":
            parts.append(
                f"<details><summary>{len(content[1])} rows</summary>{html_table(*content)}</details>"
            )
        elif kind == "table":
            parts.append(html_table(*content))
        elif kind == "plots":
            for name in content:
                data = base64.b64encode(pngs[name]).decode("ascii")
                parts.append(
                    f'<figure data-plot="{h(name)}"><img alt="{h(name)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{h(AUDIT_PLOTS[name])}</figcaption></figure>"
                )
        else:
            parts.append("<ul>" + "".join(f"<li>{h(line)}</li>" for line in content) + "</ul>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>lora-proofcheck audit</title>'
        f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def write_files(audit: dict, folder: Path) -> list:
    """Every file of an audit into `folder` (which must exist); returns the file names."""
    folder = Path(folder)
    pngs = plots(audit)
    for name, data in pngs.items():
        (folder / name).write_bytes(data)
    write_json(jsonable(audit), folder / "audit.json")
    (folder / "audit.md").write_text(markdown(audit), encoding="utf-8")
    (folder / "audit.html").write_text(to_html(audit, pngs), encoding="utf-8")
    return sorted([*AUDIT_FILES, *pngs])
