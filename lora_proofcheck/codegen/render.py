"""Render derivation steps into a kernel module: CSE, liveness `del`s, a DO-NOT-EDIT header."""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
from sympy.matrices.expressions.diagonal import DiagMatrix

from ..derivations.nodes import ColSlice, Derivation, FaceSplit
from .printer import XPPrinter

__all__ = ["Kernel", "render_function", "render_module"]


@dataclass(frozen=True)
class Kernel:
    """One generated function: `outputs` (step names) of `derivation` from `args` (input names)."""

    name: str
    derivation: Derivation
    args: tuple
    outputs: tuple
    doc: str


def _names(expr) -> set:
    return {str(a.name) if isinstance(a, sp.MatrixSymbol) else str(a)
            for a in expr.atoms(sp.MatrixSymbol, sp.Symbol)}


def render_function(kernel: Kernel, printer: XPPrinter) -> str:
    step_names = {s.name for s in kernel.derivation.steps}
    given = tuple(a for a in kernel.args if a in step_names)  # a later pass of a chain: its inputs
    steps = [s for s in kernel.derivation.needed(kernel.outputs, given) if s.name not in given]
    temps = sp.numbered_symbols("_t")
    shapes = set().union(*(i.free_symbols for i in kernel.derivation.inputs if isinstance(i, sp.MatrixSymbol)
                           for i in i.shape))  # never hoist ones vectors: they print as axis sums
    replacements, reduced = sp.cse([s.expr for s in steps], symbols=temps, order="none", ignore=shapes)
    replacements, reduced = _inline_operators(replacements, reduced)
    # cse names matrix temporaries as MatrixSymbols; place each right before its first user
    statements = []  # (target, expr)
    pending = list(replacements)
    for step, expr in zip(steps, reduced):
        used = _names(expr)
        grown = True
        while grown:
            grown = False
            for sym, sub in pending:
                if str(sym) in used and not any(t == str(sym) for t, _ in statements):
                    sub_used = _names(sub)
                    if not sub_used & {str(s2) for s2, _ in pending if not any(t == str(s2) for t, _ in statements)} - {str(sym)}:
                        statements.append((str(sym), sub))
                        used |= sub_used
                        grown = True
        statements.append((step.name, expr))
    array_args = [a for a in kernel.args if a not in _scalar_args(kernel)]
    lines = [f"def {kernel.name}({', '.join(kernel.args)}):", f'    """{kernel.doc}', ""]
    lines.append(f"    Returns a dict with {', '.join(kernel.outputs)}.")
    lines.append('    """')
    lines.append(f"    xp = array_namespace({', '.join(array_args)})")
    lines += [f"    {line}" for line in _size_bindings(kernel, [e for _, e in statements])]
    last_use = {}
    for idx, (_, expr) in enumerate(statements):
        for name in _names(expr):
            last_use[name] = idx
    keep = set(kernel.outputs) | set(kernel.args)
    for idx, (target, expr) in enumerate(statements):
        lines.append(f"    {target} = {printer.doprint(expr)}")
        dead = sorted(n for n, last in last_use.items() if last == idx and n not in keep
                      and any(t == n for t, _ in statements[:idx]))
        if dead:
            lines.append(f"    del {', '.join(dead)}")
    lines.append("    return {" + ", ".join(f'"{o}": {o}' for o in kernel.outputs) + "}")
    return "\n".join(lines)


def _size_bindings(kernel: Kernel, exprs) -> list:
    """`d = X_q.shape[-1]` for each size symbol a printed slice bound uses, read off an input."""
    sizes = set().union(*(b.free_symbols for e in exprs for s in e.atoms(ColSlice) for b in s.args[1:]))
    lines = []
    for size in sorted(sizes, key=str):
        for arg in kernel.derivation.inputs:
            if isinstance(arg, sp.MatrixSymbol) and str(arg) in kernel.args and size in arg.shape:
                lines.append(f"{size} = {arg}.shape[{-2 if arg.shape[0] == size else -1}]")
                break
        else:
            raise ValueError(f"kernel {kernel.name}: no input gives the size {size}")
    return lines


def _is_operator(expr) -> bool:
    """Nodes the printer fuses into the product they sit in; hoisted alone they would be
    materialized (diag(v) as an L x L array, A ⊘ B as L x k·d)."""
    if isinstance(expr, sp.Transpose):
        expr = expr.arg
    if isinstance(expr, sp.Inverse):
        expr = expr.arg
    return isinstance(expr, (DiagMatrix, FaceSplit, sp.OneMatrix))


def _inline_operators(replacements, reduced):
    """Undo CSE for operator nodes: substitute them back where they are used."""
    inline = {sym: sub for sym, sub in replacements if _is_operator(sub)}
    while inline:
        sym, sub = inline.popitem()
        replacements = [(s2, e.xreplace({sym: sub})) for s2, e in replacements if s2 != sym]
        reduced = [e.xreplace({sym: sub}) for e in reduced]
        inline = {s2: e for s2, e in replacements if _is_operator(e)}
    return replacements, reduced


def _scalar_args(kernel: Kernel) -> set:
    return {str(i) for i in kernel.derivation.inputs if not isinstance(i, sp.MatrixSymbol)}


def render_module(title: str, kernels: list, derivations: list, *, helpers: str = "") -> str:
    printer = XPPrinter()
    digest = {D.name: D.digest() for D in derivations}
    head = [
        f'"""{title}',
        "",
        "GENERATED by `lora-proofcheck regen` from lora_proofcheck/derivations -- DO NOT EDIT.",
        "Edit the derivation and run `lora-proofcheck regen`; `regen --check` proves this file current.",
        "",
    ]
    head += [f"derivation {name} sha256: {h}" for name, h in sorted(digest.items())]
    head += [f"sympy {sp.__version__}", '"""', "", "from array_api_compat import array_namespace", ""]
    if helpers:
        head += [helpers, ""]
    body = [render_function(k, printer) for k in kernels]
    return "\n".join(head) + "\n\n" + "\n\n\n".join(body) + "\n"
