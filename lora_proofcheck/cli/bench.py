"""`lora-proofcheck bench`: exact (dense, blocked) vs approximate (eps, rtol, forced degrees) vs PyTorch autograd,
L = 2^10..2^17, the planner against the measurements and the targets table (`--targets`);
`bench --peers`: the peer approximations in both gradient modes, error against time and rank.

The machinery lives in `lora_proofcheck.benchmarks`; this module is the command line: flags,
a table on stdout, JSON (`--out`) and a log-log plot (`--plot`). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
from pathlib import Path

from .._lib.atomic import atomic_write_text
from .._lib.tables import render_table
from ..audit import real_head_problem
from ..benchmarks import BenchConfig, run_benchmark, summarize, tightness
from ..benchmarks.peers import FAMILIES, PeersConfig, run_peers, summarize_peers
from ..benchmarks.plot import plot, plot_peers
from ..benchmarks.presets import PEERS_PRESETS, PRESETS
from ..benchmarks.worker import TORCH, rtol_name
from ..errors import InvalidInputError
from .arguments import positive_float, positive_int, ranged

__all__ = ["REAL_HEAD", "add_commands", "config_from_args", "format_peer_row", "format_peers_summary",
           "format_summary", "format_table", "peers_config_from_args", "real_head"]

#: flags of the path benchmark that `--peers` does not take (dest -> flag)
PATH_ONLY = {"L_min": "--L-min", "L_max": "--L-max", "eps": "--eps", "rtol": "--rtol", "degrees": "--degrees",
             "methods": "--methods", "max_seconds": "--max-seconds", "budget_seconds": "--budget-seconds",
             "max_memory_gb": "--max-memory-gb", "torch_max_L": "--torch-max-L",
             "contraction_degrees": "--contraction-degrees"}
PEERS_ONLY = {"logit_bounds": "--logit-bounds", "families": "--families"}
DEFAULT_EPS = (1e-3, 1e-6)
DEFAULT_RTOL = (1e-3,)
#: the real head of `bench --peers`: the audit's gradient head (MiniLM, the head with the smallest R at L = 128)
REAL_HEAD = {"model": "minilm", "layer": 0, "head": 7}


def real_head(L: int, seed: int):
    """The LoRA problem of the real head `REAL_HEAD` at L tokens of the audit's shipped text."""
    return real_head_problem(REAL_HEAD["model"], L=L, layer=REAL_HEAD["layer"], head=REAL_HEAD["head"], seed=seed)[0]


