"""XPPrinter: SymPy matrix expressions -> array-API code against a runtime namespace `xp`.

The stock NumPyPrinter prints `.dot` chains (not array-API), cannot print elementwise exp of a
matrix (SyntaxError in SymPy 1.14) and knows nothing of row-wise operations; this subclass
prints `@`, `xp.matrix_transpose`, broadcasting for diag scalings and `xp.sum(..., axis=-1)` for
products with a ones vector. A face split (of two narrow factors) prints as the runtime op
`face_split`, FaceContract as `face_contract` (kernels/_ops.py), HStack as `xp.concat(..., axis=-1)` and ColSlice as a slice whose bounds use the
size names the kernel binds from its inputs' shapes (`render`). Every array may carry leading
batch dimensions.
"""

from __future__ import annotations

import sympy as sp
from sympy.matrices.expressions.diagonal import DiagMatrix
from sympy.printing.numpy import NumPyPrinter

__all__ = ["XPPrinter"]


def _is_ones(e, rows=None, cols=None) -> bool:
    if not isinstance(e, sp.OneMatrix):
        return False
    return (rows is None or e.shape[0] == rows) and (cols is None or e.shape[1] == cols)


class XPPrinter(NumPyPrinter):
    _module = "xp"
    _kf = {k: "xp." + v.split(".", 1)[1] for k, v in NumPyPrinter._kf.items() if v.startswith("numpy.")}
    printmethod = "_xpcode"

    def _module_format(self, fqn, register=True):
        return fqn

    def _print_MatrixSymbol(self, e):
        return str(e.name)

    def _print_Transpose(self, e):
        return f"xp.matrix_transpose({self._print(e.arg)})"

    def _print_HadamardProduct(self, e):
        return " * ".join(self.parenthesize(a, 50) for a in e.args)

    def _print_ElementwiseApplyFunction(self, e):
        x = sp.Dummy("x")
        body = e.function(x)
        if body == sp.exp(x):
            return f"xp.exp({self._print(e.expr)})"
        raise NotImplementedError(f"elementwise {body}")

    def _print_RowMax(self, e):
        row_max = f"xp.max({self._print(e.arg)}, axis=-1, keepdims=True)"
        return row_max if e.floor is None else f"xp.maximum({row_max}, {self._print(e.floor)})"

    def _print_Fill(self, e):
        return self.parenthesize(e.value, 50)  # a scalar broadcasts wherever the matrix would

    def _print_RowDot(self, e):
        A, B = (self._print(a) for a in e.args)
        return f"xp.sum({A} * {B}, axis=-1, keepdims=True)"

    def _print_FaceSplit(self, e):
        return f"face_split({self._print(e.args[0])}, {self._print(e.args[1])})"

    def _print_HStack(self, e):
        if len(e.args) == 1:
            return self._print(e.args[0])
        like = next(b for b in e.args if not isinstance(b, sp.OneMatrix))
        blocks = [f"xp.ones_like({self.parenthesize(like, 60)}[..., :1])" if _is_ones(b, cols=1)
                  else self._print(b) for b in e.args]
        return f"xp.concat([{', '.join(blocks)}], axis=-1)"

    def _print_ColSlice(self, e):
        M, start, stop = e.args
        lo = "" if start == 0 else self._print(start)
        return f"{self.parenthesize(M, 60)}[..., {lo}:{self._print(stop)}]"

    def _print_FaceContract(self, e):
        return f"face_contract({self._print(e.args[0])}, {self._print(e.args[1])})"

    def _print_Trace(self, e):
        arg = e.arg
        if isinstance(arg, sp.MatMul) and len(arg.args) == 2 and isinstance(arg.args[0], sp.Transpose):
            a, b = self._print(arg.args[0].arg), self._print(arg.args[1])
            return f"xp.sum({a} * {b}, axis=(-2, -1))"
        raise NotImplementedError(f"trace of {arg}")

    def _print_MatAdd(self, e):
        plus, minus = [], []
        for term in e.args:
            coeff, rest = term.as_coeff_mmul() if isinstance(term, sp.MatMul) else (1, term)
            if isinstance(rest, sp.MatMul) and len(rest.args) == 1:
                rest = rest.args[0]
            if coeff == -1:
                minus.append(self.parenthesize(rest, 50))
            else:
                plus.append(self.parenthesize(term, 40))
        text = " + ".join(plus) if plus else f"-{minus.pop(0)}"
        return text + "".join(f" - {t}" for t in minus)

    def _print_MatMul(self, e):
        coeff, factors = e.as_coeff_matrices()
        scalars = [a for a in e.args if not a.is_Matrix]
        factors = list(factors)
        acc = None  # printed array accumulated left to right
        i = 0
        while i < len(factors):
            f = factors[i]
            if isinstance(f, sp.Inverse) and isinstance(f.arg, DiagMatrix):
                rest = self._chain(factors[i + 1:])
                return self._scaled(scalars, f"{rest} / {self.parenthesize(f.arg.args[0], 50)}", acc)
            if isinstance(f, DiagMatrix):
                rest = self._chain(factors[i + 1:])
                return self._scaled(scalars, f"{self.parenthesize(f.args[0], 50)} * {rest}", acc)
            if _is_ones(f, cols=1) and acc is not None:
                acc = f"xp.sum({acc}, axis=-1, keepdims=True)"
            elif _is_ones(f, rows=1) and acc is not None:
                pass  # v 1^T: broadcasting does it
            else:
                p = self.parenthesize(f, 60)
                acc = p if acc is None else f"{acc} @ {p}"
            i += 1
        return self._scaled(scalars, acc, None)

    def _chain(self, factors):
        return self.parenthesize(sp.MatMul(*factors), 60) if len(factors) > 1 else self.parenthesize(factors[0], 60)

    def _scaled(self, scalars, text, left):
        if left is not None:
            raise NotImplementedError("a diag scaling after other factors")
        if not scalars:
            return text
        s = self._print(sp.Mul(*scalars))
        if s == "-1":
            return f"-{text}"
        return f"{self.parenthesize(sp.Mul(*scalars), 50)} * {text}" if text else s
