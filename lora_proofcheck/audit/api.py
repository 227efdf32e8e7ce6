"""`audit_model(...)`: where the heads of real pretrained transformers sit against the paper's threshold.

For every model, attention variant, length L, layer and head: the paper's norms, the logit bound R
the certificate uses, the true max |S_ij|, the row half-range, what the certified approximate path
would need (degree, rank, rank / L, cost ratio) per relative tolerance, and the regime label
(`figures`); per model what the paper's single-head model does not cover and how the audit treats
it (`coverage_notes`); for one real head the LoRA gradient problem itself (`gradient`). With `out`
the audit is written atomically (`report.output.publish`) as audit.json, audit.md and audit.html
(`output`).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from .._lib.validate import check_int, check_real
from ..errors import InvalidInputError, InvalidTypeError
from ..report.output.publish import write_atomically
from . import figures, loaders, output
from .figures import ADAPT, EXACT_DEGREE_RADIUS, FRONTIER_RTOL, RTOLS
from .gradient import gradient_check, problem_from_capture
from .inputs import check_adapt, check_attentions, check_lengths, check_models, check_rtols, read_text

__all__ = [
    "DEFAULT_ATTENTION",
    "DEFAULT_LENGTHS",
    "DEFAULT_MODEL",
    "DEFINITIONS",
    "SCHEMA_VERSION",
    "SOFTMAX_1_SCOPE",
    "audit_model",
    "coverage_notes",
]

SCHEMA_VERSION = "1.0"
DEFAULT_MODEL = "minilm"
DEFAULT_LENGTHS = (128, 512)
DEFAULT_ATTENTION = ("softmax",)
#: L values of the frontier curve in the plot (and the JSON)
FRONTIER_GRID = tuple(2**e for e in range(4, 21))
VERSION_PACKAGES = (
    "lora-proofcheck",
    "numpy",
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "gguf",
    "accelerate",
)

SOFTMAX_1_SCOPE = (
    "attention softmax_1: the model's softmax is replaced by Softmax_1, e^S / (1 + sum e^S) (the paper's "
    "App. G "
    "outlier-free attention, OutEffHop), in every layer at inference, with the pretrained softmax-trained "
    "weights. What it can show: how the switch changes the hidden states, and so the heads' norms and "
    "logits, of a model that was trained with softmax (layer 0 reads the same X and must give the same "
    "logits: a check of the switch). What it cannot show: what the norms of a model TRAINED with "
    "Softmax_1 would be; the App. G claim is about such models, and no pretrained outlier-free model is "
    "available here. The logit bound and the certified path's needs depend on the logits only, not on the "
    "normaliser: Softmax_1 can help the fast path only through the norms that training produces."
)


def coverage_notes(desc: dict, position_inside: bool, quantized: bool, attentions=("softmax",)) -> list:
    """One line per feature of the model outside the paper's single-head model, and its treatment."""
    notes = [
        "single head: the paper's model is one attention head; each head is audited on its own, on "
        "the real X its layer reads. Output projection, MLPs and the residual stream are outside it "
        "and only shape X."
    ]
    notes.append(
        f"scaling: beta = the model's own 1/sqrt(d_h) = {1 / math.sqrt(desc['head_dim']):.4g} "
        "(the paper takes beta = 1; every figure uses the model's beta)."
    )
    if desc["biases"]:
        notes.append(
            "biases: Q/K/V biases are folded into the paper's bias-free model exactly through "
            "X' = [X, 1], W' = [W; b]; the norms are those of X'W'."
        )
    else:
        notes.append("biases: none in the Q/K/V projections.")
    if desc["causal"]:
        notes.append(
            "causal mask: the paper's model is bidirectional. max |S_ij| and the row half-ranges are "
            "taken over the entries the softmax sees (read off the model's own attention mask); the "
            "logit bound R bounds every pair, so R >= max |S_ij| still; certificate and costs are "
            "those of the unmasked problem."
        )
    else:
        notes.append("mask: bidirectional (every query sees every key), as in the paper.")
    if desc["n_kv_heads"] and desc["n_kv_heads"] != desc["n_heads"]:
        rep = desc["n_heads"] // desc["n_kv_heads"]
        notes.append(
            f"GQA: {desc['n_heads']} query heads share {desc['n_kv_heads']} KV heads; query head h is "
            f"audited with the KV head it reads, h // {rep} (transformers' repeat_kv order): per "
            "head this is the paper's model with a K shared by several heads."
        )
    if position_inside:
        notes.append(
            "RoPE (a position transform inside attention): the softmax sees rotated q, k, which no "
            "fixed W_Q, W_K reproduces, outside the paper's model. The audit takes q, k after the "
            "rotation (captured at the attention kernel: the logits the softmax sees); norm_XW_Q, "
            "norm_XW_K are the paper's norms before the rotation, norm_q_max, norm_k_max after it; "
            "the rotation keeps row norms, so the Cauchy-Schwarz R is the same either way. The "
            "gradient problem cannot be built from X and W for such heads."
        )
    elif desc.get("position") == "absolute":
        notes.append(
            "positions: absolute position embeddings are added to the input, so X contains them; "
            "attention itself is the paper's."
        )
    norms = ", ".join(desc["norms"]) or "none found"
    notes.append(
        f"norms ({norms}): X is the hidden state the Q/K/V projections read, after every norm and its "
        "learned scale; norms only shape X and are outside the single-head model."
    )
    if "softmax_1" in attentions:
        notes.append(
            "normaliser: the paper's model is softmax; the softmax_1 runs replace it by e^S / (1 + sum e^S) "
            "(LoRAProblem normalizer_offset = 1) in every layer of the softmax-trained model; what that can "
            "and "
            "cannot show: softmax_1_scope."
        )
    if quantized:
        notes.append(
            "weights: GGUF quantised weights dequantised to float32 by transformers' GGUF loader; the "
            "audit measures the dequantised model."
        )
    return notes


