"""`lora-proofcheck plan`: would the certified approximate path beat the exact one? No data needed.

Prints the smallest certified degree for the size, logit bound R and tolerance (--rtol, --atol),
its feature rank, the predicted time ratio against the exact path (this machine's time model) and
the largest degree still faster. The magnitudes the certificate needs in place of data are options
(see `gradients.planner.plan`). `plan --calibrate` measures this machine's rates for the time model
(a few seconds) and caches them (`gradients.timing.cache_path`).

Exit status: 0 when a certified degree is predicted faster than the exact path (or calibration
succeeded); 3 when above the threshold (the plan and the reason are still printed, so scripts can
branch on it); 2 on a bad argument.
"""

from __future__ import annotations

import json
import sys
import warnings

from .._lib.tables import key_value_table
from ..gradients.calibration import calibrate
from ..gradients.planner import METHODS, plan
from ..gradients.timing import save_rates

__all__ = ["EXIT_ABOVE_THRESHOLD", "add_commands", "format_plan"]

EXIT_ABOVE_THRESHOLD = 3


def add_commands(sub) -> None:
    p = sub.add_parser(
        "plan", help="degree, rank and cost of the certified approximate path (no data needed)",
        description="Plan the approximate gradient path for a size and logit bound R >= max|S_ij|: the "
                    "smallest polynomial degree whose certified error bound meets atol + rtol * max|g|, its "
                    "rank, and its predicted time against the exact O(L^2 d) path on this machine. Exit 0: "
                    "feasible; exit 3: above the threshold (plan printed with the reason). "
                    "--calibrate: measure and cache this machine's rates for the time model first.")
    p.add_argument("--calibrate", action="store_true",
                   help="time both paths on a small grid, fit and cache this machine's rates, print them")
    p.add_argument("--L", type=int, default=None, help="sequence length (queries)")
    p.add_argument("--d", type=int, default=None, help="head dimension")
    p.add_argument("--logit-bound", type=float, default=None, dest="logit_bound",
                   help="R >= max |S_ij| (e.g. from `lora_proofcheck.logit_bound(problem)`)")
    p.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance (default 1e-3)")
    p.add_argument("--atol", type=float, default=0.0, help="absolute tolerance (default 0)")
    p.add_argument("--gradient-scale", type=float, default=None, dest="gradient_scale",
                   help="max |g| that rtol is relative to (default: its certified upper bound)")
    p.add_argument("--eps", type=float, default=None, help="deprecated: an absolute tolerance (= --atol EPS --rtol 0)")
    p.add_argument("--adapt", default="QV", help="adapted modules, a string over QKV (default QV)")
    p.add_argument("--r", type=int, default=4, help="LoRA rank (default 4)")
    p.add_argument("--N", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--L-kv", type=int, default=None, dest="L_kv", help="keys (cross-attention; default L)")
    p.add_argument("--method", default="auto", choices=METHODS)
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    g = p.add_argument_group("assumed magnitudes (defaults: see lora_proofcheck.plan)")
    for name in ("beta", "alpha", "input-bound", "value-bound", "target-bound", "query-bound",
                 "key-bound", "adapter-bound"):
        g.add_argument(f"--{name}", type=float, default=None, dest=name.replace("-", "_"))
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_plan)


def _plan(args) -> int:
    if args.calibrate:
        _calibrate()
        if args.L is None and args.d is None and args.logit_bound is None:
            return 0
    missing = [f"--{n.replace('_', '-')}" for n in ("L", "d", "logit_bound") if getattr(args, n) is None]
    if missing:
        print(f"lora-proofcheck plan: error: the arguments {', '.join(missing)} are required "
              "(unless --calibrate alone)", file=sys.stderr)
        return 2
    magnitudes = {k: getattr(args, k) for k in ("beta", "alpha", "input_bound", "value_bound", "target_bound",
                                                 "query_bound", "key_bound", "adapter_bound")
                  if getattr(args, k) is not None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        result = plan(args.L, args.d, args.logit_bound, args.eps, rtol=args.rtol, atol=args.atol,
                      gradient_scale=args.gradient_scale, adapt=args.adapt, r=args.r, N=args.N, L_kv=args.L_kv,
                      method=args.method, dtype=args.dtype, **magnitudes)
    for w in caught:
        print(f"warning: --eps is deprecated ({w.message})", file=sys.stderr)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(format_plan(result))
    return 0 if result.feasible else EXIT_ABOVE_THRESHOLD


def _calibrate() -> None:
    rates, rows = calibrate()
    path = save_rates(rates)
    lines = [f"{r['path']:>6} L={r['L']:<5} d={r['d']:<2} g={r['degree'] if r['degree'] is not None else '-':<2} "
             f"measured {r['seconds']:.4f} s  predicted {r['predicted']:.4f} s" for r in rows]
    print("calibrated the time model on this machine:\n  " + "\n  ".join(lines))
    print("rates (s per unit): " + ", ".join(f"{k}={v:.3g}" for k, v in rates.seconds.items()))
    print(f"cached in {path}")


def format_plan(result) -> str:
    """Human-readable plan: one 'name  value' row each, the verdict last."""
    fmt = lambda v: "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    cost = result.cost
    rows = [
        ("size", f"L={result.L} L_kv={result.L_kv} d={result.d} r={result.r} N={result.N} "
                 f"adapt={result.adapt}"),
        ("logit bound R", fmt(result.logit_bound)),
        ("tolerance", f"{fmt(result.tolerance)} = atol {fmt(result.atol)} + rtol {fmt(result.rtol)} x "
                      f"max|g| {fmt(result.gradient_scale)}"),
        ("degree", fmt(result.degree)),
        ("rank k = C(d+g, g)", fmt(result.rank)),
        ("paper's rank C(2(g+d), 2g)", fmt(result.paper_rank)),
        ("certified delta", fmt(result.delta)),
        ("certified bound", fmt(result.bound)),
        ("  of which rounding", fmt(result.floor)),
        ("approx time (predicted)", fmt(cost["approx_seconds"]) + " s"),
        ("exact time (predicted)", fmt(cost["exact_seconds"]) + " s"),
        ("time ratio", fmt(cost["ratio"])),
        ("flops approx / exact", f"{fmt(cost['approx_flops'])} / {fmt(cost['exact_flops'])}"),
        ("time model", cost["rates"]),
        ("largest faster degree", f"{fmt(result.max_cheaper_degree)} (rank {fmt(result.max_cheaper_rank)}, "
                                   f"bound {fmt(result.max_cheaper_bound)})"),
        ("assumptions", ", ".join(f"{k}={v:.4g}" for k, v in result.assumptions.items())),
    ]
    verdict = "FEASIBLE: " if result.feasible else "ABOVE THRESHOLD: "
    return key_value_table(rows) + "\n" + verdict + result.reason
