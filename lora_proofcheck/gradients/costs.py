"""Predicted flops and peak memory of the generated kernels, read off their derivation steps.

Each kernel evaluates the steps `Derivation.needed(outputs)` in order, printed as `codegen.printer`
prints them, so walking those steps with the printer's evaluation order gives its cost as a
polynomial in L, L_kv, d, k (`flops_formula`); the functions below evaluate it.

Convention: a product of (m x n) and (n x p) costs 2 m n p; every elementwise add, subtract,
multiply, divide, comparison and exp costs 1 per output entry (exp counted as 1); a sum over n
entries costs n; broadcasting, transposes, reshapes, slices and concatenations cost 0; the runtime
ops count as they run (`kernels/_ops.py`): a face split one product per entry, FaceContract(c, T)
2 per entry of T.  Counts are
per sample, times N.  Peak memory is the largest live set of arrays (inputs, step results until
their last use, and the temporaries inside the step being evaluated), in entries times itemsize.
"""

from __future__ import annotations

import functools
import math

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.matrices.expressions.diagonal import DiagMatrix

from .._lib.validate import check_int, check_modules
from ..derivations import decomposition, lowrank_chain
from ..derivations.nodes import ColSlice, FaceContract, FaceSplit, Fill, HStack, RowDot, RowMax

__all__ = ["approx_flops", "exact_bytes", "exact_flops", "feature_flops", "flops_formula", "largest_cheaper_degree",
           "lowrank_bytes", "lowrank_flops", "path_costs", "peak_entries_formula"]

SIZES = (decomposition.L, decomposition.L_kv, decomposition.d, lowrank_chain.k)


def _entries(e):
    return e.shape[0] * e.shape[1] if getattr(e, "is_Matrix", False) else sp.S.One


def _is_ones(f, axis):
    return isinstance(f, sp.OneMatrix) and f.shape[axis] == 1


def _matmul(e):
    """(flops, temporaries) of a product as the printer evaluates it (left to right)."""
    scalars = [a for a in e.args if not a.is_Matrix]
    factors = [a for a in e.args if a.is_Matrix]
    flops = sum((_cost(f)[0] for f in factors), sp.S.Zero)
    temps = sp.S.Zero
    if scalars and not (len(scalars) == 1 and scalars[0] == -1):  # "beta * A @ B": beta * A first
        flops += _entries(factors[0])
        temps += _entries(factors[0])
    acc = None  # (rows, cols) of the partial product
    for i, f in enumerate(factors):
        rest = factors[i + 1:]
        rest_shape = sp.MatMul(*rest).shape if rest else None
        if isinstance(f, DiagMatrix) or (isinstance(f, sp.Inverse) and isinstance(f.arg, DiagMatrix)):
            sub = _cost(sp.MatMul(*rest)) if len(rest) > 1 else _cost(rest[0])
            if len(rest) == 1 and not isinstance(rest[0], (sp.MatrixSymbol, ColSlice)):
                # the scaled operand is formed first (its own temporaries are freed once it exists),
                # then scaled into the step's result: the peak is the larger of the two phases
                sub = (sub[0], sp.Max(sub[1], _entries(rest[0])))
            return flops + sub[0] + rest_shape[0] * rest_shape[1], temps + sub[1]
        if _is_ones(f, 1) and acc is not None:  # M 1: a row sum
            flops += acc[0] * acc[1]
            acc = (acc[0], sp.S.One)
        elif _is_ones(f, 0) and acc is not None:  # v 1^T: broadcast
            acc = (acc[0], f.shape[1])
        elif acc is None:
            acc = f.shape
        else:
            if i > 1:
                temps += acc[0] * acc[1]
            flops += 2 * acc[0] * acc[1] * f.shape[1]
            acc = (acc[0], f.shape[1])
    return flops, temps