# ----------------------------------------------------------------------------------------------
# the audit


def audit_model(
    model=DEFAULT_MODEL,
    *,
    text=None,
    lengths=DEFAULT_LENGTHS,
    attention=DEFAULT_ATTENTION,
    out=None,
    rtols=RTOLS,
    adapt: str = ADAPT,
    dtype: str = "float32",
    gradient: bool = True,
    gradient_head=None,
    exact_degree_radius: float = EXACT_DEGREE_RADIUS,
    progress: bool = True,
    stream=None,
) -> dict:
    """Audit every layer and head of one or more real pretrained models on real text.

    Parameters
    ----------
    model : str, path, `loaders.LoadedModel`, or a list of them
        "minilm" (default), "smollm2", a Hugging Face model folder or a .gguf file.
    text : path, optional
        A UTF-8 text file whose first L tokens are used for each L (None: the English text shipped
        with the package).
    lengths : int or sequence of int
        Sequence lengths L (default 128 and 512).
    attention : str or sequence of str
        "softmax" (the model's own) and/or "softmax_1" (every layer switched to e^S / (1 + sum e^S);
        see SOFTMAX_1_SCOPE for what that can and cannot show).
    out : path, optional
        A directory to write audit.json, audit.md and audit.html into, atomically (created, or
        replaced if it holds a previous audit).
    rtols : sequence of float
        Relative tolerances the certified path is planned for (default 1e-2, 1e-4).
    adapt : str
        LoRA-adapted modules the cost ratio assumes (default "QV").
    dtype : {"float32", "float64"}
        Precision of the forward pass (float32: the models' own).
    gradient : bool
        Also build the paper's LoRA problem for one real head and check its gradient.
    gradient_head : (layer, head), optional
        That head; None: the head with the smallest logit bound at the smallest L of the first model
        whose attention is the paper's (no RoPE, not causal).
    exact_degree_radius : float
        Logit bounds up to which the exact certified degree is searched (above: a proved lower bound;
        `figures.certified_requirement`).
    progress : bool
        A tqdm progress bar on `stream` (default stderr).

    Returns
    -------
    dict
        The audit (the content of audit.json: schema `report/output/audit.schema.json`).

    Raises
    ------
    InvalidInputError, InvalidTypeError
        For bad paths, unreadable models, bad lengths, ..., naming the argument and its flag.

    Examples
    --------
    >>> import lora_proofcheck as lp
    >>> audit = lp.audit_model("minilm", lengths=128, progress=False)   # doctest: +SKIP
    >>> len(audit["heads"]), audit["summary"][0]["regimes"]              # doctest: +SKIP
    (72, {'below': 0, 'near': 5, 'above': 67})
    """
    t_start = time.perf_counter()
    models = check_models(model)
    content, text_info = read_text(text)
    lengths = check_lengths(lengths)
    attentions = check_attentions(attention)
    rtols = check_rtols(rtols)
    adapt = check_adapt(adapt)
    if dtype not in loaders.DTYPES:
        raise InvalidInputError(f"dtype (--dtype) must be one of {loaders.DTYPES}, got {dtype!r}")
    exact_degree_radius = check_real("exact_degree_radius (--exact-degree-radius)", exact_degree_radius)
    if gradient_head is not None:
        if not isinstance(gradient_head, (list, tuple)) or len(gradient_head) != 2:
            raise InvalidInputError(
                f"gradient_head (--gradient-head) must be (layer, head), got {gradient_head!r}"
            )
        gradient_head = tuple(check_int("gradient_head (--gradient-head)", v, 0) for v in gradient_head)
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise InvalidTypeError(f"out (--out) must be a path, got {type(out).__name__}")
    # fail fast on bad paths and hashes; an already loaded model is used as is
    sources = [m if isinstance(m, loaders.LoadedModel) else loaders.resolve_model(m) for m in models]
    settings = {
        "lengths": lengths,
        "attentions": attentions,
        "rtols": rtols,
        "adapt": adapt,
        "dtype": dtype,
        "exact_degree_radius": exact_degree_radius,
        "frontier_rtol": FRONTIER_RTOL,
        "text": text_info,
    }

    def run() -> dict:
        audit = _run(sources, content, settings, gradient, gradient_head, progress, stream)
        audit["timings"]["total_seconds"] = time.perf_counter() - t_start
        return audit

    if out is None:
        return run()

    def write(folder):
        audit = run()
        output.write_files(audit, folder)
        return audit

    return write_atomically(Path(out), write, name="out (--out)", marker="audit.json")


