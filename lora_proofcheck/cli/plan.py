"""`lora-proofcheck plan`: would the certified approximate path beat the exact one? No data needed.

Prints the smallest certified degree for the size, logit bound R and eps, its feature rank, the
predicted cost ratio against the exact path, and the largest degree still cheaper. The magnitudes
the certificate needs in place of data are options (see `gradients.planner.plan`).

Exit status: 0 when a certified degree is cheaper than the exact path; 3 when above the threshold
(the plan and the reason are still printed, so scripts can branch on it); 2 on a bad argument.
"""

from __future__ import annotations

import json

from .._lib.tables import key_value_table
from ..gradients.planner import METHODS, plan

__all__ = ["EXIT_ABOVE_THRESHOLD", "add_commands", "format_plan"]

EXIT_ABOVE_THRESHOLD = 3


def add_commands(sub) -> None:
    p = sub.add_parser(
        "plan", help="degree, rank and cost of the certified approximate path (no data needed)",
        description="Plan the approximate gradient path for a size and logit bound R >= max|S_ij|: the "
                    "smallest polynomial degree whose certified error bound meets --eps, its rank, and "
                    "its predicted cost against the exact O(L^2 d) path. Exit 0: feasible; exit 3: above "
                    "the threshold (plan printed with the reason).")
    p.add_argument("--L", type=int, required=True, help="sequence length (queries)")
    p.add_argument("--d", type=int, required=True, help="head dimension")
    p.add_argument("--logit-bound", type=float, required=True, dest="logit_bound",
                   help="R >= max |S_ij| (e.g. from `lora_proofcheck.logit_bound(problem)`)")
    p.add_argument("--eps", type=float, required=True, help="requested max-abs gradient error")
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
    magnitudes = {k: getattr(args, k) for k in ("beta", "alpha", "input_bound", "value_bound", "target_bound",
                                                 "query_bound", "key_bound", "adapter_bound")
                  if getattr(args, k) is not None}
    result = plan(args.L, args.d, args.logit_bound, args.eps, adapt=args.adapt, r=args.r, N=args.N,
                  L_kv=args.L_kv, method=args.method, dtype=args.dtype, **magnitudes)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(format_plan(result))
    return 0 if result.feasible else EXIT_ABOVE_THRESHOLD


def format_plan(result) -> str:
    """Human-readable plan: one 'name  value' row each, the verdict last."""
    fmt = lambda v: "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    cost = result.cost
    rows = [
        ("size", f"L={result.L} L_kv={result.L_kv} d={result.d} r={result.r} N={result.N} "
                 f"adapt={result.adapt}"),
        ("logit bound R", fmt(result.logit_bound)),
        ("eps", fmt(result.eps)),
        ("degree", fmt(result.degree)),
        ("rank k = C(d+g, g)", fmt(result.rank)),
        ("paper's rank C(2(g+d), 2g)", fmt(result.paper_rank)),
        ("certified delta", fmt(result.delta)),
        ("certified bound", fmt(result.bound)),
        ("  of which rounding", fmt(result.floor)),
        ("approx flops", fmt(cost["approx_flops"])),
        ("exact flops", fmt(cost["exact_flops"])),
        ("cost ratio", fmt(cost["ratio"])),
        ("largest cheaper degree", f"{fmt(result.max_cheaper_degree)} (rank {fmt(result.max_cheaper_rank)}, "
                                   f"bound {fmt(result.max_cheaper_bound)})"),
        ("assumptions", ", ".join(f"{k}={v:.4g}" for k, v in result.assumptions.items())),
    ]
    verdict = "FEASIBLE: " if result.feasible else "ABOVE THRESHOLD: "
    return key_value_table(rows) + "\n" + verdict + result.reason