def _length(text: str) -> int:
    """A size: 4096 or 2^12."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:\^\s*(\d+)\s*)?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected an integer such as 4096 or 2^12, got {text!r}")
    value = int(m.group(1)) ** int(m.group(2)) if m.group(2) else int(m.group(1))
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2, got {text!r}")
    return value


_eps = ranged(float, lambda v: 0 < v < 1, "a number in (0, 1)")
_degree = ranged(int, lambda v: v >= 0, "an integer >= 0")
_contraction_degree = ranged(int, lambda v: v >= 1, "an integer >= 1")


def add_commands(sub) -> None:
    p = sub.add_parser(
        "bench", help="time exact, blocked, approximate and PyTorch gradients against L",
        description="Compare, on identical instances LoRAProblem.random(L, d, r, adapt='QKV', "
                    "logit_bound=1, seed), the exact path (dense while memory allows, and blocked), the "
                    "approximate path at each --eps and PyTorch autograd (CPU, float64). Each measurement "
                    "runs in a fresh process (peak RSS via getrusage). Records median and all times, peak "
                    "memory, GFLOP/s from the cost model, max-abs error against the exact path, the "
                    "certified bound, the machine's GEMM rate, and log-log scaling exponents.")
    p.add_argument("--L-min", type=_length, help="smallest L (default 1024; 256 with --quick)")
    p.add_argument("--L-max", type=_length, help="largest L (default 131072; 2048 with --quick)")
    p.add_argument("--sizes", type=_length, nargs="+", metavar="L",
                   help="explicit sizes instead of the doubling sweep (e.g. 16384 20000)")
    p.add_argument("--repeats", type=positive_int, help="timed calls per measurement, median reported "
                                                         "(default 3; 1 with --quick)")
    p.add_argument("--eps", type=_eps, nargs="+",
                   help="accuracies of the approximate path (default 1e-3 1e-6)")
    p.add_argument("--rtol", type=_eps, nargs="+",
                   help="certified relative tolerances of the approximate path, atol = 0, on_threshold='exact' "
                        "(methods approx-rtol<RTOL>: the path taken, its degree and bound, and the approximate "
                        "path forced at that degree to check the choice; default 1e-3)")
    p.add_argument("--degrees", type=_degree, nargs="+", metavar="G",
                   help="also run the approximate path at these forced polynomial degrees (method "
                        "approx-g<G>, on_threshold='force'): the kernel's cost at rank C(d+G, G) even "
                        "where the certificate declines eps; its bound is that degree's")
    p.add_argument("--threads", type=positive_int,
                   help="BLAS / torch / blocked-path threads (default: the libraries' own)")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy",
                   help="array library of the exact and approximate paths (PyTorch always runs on CPU)")
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat, short budgets")
    p.add_argument("--targets", action="store_true",
                   help="just what the targets table needs (a few minutes): exact-blocked, approx-rtol and "
                        "torch-autograd (to 2^13, extrapolated beyond) at L = 2^10..2^16, one repeat, and the "
                        "low-rank contraction rate at g = 6, 7 (d = 8, L = 2^14); the other flags override")
    p.add_argument("--torch-max-L", type=_length, metavar="L",
                   help="run PyTorch autograd up to this L only (the targets table extrapolates it x4 per doubling)")
    p.add_argument("--contraction-degrees", type=_contraction_degree, nargs="+", metavar="G",
                   help="measure the low-rank path's contraction rate (GFLOP/s inside its row passes, against the "
                        "square GEMM) at these degrees (L = 2^14; default none, 6 7 with --targets)")
    p.add_argument("--methods", nargs="+", metavar="METHOD",
                   help="subset of: exact-dense exact-blocked approx-eps<EPS> approx-rtol<RTOL> approx-g<G> torch-autograd")
    p.add_argument("--max-seconds", type=positive_float,
                   help="skip a measurement whose single call is predicted longer (default 300)")
    p.add_argument("--budget-seconds", type=positive_float, help="budget of the whole run (default 1200)")
    p.add_argument("--max-memory-gb", type=positive_float,
                   help="memory budget per measurement (default 80%% of available memory)")
    p.add_argument("--seed", type=int, default=0, help="instance seed (default 0)")
    p.add_argument("--peers", action="store_true",
                   help="instead: the peer approximations (taylor, chebyshev, favor+, support-basis) in both "
                        "gradient modes (plug-in, model), gradient error against time and rank on the benchmark "
                        "family, the adversarial families and a real head (the audit's MiniLM head, L = 128); "
                        "takes --sizes, --logit-bounds, --families, --repeats, --threads (default 1), --seed, "
                        "--quick, --out, --plot")
    p.add_argument("--tightness", action="store_true",
                   help="instead: issue 10's degree table (benchmarks/tightness.py) on its instance at L = 2^14 "
                        "(or the one --sizes L): per forced degree (--degrees, default 4..9) the measured error, the "
                        "certified bound before (the global certificate) and after (the row-adaptive one), their "
                        "ratio and the time; takes --sizes, --degrees, --seed, --out")
    p.add_argument("--logit-bounds", type=positive_float, nargs="+", metavar="R",
                   help="--peers: logit bounds R of the instances (default 1.3 4.8)")
    p.add_argument("--families", nargs="+", choices=FAMILIES, metavar="FAMILY",
                   help=f"--peers: instance families, of {' '.join(FAMILIES)} (default all)")
    p.add_argument("--out", type=Path, metavar="FILE.json", help="write the result as JSON")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="write a log-log plot (PNG)")
    p.set_defaults(func=_bench)


def _output_path(path: Path | None, suffix: str, flag: str) -> None:
    if path is None:
        return
    if path.suffix.lower() != suffix:
        raise InvalidInputError(f"{flag} must name a {suffix} file, got {str(path)!r}")
    if not path.parent.is_dir():
        raise InvalidInputError(f"{flag}: directory {str(path.parent)!r} does not exist")


def config_from_args(args) -> BenchConfig:
    """BenchConfig from parsed flags; conflicting flags raise InvalidInputError naming them."""
    for dest, flag in PEERS_ONLY.items():
        if getattr(args, dest, None) is not None:
            raise InvalidInputError(f"{flag} applies to --peers only")
    if args.quick and args.targets:
        raise InvalidInputError("--quick and --targets are different presets: give one of them")
    preset = dict(PRESETS["quick" if args.quick else "targets" if args.targets else "full"])
    pick = lambda value, key: preset[key] if value is None else value  # noqa: E731
    L_min, L_max = pick(args.L_min, "L_min"), pick(args.L_max, "L_max")
    if args.sizes is None and L_min > L_max:
        raise InvalidInputError(f"--L-min ({L_min}) must not exceed --L-max ({L_max})")
    if args.backend == "cupy" and importlib.util.find_spec("cupy") is None:
        raise InvalidInputError("--backend cupy: CuPy is not importable here (pip install -e '.[gpu]')")
    _output_path(args.out, ".json", "--out")
    _output_path(args.plot, ".png", "--plot")
    eps = tuple(dict.fromkeys(DEFAULT_EPS if args.eps is None else args.eps))
    rtol = tuple(dict.fromkeys(DEFAULT_RTOL if args.rtol is None else args.rtol))
    methods = None if args.methods is None else tuple(args.methods)
    if methods is None and args.targets:
        methods = ("exact-blocked", *(rtol_name(r) for r in rtol), TORCH)
    config = dict(preset)
    config.update(
        L_min=L_min, L_max=L_max, L_list=None if args.sizes is None else tuple(args.sizes),
        repeats=pick(args.repeats, "repeats"), eps=eps, rtol=rtol, degrees=tuple(dict.fromkeys(args.degrees or ())),
        threads=args.threads, backend=args.backend,
        seed=args.seed, max_seconds=pick(args.max_seconds, "max_seconds"),
        budget_seconds=pick(args.budget_seconds, "budget_seconds"),
        max_memory_bytes=None if args.max_memory_gb is None else int(args.max_memory_gb * 2**30),
        methods=methods,
    )
    if args.torch_max_L is not None:
        config["torch_max_L"] = args.torch_max_L
    if args.contraction_degrees is not None:
        config["contraction_degrees"] = tuple(dict.fromkeys(args.contraction_degrees))
    try:
        return BenchConfig(**config)
    except InvalidInputError as exc:
        if "methods" in str(exc):
            raise InvalidInputError(f"--methods: {exc}") from None
        raise


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def format_table(result: dict) -> str:
    rows = []
    for e in result["results"]:
        if e["status"] == "ok":
            rows.append((e["method"], str(e["L"]), _fmt(e["median_s"], ".4g"), _fmt(e.get("gflops"), ".3g"),
                         _fmt(e["peak_rss_bytes"] / 2**20, ".0f"), _fmt(e.get("max_abs_error"), ".1e"),
                         _fmt(e.get("bound"), ".1e"), f"{e['repeats_done']} run(s)"))
        else:
            rows.append((e["method"], str(e["L"]), "-", "-", "-", "-", "-", f"{e['status']}: {e['reason']}"))
    return render_table(("method", "L", "median s", "GFLOP/s", "peak MiB", "max|err|", "bound", "note"), rows)


def format_summary(summary: dict) -> str:
    lines = ["", "GEMM rate (GFLOP/s): " + ", ".join(f"{k} {v:.1f}" for k, v in summary["gemm_gflops"].items())]
    fits = {m: s["exponent"] for m, s in summary["methods"].items() if s and s["exponent"] is not None}
    lines.append("time exponents: " + (", ".join(f"{m} {e:.2f}" for m, e in fits.items()) or "-"))
    for t in summary["targets"]:
        met = {True: "MET", False: "NOT MET", None: "not measured"}[t["met"]]
        value = "-" if t["value"] is None else f"{t['value']:.4g}"
        lines.append(f"target: {t['name']} {t['target']}: {value} -> {met} {t['note']}".rstrip())
    lines += _format_planner(summary.get("planner"))
    lines += _format_contractions(summary.get("contractions") or [])
    if summary.get("targets_table"):
        rows = [(t["name"], t["target"], "-" if t["value"] is None else f"{t['value']:.4g}",
                 {True: "yes", False: "NO", None: "not measured"}[t["met"]], t["note"])
                for t in summary["targets_table"]]
        lines += ["", "targets (certified rtol = 1e-3; PyTorch beyond its largest measured L extrapolated x4 per "
                      "doubling, as the notes say):",
                  render_table(("target", "wanted", "measured", "met", "note"), rows)]
    return "\n".join(lines)


def _format_planner(planner) -> list:
    if not planner or not planner["cells"]:
        return []
    rows = [(f"{c['rtol']:g}", str(c["L"]), c["chosen"] or "-", _fmt(c["chosen_degree"], "d"),
             _fmt(c["exact_s"], ".4g"), _fmt(c["forced_degree"], "d"), _fmt(c["forced_approx_s"], ".4g"),
             _fmt(c["call_s"], ".4g"), _fmt(c["predicted_ratio"], ".3g"), _fmt(c["measured_ratio"], ".3g"),
             c["faster"] or "-", {True: "yes", False: "NO", None: "-"}[c["agree"]], c["note"])
            for c in planner["cells"]]
    share = "-" if planner["share"] is None else f"{planner['share']:.0%}"
    return ["", f"planner vs measured: {planner['agreed']} of {planner['decided']} cells right ({share}, "
                f"target {planner['target']}); time model: {', '.join(planner.get('rates') or ['not recorded'])}",
            render_table(("rtol", "L", "chosen", "g", "exact s", "forced g", "forced s", "call s", "predicted ratio",
                          "measured ratio", "faster", "right", "note"), rows)]


def _format_contractions(rates) -> list:
    if not rates:
        return []
    rows = [(str(c["degree"]), str(c["L"]), "-", "-", "-", "-", f"{c['status']}: {c.get('reason')}")
            if c["status"] != "ok" else
            (str(c["degree"]), str(c["L"]), str(c["rank"]), str(c["chunk_rows"]), f"{c['gflops']:.1f}",
             _fmt(c["fraction"], ".2f"), f"{c['share_of_passes']:.0%} of the row passes' time")
            for c in rates]
    return ["", "low-rank contractions inside the row passes (rate / square GEMM rate):",
            render_table(("g", "L", "k", "chunk rows", "GFLOP/s", "of square", "note"), rows)]


def peers_config_from_args(args) -> PeersConfig:
    """PeersConfig from parsed flags (`--peers`); flags of the path benchmark raise InvalidInputError."""
    for dest, flag in PATH_ONLY.items():
        if getattr(args, dest, None) is not None:
            raise InvalidInputError(f"{flag} does not apply to --peers")
    if args.targets:
        raise InvalidInputError("--targets does not apply to --peers")
    if args.backend != "numpy":
        raise InvalidInputError("--backend: --peers runs on NumPy only (the support basis assembles its "
                                "blocks on the host)")
    _output_path(args.out, ".json", "--out")
    _output_path(args.plot, ".png", "--plot")
    if args.seed < 0:
        raise InvalidInputError(f"--seed must be >= 0 for --peers, got {args.seed}")
    config = dict(PEERS_PRESETS["quick" if args.quick else "full"])
    if args.sizes is not None:
        config["sizes"] = tuple(dict.fromkeys(args.sizes))
    if args.logit_bounds is not None:
        config["logit_bounds"] = tuple(dict.fromkeys(args.logit_bounds))
    if args.families is not None:
        config["families"] = tuple(dict.fromkeys(args.families))
    if args.repeats is not None:
        config["repeats"] = args.repeats
    config.update(seed=args.seed, threads=args.threads or 1)
    return PeersConfig(**config)


def _g(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def format_peer_row(row: dict) -> str:
    """One `bench --peers` row on one line, R and max|S| beside it."""
    param = "" if row.get("param") is None else str(row["param"])
    head = (f"{row['family']:>12s} L={row['L']:<6d} R={_g(row.get('R', row['target_R'])):>6s} "
            f"max|S|={_g(row.get('max_abs_S')):>6s} {row['method']:>14s} {param:>5s} "
            f"{row['mode'] or '':>6s} k={'-' if row.get('rank') is None else row['rank']!s:>5s}")
    if row["status"] != "ok":
        return f"{head}  {row['status']}: {row['reason']}"
    spread = f" [{row['frob_rel_min']:.2e}, {row['frob_rel_max']:.2e}] over {row['seeds']} seeds" if "seeds" in row else ""
    speed = f" ({row['speedup']:.3g}x exact)" if "speedup" in row else ""
    return (f"{head}  {row['seconds']:.4f} s{speed}  max-abs {row['max_abs']:.2e} (rel {row['max_abs_rel']:.2e})  "
            f"frob rel {row['frob_rel']:.2e}{spread}")


def format_peers_summary(summary: dict) -> str:
    lines = ["", "winners (lowest relative Frobenius error among the rows faster than exact float64):"]
    for inst in summary["instances"]:
        where = f"{inst['family']} L={inst['L']} R={_g(inst.get('R', inst['target_R']))}"
        if inst["status"] != "ok":
            lines.append(f"  {where}: {inst['status']} ({inst['reason']})")
            continue
        w = inst["winner"]
        won = "none faster than exact" if w is None else (
            f"{w['method']} {w['param']} {w['mode']} frob rel {w['frob_rel']:.2e} at {w['seconds']:.3g} s "
            f"({w['speedup']:.3g}x)")
        lines.append(f"  {where} max|S|={inst['max_abs_S']:.3g}: {won}; exact {inst['exact_seconds']:.3g} s, "
                     f"float32 floor {inst['float32_floor_frob_rel']:.1e}")
    return "\n".join(lines)


def _bench_peers(args) -> int:
    config = peers_config_from_args(args)
    result = run_peers(config, log=lambda row: print(format_peer_row(row), flush=True), real_head=real_head)
    result["real_head"] = (f"lora_proofcheck.audit.real_head_problem({REAL_HEAD['model']!r}, L, "
                           f"layer={REAL_HEAD['layer']}, head={REAL_HEAD['head']}, seed)")
    result["summary"] = summarize_peers(result)
    print(format_peers_summary(result["summary"]))
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(result, indent=1, allow_nan=False) + "\n")
        print(f"wrote {args.out}")
    if args.plot is not None:
        plot_peers(result, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _bench_tightness(args) -> int:
    for flag, given in (("--peers", args.peers), ("--targets", args.targets), ("--quick", args.quick)):
        if given:
            raise InvalidInputError(f"{flag} does not apply to --tightness")
    if args.sizes is not None and len(args.sizes) != 1:
        raise InvalidInputError(f"--tightness takes one --sizes L, got {len(args.sizes)}")
    L = 16384 if args.sizes is None else args.sizes[0]
    table = tightness.degree_table(L, tuple(args.degrees) if args.degrees else tightness.DEGREES, seed=args.seed,
                                   progress=lambda what: print(what, flush=True))
    print(tightness.table_markdown(table))
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(table, indent=1, allow_nan=False) + "\n")
        print(f"wrote {args.out}")
    return 0


def _bench(args) -> int:
    if args.tightness:
        return _bench_tightness(args)
    if args.peers:
        return _bench_peers(args)
    config = config_from_args(args)
    result = run_benchmark(config)
    result["summary"] = summarize(result)
    print(format_table(result))
    print(format_summary(result["summary"]))
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(result, indent=1, allow_nan=False) + "\n")
        print(f"wrote {args.out}")
    if args.plot is not None:
        plot(result, args.plot)
        print(f"wrote {args.plot}")
    return 0
