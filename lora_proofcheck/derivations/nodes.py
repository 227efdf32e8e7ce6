"""Matrix-expression building blocks SymPy lacks, and a derivation as a list of named steps.

A `Derivation` is straight-line code: each step defines one named matrix (the paper's u, alpha,
f, c, ...) from the inputs and earlier steps. Codegen prints the steps in order, so the
contraction order in the kernels is the one written (and proved) here, never one SymPy picks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import sympy as sp
from sympy.matrices.expressions import MatrixExpr
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.matrices.expressions.diagonal import DiagMatrix

__all__ = ["ColSlice", "Derivation", "FaceContract", "FaceSplit", "Fill", "HStack", "RowDot", "RowMax", "Step",
           "divide_rows", "exp_elementwise", "frobenius_half", "ones", "rowsum", "scale_rows"]


class RowMax(MatrixExpr):
    """max(max_j M_ij, floor) as a column: the shift that keeps exp finite (any shift gives the same
    softmax); the optional scalar `floor` keeps a Softmax_1 sink term e^(log n - m) at most 1 too."""

    def __new__(cls, arg, floor=None):
        return super().__new__(cls, arg) if floor is None else super().__new__(cls, arg, sp.sympify(floor))

    @property
    def arg(self):
        return self.args[0]

    @property
    def floor(self):
        return self.args[1] if len(self.args) > 1 else None

    @property
    def shape(self):
        return (self.arg.shape[0], sp.S.One)


class Fill(MatrixExpr):
    """The rows x cols matrix with every entry the scalar `value` (printed as the broadcast scalar)."""

    def __new__(cls, value, rows, cols=1):
        return super().__new__(cls, sp.sympify(value), sp.sympify(rows), sp.sympify(cols))

    @property
    def value(self):
        return self.args[0]

    @property
    def shape(self):
        return (self.args[1], self.args[2])

    def _latex(self, printer):
        return r"%s \mathbb{1}" % printer.parenthesize(self.value, 60)


class FaceSplit(MatrixExpr):
    """Row-wise Kronecker (face-splitting) product: (A ⊘ B)[i, a*k_B + b] = A[i, a] * B[i, b]."""

    def __new__(cls, A, B):
        return super().__new__(cls, A, B)

    @property
    def shape(self):
        A, B = self.args
        return (A.shape[0], A.shape[1] * B.shape[1])

    def _latex(self, printer):
        return r" \oslash ".join(printer.parenthesize(a, 60) for a in self.args)


class RowDot(MatrixExpr):
    """Row-wise inner products as a column: RowDot(A, B)[i] = <A[i, :], B[i, :]>."""

    def __new__(cls, A, B):
        return super().__new__(cls, A, B)

    @property
    def shape(self):
        return (self.args[0].shape[0], sp.S.One)

    def _latex(self, printer):
        return r"\operatorname{rowdot}\left(%s, %s\right)" % tuple(printer._print(a) for a in self.args)


class HStack(MatrixExpr):
    """[A | B | ...]: the blocks side by side (same rows). One wide operand for one GEMM."""

    def __new__(cls, *blocks):
        return super().__new__(cls, *blocks)

    @property
    def shape(self):
        return (self.args[0].shape[0], sp.Add(*(b.shape[1] for b in self.args)))

    def _latex(self, printer):
        return r"\left[%s\right]" % r" \mid ".join(printer._print(b) for b in self.args)


class ColSlice(MatrixExpr):
    """Columns start .. stop-1 of M (a view): one block of an HStack's product."""

    def __new__(cls, M, start, stop):
        return super().__new__(cls, M, sp.sympify(start), sp.sympify(stop))

    @property
    def shape(self):
        M, start, stop = self.args
        return (M.shape[0], stop - start)

    def _latex(self, printer):
        M, start, stop = (printer._print(a) for a in self.args)
        return r"{%s}_{[:,\, %s:%s]}" % (M, start, stop)


class FaceContract(MatrixExpr):
    """Row-wise contraction with a face-split block: FaceContract(c, T)[i, f] = sum_b c[i, b] T[i, b e + f]
    for c (n x d), T (n x d e).  It undoes a face split: (A ⊘ c) M = FaceContract(c, A M') with
    M'[a, b e + f] = M[a d + b, f], so (U ⊘ c)(V ⊘ C)^T D = FaceContract(c, U (V^T (C ⊘ D)))."""

    def __new__(cls, c, T):
        return super().__new__(cls, c, T)

    @property
    def shape(self):
        c, T = self.args
        return (c.shape[0], T.shape[1] / c.shape[1])


def ones(n, m=1):
    return sp.OneMatrix(n, m)


def rowsum(M):
    """M 1 (row sums) as a column."""
    return M * ones(M.shape[1])


def exp_elementwise(M):
    return ElementwiseApplyFunction(sp.exp, M)


def scale_rows(v, M):
    """diag(v) M."""
    return DiagMatrix(v) * M


def divide_rows(M, v):
    """diag(v)^{-1} M."""
    return sp.Inverse(DiagMatrix(v)) * M


def frobenius_half(M):
    """(1/2) ||M||_F^2 = (1/2) tr(M^T M)."""
    return sp.Trace(M.T * M) / 2


@dataclass(frozen=True)
class Step:
    name: str
    expr: sp.Basic
    paper: str = ""


@dataclass
class Derivation:
    """Named inputs and straight-line steps; `outputs` maps output names to step names."""

    name: str
    inputs: list
    steps: list = field(default_factory=list)
    source: str = ""  # the module that builds it (named in the generated records)

    def let(self, name: str, expr, paper: str = ""):
        """Append a step and return the symbol that stands for it in later steps."""
        if any(s.name == name for s in self.steps) or any(str(i) == name for i in self.inputs):
            raise ValueError(f"duplicate step name {name}")
        self.steps.append(Step(name, expr, paper))
        if getattr(expr, "is_Matrix", False) or isinstance(expr, MatrixExpr):
            return sp.MatrixSymbol(name, *expr.shape)
        return sp.Symbol(name)

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def needed(self, outputs, given=()) -> list:
        """The steps `outputs` depend on, in order (dead steps dropped; `given` ones are leaves)."""
        want = set(outputs)
        keep = []
        for s in reversed(self.steps):
            if s.name in want:
                keep.append(s)
                if s.name not in given:
                    want |= {str(a) for a in s.expr.atoms(sp.MatrixSymbol, sp.Symbol)}
        return keep[::-1]

    def expand(self, name: str):
        """The full expression of a step in the inputs alone (for display and LaTeX)."""
        expr = self.step(name).expr
        for s in reversed(self.steps[: self.steps.index(self.step(name))]):
            expr = expr.xreplace({sp.MatrixSymbol(s.name, *s.expr.shape) if _is_matrix(s.expr)
                                  else sp.Symbol(s.name): s.expr})
        return expr

    def source_text(self) -> str:
        """A canonical text of the derivation (dummy-free), the input of its hash."""
        lines = [f"derivation {self.name}"]
        lines += [f"input {sp.sstr(i)} {getattr(i, 'shape', ())}" for i in self.inputs]
        lines += [f"{s.name} = {sp.sstr(s.expr)}" for s in self.steps]
        return "\n".join(lines)

    def digest(self) -> str:
        return hashlib.sha256(self.source_text().encode()).hexdigest()


def _is_matrix(expr) -> bool:
    return getattr(expr, "is_Matrix", False) or isinstance(expr, MatrixExpr)