def _versions() -> dict:
    versions = {"python": sys.version.split()[0]}
    for name in VERSION_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _summary(model: str, attention: str, L: int, rows: list, frontier: float) -> dict:
    R = np.array([r["logit_bound"] for r in rows])
    M = np.array([r["max_abs_logit"] for r in rows])
    G = np.array([r["Gamma_over_sqrt_log_L"] for r in rows])
    first = [r["needs"][0] for r in rows]
    degrees = np.array([n["degree"] if n["degree"] is not None else n["degree_lower_bound"] for n in first])

    def count(key):
        return {k: sum(1 for r in rows if r[key] == k) for k in figures.REGIMES}

    return {
        "model": model,
        "attention": attention,
        "L": L,
        "heads": len(rows),
        "log_L": math.log(L),
        "sqrt_log_L": math.sqrt(math.log(L)),
        "frontier_R": frontier,
        "logit_bound_median": float(np.median(R)),
        "logit_bound_max": float(R.max()),
        "logit_bound_min": float(R.min()),
        "max_abs_logit_median": float(np.median(M)),
        "max_abs_logit_max": float(M.max()),
        "heads_max_abs_logit_le_log_L": int((M <= math.log(L)).sum()),
        "heads_logit_bound_le_log_L": int((R <= math.log(L)).sum()),
        "Gamma_over_sqrt_log_L_median": float(np.median(G)),
        "bound_over_true_median": float(np.median(R / M)),
        "rtol0": first[0]["rtol"],
        "degree_rtol0_median": float(np.median(degrees)),
        "degree_rtol0_min": int(degrees.min()),
        "regimes": count("regime"),
        "regimes_true": count("regime_true"),
        "certifiable_heads": sum(1 for n in first if n["certifiable"]),
    }