def _cost(e):
    """(flops, entries of temporaries) of evaluating one expression as printed."""
    if isinstance(e, (sp.MatrixSymbol, sp.Symbol, sp.OneMatrix)) or e.is_Number:
        return sp.S.Zero, sp.S.Zero
    if isinstance(e, sp.Transpose):
        return _cost(e.arg)
    if isinstance(e, sp.MatMul):
        return _matmul(e)
    if isinstance(e, (sp.MatAdd, sp.HadamardProduct)):
        subs = [_cost(a) for a in e.args]
        n = len(e.args)
        return (sum((s[0] for s in subs), sp.S.Zero) + (n - 1) * _entries(e),
                sum((s[1] for s in subs), sp.S.Zero) + max(n - 2, 0) * _entries(e))
    if isinstance(e, ElementwiseApplyFunction):
        f, t = _cost(e.expr)
        return f + _entries(e), t + (_entries(e.expr) if not isinstance(e.expr, sp.MatrixSymbol) else 0)
    if isinstance(e, RowMax):  # the max over each row, then the floor (one comparison per row)
        f, t = _cost(e.arg)
        return f + _entries(e.arg) + (_entries(e) if e.floor is not None else 0), t
    if isinstance(e, Fill):  # a broadcast scalar
        return sp.S.Zero, sp.S.Zero
    if isinstance(e, RowDot):
        return 2 * _entries(e.args[0]), _entries(e.args[0])
    if isinstance(e, FaceSplit):  # materialised: only narrow (data) factors in the fused chain
        return _entries(e), sp.S.Zero
    if isinstance(e, HStack):  # a copy (0 flops); blocks computed on the fly are temporaries
        subs = [_cost(b) for b in e.args]
        formed = [b for b in e.args if not isinstance(b, (sp.MatrixSymbol, ColSlice))]
        return (sum((f for f, _ in subs), sp.S.Zero),
                sum((t for _, t in subs), sp.S.Zero) + sum((_entries(b) for b in formed), sp.S.Zero))
    if isinstance(e, ColSlice):  # a view
        return _cost(e.args[0])
    if isinstance(e, FaceContract):  # row i: (1 x d) @ (d x e)
        c, T = e.args
        return 2 * _entries(T) + _cost(T)[0], _cost(T)[1]
    if isinstance(e, sp.Trace):  # printed as sum(c * c)
        return 2 * _entries(e.arg.args[-1]), _entries(e.arg.args[-1])
    if isinstance(e, (sp.Mul, sp.Add)):
        subs = [_cost(a) for a in e.args]
        return sum((s[0] for s in subs), sp.S.Zero) + len(e.args) - 1, sum((s[1] for s in subs), sp.S.Zero)
    if isinstance(e, (DiagMatrix, sp.Inverse)):
        return _cost(e.args[0])
    raise NotImplementedError(f"no cost rule for {type(e).__name__}: {e}")


def flops_formula(derivation, outputs) -> sp.Expr:
    """Flops of the kernel computing `outputs` (step names) of `derivation`, per sample."""
    return sp.expand(sum((_cost(s.expr)[0] for s in derivation.needed(list(outputs))), sp.S.Zero))


def peak_entries_formula(derivation, outputs, *, inputs: bool = True):
    """Per-step live entries of the kernel (a list of SymPy expressions; the peak is their max)."""
    steps = derivation.needed(list(outputs))
    last = {}
    for idx, s in enumerate(steps):
        for a in s.expr.atoms(sp.MatrixSymbol):
            last[str(a.name)] = idx
    size = {s.name: _entries(s.expr) for s in steps}
    base = sum((_entries(i) for i in derivation.inputs if isinstance(i, sp.MatrixSymbol)), sp.S.Zero) \
        if inputs else sp.S.Zero
    live, out = {}, []
    for idx, s in enumerate(steps):
        out.append(base + sum(live.values(), sp.S.Zero) + _cost(s.expr)[1] + size[s.name])
        live[s.name] = size[s.name]
        for name in [n for n in live if last.get(n, -1) <= idx and n not in outputs]:
            del live[name]
    return out


def _check_sizes(**sizes) -> list:
    return [check_int(name, value, 1) for name, value in sizes.items()]


def _outputs(modules):
    modules = check_modules(modules)
    return ("loss",) + tuple(decomposition.WEIGHT_GRADIENTS[m] for m in modules)


def _derivation(kind: str, outputs: tuple):
    if kind == "exact":
        return decomposition.build()
    return lowrank_chain.build("".join(m for m, name in decomposition.WEIGHT_GRADIENTS.items() if name in outputs))


@functools.lru_cache(maxsize=64)
def _formula(kind: str, outputs: tuple):
    D = _derivation(kind, outputs)
    return sp.lambdify(SIZES, flops_formula(D, outputs), modules=[{"Max": max, "Min": min}])


