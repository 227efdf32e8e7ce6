"""Evaluate a derivation on explicit (small, symbolic or numeric) SymPy matrices.

This interpreter is the bridge between the matrix-level derivations and exact scalar calculus:
the proofs substitute explicit matrices of symbols, run every step here, and compare against
brute-force derivatives of the scalar loss. It is deliberately independent of the code printer.
"""

from __future__ import annotations

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.matrices.expressions.diagonal import DiagMatrix

from .nodes import ColSlice, FaceContract, FaceSplit, Fill, HStack, RowDot, RowMax

__all__ = ["Interpreter", "symbol_matrix"]


def symbol_matrix(name: str, rows: int, cols: int, **assumptions) -> sp.Matrix:
    """An explicit matrix of fresh real symbols name_i_j."""
    return sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"{name}_{i}_{j}", real=True, **assumptions))


class Interpreter:
    """Evaluate matrix expressions given explicit values for symbols and concrete sizes.

    rowmax(S) supplies the row shift; by default fresh symbols m_i (any shift), so results
    that do not depend on it are proved shift-invariant at the same time.
    """

    def __init__(self, env: dict, sizes: dict, rowmax=None, exp=sp.exp):
        self.env = dict(env)
        self.sizes = sizes
        self.rowmax = rowmax or (lambda S: sp.Matrix(S.rows, 1, lambda i, _: sp.Symbol(f"m_{i}", real=True)))
        self.exp = exp

    def run(self, derivation, names=None, given=()) -> dict:
        """Evaluate the steps `names` need; steps named in `given` keep the values in env."""
        steps = derivation.needed(names, given) if names else derivation.steps
        for s in steps:
            if s.name not in given:
                self.env[s.name] = self(s.expr)
        return self.env

    def _shape(self, M):
        return tuple(int(sp.sympify(n).subs(self.sizes)) for n in M.shape)

    def __call__(self, e):  # noqa: C901 - one dispatch table
        if isinstance(e, sp.MatrixSymbol) or isinstance(e, sp.Symbol):
            return self.env.get(e.name, e)
        if isinstance(e, sp.OneMatrix):
            return sp.ones(*self._shape(e))
        if isinstance(e, sp.Identity):
            return sp.eye(self._shape(e)[0])
        if isinstance(e, sp.MatMul) or isinstance(e, sp.Mul):
            out = sp.S.One
            for a in e.args:
                v = self(a)
                out = v * out if (not _explicit(out) and _explicit(v)) else out * v
            return out
        if isinstance(e, (sp.MatAdd, sp.Add)):
            vals = [self(a) for a in e.args]
            out = vals[0]
            for v in vals[1:]:
                out = out + v
            return out
        if isinstance(e, sp.Transpose):
            return self(e.arg).T
        if isinstance(e, sp.HadamardProduct):
            vals = [self(a) for a in e.args]
            out = vals[0]
            for v in vals[1:]:
                out = out.multiply_elementwise(v)
            return out
        if isinstance(e, ElementwiseApplyFunction):
            f = self.exp if e.function(sp.Symbol("t")) == sp.exp(sp.Symbol("t")) else e.function
            return self(e.expr).applyfunc(f)
        if isinstance(e, sp.Inverse) and isinstance(e.arg, DiagMatrix):
            v = self(e.arg.args[0])
            return sp.diag(*[1 / x for x in v])
        if isinstance(e, DiagMatrix):
            return sp.diag(*list(self(e.args[0])))
        if isinstance(e, RowMax):  # any shift is valid, the floor included
            return self.rowmax(self(e.arg))
        if isinstance(e, Fill):
            return sp.ones(*self._shape(e)) * self(e.value)
        if isinstance(e, FaceSplit):
            A, B = (self(a) for a in e.args)
            return sp.Matrix(A.rows, A.cols * B.cols, lambda i, j: A[i, j // B.cols] * B[i, j % B.cols])
        if isinstance(e, HStack):
            return sp.Matrix.hstack(*(self(b) for b in e.args))
        if isinstance(e, ColSlice):
            start, stop = (int(sp.sympify(x).subs(self.sizes)) for x in e.args[1:])
            return self(e.args[0])[:, start:stop]
        if isinstance(e, FaceContract):
            c, T = (self(a) for a in e.args)
            w = T.cols // c.cols
            return sp.Matrix(c.rows, w, lambda i, f: sum(c[i, b] * T[i, b * w + f] for b in range(c.cols)))
        if isinstance(e, RowDot):
            A, B = (self(a) for a in e.args)
            return sp.Matrix(A.rows, 1, lambda i, _: sum(A[i, k] * B[i, k] for k in range(A.cols)))
        if isinstance(e, sp.Trace):
            return self(e.arg).trace()
        if isinstance(e, sp.MatPow):
            return self(e.base) ** int(e.exp)
        if isinstance(e, sp.Pow):
            return self(e.base) ** self(e.exp)
        if e.is_Number:
            return e
        raise NotImplementedError(f"explicit evaluation of {type(e).__name__}: {e}")


def _explicit(v) -> bool:
    return isinstance(v, sp.MatrixBase)