def _per_layer(rows: list) -> list:
    out = []
    for layer in sorted({r["layer"] for r in rows}):
        R = np.array([r["logit_bound"] for r in rows if r["layer"] == layer])
        M = np.array([r["max_abs_logit"] for r in rows if r["layer"] == layer])
        out.append(
            {
                "layer": layer,
                "logit_bound_median": float(np.median(R)),
                "logit_bound_max": float(R.max()),
                "max_abs_logit_median": float(np.median(M)),
            }
        )
    return out


def _softmax_1_comparison(heads: list, models: list, lengths: list) -> list:
    """Per model and L: the logit bounds with Softmax_1 switched in against the model's own, per layer.
    Layer 0 reads the same X under both (the embeddings), so its bounds must agree to rounding."""
    out = []
    key = lambda h: (h["layer"], h["head"])  # noqa: E731
    for model in models:
        for L in lengths:
            base = {key(h): h for h in heads if (h["model"], h["attention"], h["L"]) == (model, "softmax", L)}
            alt = {
                key(h): h for h in heads if (h["model"], h["attention"], h["L"]) == (model, "softmax_1", L)
            }
            if not base or set(base) != set(alt):
                continue
            layers = sorted({k[0] for k in base})
            per_layer = []
            for layer in layers:
                a = np.array([base[k]["logit_bound"] for k in sorted(base) if k[0] == layer])
                b = np.array([alt[k]["logit_bound"] for k in sorted(alt) if k[0] == layer])
                per_layer.append(
                    {
                        "layer": layer,
                        "logit_bound_median_softmax": float(np.median(a)),
                        "logit_bound_median_softmax_1": float(np.median(b)),
                        "median_ratio": float(np.median(b / a)),
                    }
                )
            first = layers[0]
            rel = max(
                abs(alt[k]["logit_bound"] - base[k]["logit_bound"]) / base[k]["logit_bound"]
                for k in base
                if k[0] == first
            )
            ratio = np.array([alt[k]["logit_bound"] / base[k]["logit_bound"] for k in base])
            out.append(
                {
                    "model": model,
                    "L": L,
                    "layer0_max_rel_diff": float(rel),
                    "median_ratio_all_heads": float(np.median(ratio)),
                    "heads_lower_with_softmax_1": int((ratio < 1.0).sum()),
                    "heads": len(ratio),
                    "per_layer": per_layer,
                }
            )
    return out