@functools.lru_cache(maxsize=64)
def _peaks(kind: str, outputs: tuple, inputs: bool):
    D = _derivation(kind, outputs)
    return [sp.lambdify(SIZES, p, modules=[{"Max": max, "Min": min}])
            for p in peak_entries_formula(D, outputs, inputs=inputs)]


def exact_flops(L, L_kv, d, modules, N=1) -> int:
    """Flops of `exact_gradients_<modules>` on N samples (see the module docstring's convention)."""
    L, L_kv, d, N = _check_sizes(L=L, L_kv=L_kv, d=d, N=N)
    return N * int(_formula("exact", _outputs(modules))(L, L_kv, d, 1))


def lowrank_flops(L, L_kv, d, k, modules, N=1) -> int:
    """Flops of `lowrank_gradients_<modules>` on N samples with feature rank k (features excluded:
    `feature_flops`)."""
    L, L_kv, d, k, N = _check_sizes(L=L, L_kv=L_kv, d=d, k=k, N=N)
    return N * int(_formula("lowrank", _outputs(modules))(L, L_kv, d, k))


def feature_flops(L, L_kv, d, degree, N=1) -> int:
    """Flops `lowrank_path.lowrank_weight_gradients` spends before the kernel: Q = beta X W_Q, K = X' W_K
    (2 L d^2 + L d, 2 L_kv d^2) and the monomial features (a product and a scaling per entry of
    U1 and U2 past degree 0, one scaling at degree 0)."""
    L, L_kv, d, N = _check_sizes(L=L, L_kv=L_kv, d=d, N=N)
    degree = check_int("degree", degree, 0)
    k = math.comb(d + degree, degree)
    return N * (2 * (L + L_kv) * d * d + L * d + (L + L_kv) * (2 * k - 1))


def lowrank_bytes(L, L_kv, d, k, modules, N=1, *, itemsize=8, inputs=True) -> int:
    """Peak bytes of `lowrank_gradients_<modules>`: largest live set of arrays during the call,
    with (`inputs=True`) or without its input arrays U1, U2, X, X', W, Y."""
    L, L_kv, d, k, N = _check_sizes(L=L, L_kv=L_kv, d=d, k=k, N=N)
    itemsize = check_int("itemsize", itemsize, 1)
    peaks = _peaks("lowrank", _outputs(modules), bool(inputs))
    return N * itemsize * max(int(p(L, L_kv, d, k)) for p in peaks)


def exact_bytes(L, L_kv, d, modules, N=1, *, itemsize=8, inputs=True) -> int:
    """Peak bytes of the dense `exact_gradients_<modules>` (no row blocking), same convention."""
    L, L_kv, d, N = _check_sizes(L=L, L_kv=L_kv, d=d, N=N)
    itemsize = check_int("itemsize", itemsize, 1)
    peaks = _peaks("exact", _outputs(modules), bool(inputs))
    return N * itemsize * max(int(p(L, L_kv, d, 1)) for p in peaks)


def approx_flops(L, L_kv, d, degree, modules, N=1) -> float:
    """Flops of the whole low-rank path at `degree`: the kernel at rank C(d+g, g) and its features."""
    degree = check_int("degree", degree, 0)
    k = math.comb(d + degree, degree)
    return float(lowrank_flops(L, L_kv, d, k, modules, N=N) + feature_flops(L, L_kv, d, degree, N=N))


def path_costs(L, L_kv, d, modules, N=1, degree=None) -> dict:
    """{"approx_flops", "exact_flops", "ratio"} of the low-rank path at `degree` against the exact path
    (approx_flops and ratio None when `degree` is None)."""
    exact = float(exact_flops(L, L_kv, d, modules, N=N))
    if degree is None:
        return {"approx_flops": None, "exact_flops": exact, "ratio": None}
    approx = approx_flops(L, L_kv, d, degree, modules, N=N)
    return {"approx_flops": approx, "exact_flops": exact, "ratio": approx / exact}


def largest_cheaper_degree(L, L_kv, d, modules, N=1, limit: int = 400) -> int | None:
    """The largest degree g whose low-rank flops stay below the exact path's (None: not even g = 0).

    >>> largest_cheaper_degree(2**16, 2**16, 8, "QKV")
    7
    """
    exact = float(exact_flops(L, L_kv, d, modules, N=N))
    g = None
    for cand in range(limit + 1):
        if approx_flops(L, L_kv, d, cand, modules, N=N) >= exact:
            break
        g = cand
    return g