def _run(sources, content, settings, gradient_on, gradient_head, progress, stream) -> dict:
    lengths, attentions, adapt = settings["lengths"], settings["attentions"], settings["adapt"]
    timings, model_records, heads, summaries, frontiers, checks = {}, [], [], [], {}, []
    bar = tqdm(
        total=0,
        disable=not progress,
        file=stream if stream is not None else sys.stderr,
        unit="head",
        dynamic_ncols=True,
        leave=True,
    )
    try:
        for entry in sources:
            t0 = time.perf_counter()
            lm = (
                entry
                if isinstance(entry, loaders.LoadedModel)
                else loaders.load_model(entry, dtype=settings["dtype"])
            )
            src = lm.source
            timings[f"{src.name}:load_seconds"] = time.perf_counter() - t0
            desc = lm.describe()
            ids = {L: lm.tokenize(content, L) for L in lengths}  # every L checked before any forward pass
            n_heads = sum(
                lm.attention_modules[i][1][0].out_features // desc["head_dim"] for i in range(lm.n_layers)
            )
            bar.total += n_heads * len(lengths) * len(attentions)
            bar.refresh()
            per_L, position_inside, sources_of_gradient = [], False, {}
            for attention in attentions:
                for L in lengths:
                    tag = f"{src.name}:{attention}:L={L}"
                    bar.set_description(f"{src.name} {attention} L={L}: forward")
                    t0 = time.perf_counter()
                    cap = lm.capture(ids[L], attention=attention)
                    timings[f"{tag}:forward_seconds"] = time.perf_counter() - t0
                    position_inside = position_inside or cap.position_inside
                    d_h = cap.layers[0].q.shape[-1]
                    if (L, d_h) not in frontiers:
                        frontiers[(L, d_h)] = figures.certifiable_frontier(
                            L, d_h, rtol=FRONTIER_RTOL, adapt=adapt
                        )
                    bar.set_description(f"{src.name} {attention} L={L}: heads")
                    t0 = time.perf_counter()
                    with threadpool_limits(1, user_api="blas"):  # small GEMMs: more threads only contend
                        rows = _heads_of(cap, src.name, settings, frontiers[(L, d_h)], bar)
                    timings[f"{tag}:heads_seconds"] = time.perf_counter() - t0
                    heads.extend(rows)
                    summaries.append(_summary(src.name, attention, L, rows, frontiers[(L, d_h)]))
                    per_L.append(
                        {
                            "attention": attention,
                            "L": L,
                            "tokens": len(ids[L]),
                            "sanity": cap.sanity,
                            "per_layer": _per_layer(rows),
                        }
                    )
                    if L == lengths[0]:
                        sources_of_gradient[attention] = (cap, rows)
            paper_attention = not position_inside and not desc["causal"]
            if gradient_on and not checks and paper_attention:
                for attention, (cap, rows) in sources_of_gradient.items():
                    bar.set_description(f"{src.name} {attention}: gradient on a real head")
                    t0 = time.perf_counter()
                    with threadpool_limits(1, user_api="blas"):
                        checks.append(_gradient(lm, cap, rows, gradient_head))
                    timings[f"{src.name}:{attention}:gradient_seconds"] = time.perf_counter() - t0
            model_records.append(
                {
                    "name": src.name,
                    "folder": str(src.folder),
                    "gguf_file": src.gguf_file,
                    "weights_file": None if src.weights is None else str(src.weights),
                    "sha256": src.sha256,
                    "sha256_verified": src.verified,
                    "package": src.requirement,
                    **desc,
                    "position_inside_attention": position_inside,
                    "paper_attention": paper_attention,
                    "per_L": per_L,
                    "not_covered": coverage_notes(
                        desc, position_inside, src.gguf_file is not None, attentions
                    ),
                }
            )
            del sources_of_gradient
    finally:
        bar.close()
    if gradient_on and not checks:
        checks = [
            {
                "skipped": "no audited model has the paper's attention (all use RoPE or a causal mask); "
                "the LoRA problem cannot be built from their X and W"
            }
        ]
    names = [m["name"] for m in model_records]
    d_values = sorted({d for _, d in frontiers})
    curve = [
        {"L": L, "head_dim": d, "R": figures.certifiable_frontier(L, d, rtol=FRONTIER_RTOL, adapt=adapt)}
        for d in d_values
        for L in FRONTIER_GRID
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "lora_proofcheck.audit",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tool": {"name": "lora-proofcheck", "versions": _versions()},
        "settings": {"models": names, **settings},
        "definitions": DEFINITIONS,
        "softmax_1_scope": SOFTMAX_1_SCOPE if "softmax_1" in attentions else None,
        "models": model_records,
        "summary": summaries,
        "softmax_1_comparison": _softmax_1_comparison(heads, names, lengths),
        "frontier": {
            "rtol": FRONTIER_RTOL,
            "adapt": adapt,
            "at_lengths": [{"L": L, "head_dim": d, "R": R} for (L, d), R in sorted(frontiers.items())],
            "curve": curve,
        },
        "heads": heads,
        "gradient_checks": checks,
        "timings": timings,
    }


def _heads_of(cap, name, settings, frontier, bar) -> list:
    rows = []
    for lc in cap.layers:
        for h in range(lc.n_heads):
            kv = lc.kv_head(h)
            f = figures.head_figures(
                lc.q[h],
                lc.k[kv],
                scaling=lc.scaling,
                visible=lc.visible,
                q_proj=lc.q_proj[h],
                k_proj=lc.k_proj[kv],
                rtols=tuple(settings["rtols"]),
                adapt=settings["adapt"],
                frontier=frontier,
                exact_degree_radius=settings["exact_degree_radius"],
            )
            rows.append(
                {
                    "model": name,
                    "attention": cap.attention,
                    "L": cap.L,
                    "layer": lc.layer,
                    "head": h,
                    "kv_head": kv,
                    **f,
                }
            )
            bar.update(1)
    return rows


def _gradient(lm, cap, rows, gradient_head) -> dict:
    name = lm.source.name
    if gradient_head is None:
        best = min(rows, key=lambda r: r["logit_bound"])
        layer, head = best["layer"], best["head"]
        why = "the head with the smallest logit bound at this L (the most favourable one)"
    else:
        layer, head = gradient_head
        why = "chosen by gradient_head (--gradient-head)"
        if layer >= len(cap.layers) or head >= cap.layers[layer].n_heads:
            raise InvalidInputError(
                f"gradient_head (--gradient-head) ({layer}, {head}) is outside model {name!r} "
                f"({len(cap.layers)} layers x {cap.layers[0].n_heads} heads)"
            )
    problem, info = problem_from_capture(lm, cap, layer, head)
    return {
        "model": name,
        "attention": cap.attention,
        "L": cap.L,
        "layer": layer,
        "head": head,
        "why": why,
        "problem": info,
        "q_rel_diff_vs_captured": info["q_rel_diff_vs_captured"],
        **gradient_check(problem),
    }


DEFINITIONS = {
    "attention": "the attention the model ran with: softmax (its own) or softmax_1 (switched in at "
    "inference; "
    "see softmax_1_scope)",
    "norm_XW_Q": "||X'W'_Q||_max: entrywise max of the head's query projection, bias included (X' = [X, 1], "
    "W' = [W; b]); before RoPE where the model has it (the paper's norm)",
    "norm_XW_K": "||X'W'_K||_max, likewise (the KV head this query head reads)",
    "Gamma": "max(norm_XW_Q, norm_XW_K): the paper's Gamma (Thm 3.1); Gamma_over_sqrt_log_L compares it with "
    "the threshold sqrt(log L)",
    "norm_q_max": "entrywise max of q as the softmax sees it (after RoPE; equal to norm_XW_Q without RoPE)",
    "logit_bound": "R: the logit bound the certificate uses, gradients.planner.logit_bound "
    "(certification.certificate.logit_enclosure: Cauchy-Schwarz beta max_i ||q_i|| max_j ||k_j|| plus "
    "rounding) on a LoRAProblem whose logits are the head's (figures.head_problem)",
    "max_abs_logit": "the true max |S_ij|, S = beta q k^T formed in float64 from the captured q, k, over the "
    "entries the softmax sees",
    "row_half_range_max": "max over rows i of (max_j S_ij - min_j S_ij)/2 (visible j); row_half_range_median "
    "its median: what a shift-invariant (row-centred) bound could reach",
    "needs": "per rtol: the certified path's degree g (smallest certified relative error <= rtol of exp on "
    "[-R, R], certification.polynomial.min_degree; None above exact_degree_radius, then degree_lower_bound, "
    "a proved lower bound (certification.polynomial.degree_lower_bound), is used), rank C(d_h + g, g), "
    "rank / L, cost ratio (low-rank over exact flops, package cost model at d = d_h, adapt), certifiable "
    "(cost ratio < 1)",
    "frontier_R": "R*(L): the largest logit bound the certified path (rtol 1e-2) handles more cheaply than "
    "the "
    "exact path at this L and head dimension",
    "regime": figures.REGIME_DEFINITION,
    "bound_over_true": "logit_bound / max_abs_logit: the slack of the certificate's logit bound",
}
