"""Why an exact proof at ONE small size proves an identity for EVERY size, and which size suffices.

The proofs (`decomposition_proofs`, `lowrank_proofs`) expand "brute force - closed form" to exactly 0
on explicit matrices of symbols, at one size (L query rows, L_kv key rows, model dimension d,
adapter rank r, feature rank k). An identity that holds at one size need not hold at the next:
M^2 - tr(M) M + det(M) I is 0 for every 2 x 2 matrix (Cayley-Hamilton) and not for 3 x 3 ones, so a
wrong gradient "plus a Cayley-Hamilton term" passes every proof run at d = 2. This module states
and proves when a check at one size lifts to all sizes, and computes that size from the expressions
themselves (`IndexCounter`, `required_sizes`), from BOTH sides of each identity: a wrong closed form
whose extra term needs more indices is then checked at a size where that term does not vanish.

The idea in one sentence: every entry of these expressions is a sum over index variables, and a
single monomial only ever mentions a bounded number of distinct index values of each kind (its
"count"); zeroing every input entry outside a set of that many values maps the big identity onto the
small one, so if every coefficient vanishes at the small size it vanishes at every size.

Definitions
-----------
* Sorts: the kinds of index, q (query rows, L), kv (key rows, L_kv), d, r and k. A size n gives
  every sort s a value n_s >= 1.
* Einsum family: D = (D_n) is given by finitely many terms; each term is a coefficient times a
  product of input entries v[i_1, .., i_a], whose index variables have sorts and are either output
  indices of the entry or summed over [n_s]. D_n[o] is the same formula at every size. Matrix
  products, transposes, Hadamard and face-splitting products, row sums, traces, diag, Kronecker
  deltas (identity matrices), broadcast scalars (`Fill`) and the column blocks of HStacks are such
  formulas (a block's column index may be a tuple of sorts: the face split C3 ⊘ C2 has index (d, d)),
  under two conditions:
    - no bare sums: every summed index occurs in an input entry of its term (1^T 1 = n is not one);
    - aligned slices: every ColSlice cuts an HStack at a block boundary AS A POLYNOMIAL IN THE SIZES
      (checked symbolically: ColSlice(T, 2d, 4d) of blocks [0, d, 2d, 2d + d^2) is refused for every
      d, although 4d = 2d + d^2 at d = 2).
* Counts: t_s is the largest number of index variables of sort s in one term (outputs included).

Theorem 1 (polynomial identities). If D is an einsum family of polynomials and D_t == 0 at the size
t = (t_s), then D_n == 0 at every size n.

Proof. (a) Restriction. For J_s ⊆ [n_s] with |J_s| = m_s, let rho_J set to 0 every input entry with
an index outside J. Split every sum into J and its complement: each term with a summed index outside
J contains an entry with that index (no bare sums) and dies, so rho_J(D_n[o]) = D_m[pi(o)] for o in J
(pi: J -> [m] order-preserving). (b) Monomials. A monomial M of D_n[o] comes from one term by giving
values to its index variables, so its index values of sort s, with o's, form a set I_s of size
<= t_s. Take J_s ⊇ I_s with |J_s| = min(t_s, n_s). rho_J kills exactly the monomials that contain a
killed entry, so the coefficient of M in D_n[o] equals its coefficient in rho_J(D_n[o]) =
D_m[pi(o)], m = min(t, n). (c) D_m with m <= t is itself rho_[m](D_t) by (a), hence 0; so every
coefficient of D_n is 0.                                                                          ∎

The softmax makes the identities rational. The proofs free exp(S_ij) to a positive symbol E_ij
(stronger than needed); the Softmax_1 offset n is a free positive scalar (a polynomial variable
with no index; n = 0 is softmax, see `decomposition_proofs`), and the only denominators are the
normalisers alpha_i = n + sum_j E_ij. Restriction cannot delete a query row there (a row's
normaliser cannot be 0), nor be applied to the eliminated form the proofs decide (there E_i0 =
alpha_i - n - sum_{k>0} E_ik brings in a fresh key index, inflating the counts), so the lifting is
done on the denominator-cleared polynomial, and query rows are handled by separability:

Theorem 2 (softmax-normalised identities). Let D's terms be products of entries (E among them) and
of powers alpha_i^-1, and let every term have at most one query index variable (so all of its
alpha's are alpha_i of that one i: q-count <= 1). Let t_s (s != kv) be as above, t'_kv the largest
(number of kv index variables - power of 1/alpha) of a term, and e the largest power of 1/alpha. If
D == 0 as a rational function at L = 1 (and also at L = 2 if some term of an entry without a query
output index has no query index at all) with L_kv = t'_kv + e and n_s = t_s for the other sorts,
then D == 0 at every size.

Proof. (Rows) Write v_i for row i's entries (E_i., X_i., Y_i., ...) and w for the rest. An entry
with query output index i is phi(v_i, w); an entry without one is sum_i phi(v_i, w) + psi(w), where
phi, psi are the same rational functions for every i and every L (one query index per term). L = 1
gives phi + psi == 0, which for the first kind of entry is phi == 0; if psi's terms exist, L = 2 also
gives 2 phi + psi == 0, so phi == psi == 0. Either way D == 0 for every L. (Keys) At L = 1, N :=
alpha_0^e D is an einsum polynomial once alpha_0 = n + sum_j E_0j is expanded: each of the e - q(T)
padding factors of a term T is n (no index) or E_0j (one kv index, carried by E), so N's kv-count is
<= t'_kv + e and its other counts are D's. N == 0 iff D == 0, and Theorem 1 applies to N.          ∎

How the check at that size is decided: as before. E_i0 -> alpha_i - n - sum_{k>0} E_ik is an
invertible change of variables, after which D is a Laurent polynomial and `expand` is canonical;
the elimination is only the decision procedure at the fixed size, the lifting is done on N (never
formed). Derivatives: a monomial of d ell/d theta[iota] is M/theta[iota] for a monomial M of ell
that contains theta[iota], so the brute-force side has at most ell's counts (iota's indices are
M's); E_ij d ell/d E_ij (the derivative in S_ij) keeps t'_kv and raises e by one. Self-attention is
the substitution X' := X in identities proved for independent X and X', so it needs no count.

The counter. `IndexCounter` interprets the same matrix expressions as the `Interpreter`, but on
abstract values: per column block of an entry, the largest count per sort over the block's terms
(an upper bound: a product adds its factors' counts and subtracts the shared contraction indices,
which is all the theorems need), the largest power of the tied 1/alpha, the least number of query
index variables in a term, which indices occur in an input entry (the bare-sum check) and a tag
(E, a row sum of E, the offset column n 1, a normaliser, ones, an identity, zero). It refuses with
`NotNatural` a ColSlice off a block boundary, a bare sum, and a division by anything but a free
input or a softmax normaliser (n 1 + E 1). It evaluates a RowMax as 0, as the proofs do (the shift
is proved irrelevant separately), and names E only as exp of the (q, kv) logits or an input tagged
`exp_of_logits()`.

Example: dL/dW_Q's closed form beta X^T p C2 at a free P has terms X[i, a] P[i, j] X'[j, b] W_K[b, c]
... with three d indices (a, b and the output's c), so d = 3 suffices, while the Cayley-Hamilton
term M^2 - tr(M) M + det(M) I of W_K also has three: the check at d = 3 sees it (it is not 0 there).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.matrices.expressions.diagonal import DiagMatrix

from ..errors import ProofcheckError
from .nodes import ColSlice, FaceContract, FaceSplit, Fill, HStack, RowDot, RowMax

__all__ = ["QUERY", "TIED", "Abs", "Block", "IndexCounter", "NotNatural", "Sizes", "derivative", "exp_of_logits",
           "identity", "required_sizes", "scalar_variable", "variable"]

TIED = "kv"  # the sort of the softmax's key index (alpha_i sums over it)
QUERY = "q"
#: tags a normaliser alpha_i = n + sum_j E_ij may carry (the tied 1/alpha of Theorem 2)
NORMALISERS = ("rowsumE", "normaliser")


class NotNatural(ProofcheckError):
    """An expression is not an einsum family (a misaligned slice, a bare sum, a division by a sum that
    is not a softmax normaliser): no small size proves it for all sizes."""


def _add(*counts):
    out = {}
    for c in counts:
        for s, n in c.items():
            out[s] = out.get(s, 0) + n
    return out


def _sub(count, sorts):
    out = dict(count)
    for s in sorts:
        out[s] = out.get(s, 0) - 1
    return out


def _max(a, b):
    return {s: max(a.get(s, -10**9), b.get(s, -10**9)) for s in set(a) | set(b)}


def _of(sorts):
    out = {}
    for s in sorts:
        out[s] = out.get(s, 0) + 1
    return out


@dataclass(frozen=True)
class Block:
    """One column block of an abstract matrix: what every entry of the block is made of."""

    cols: tuple  # sorts of the column index components
    count: dict  # sort -> max index variables per term (the TIED sort: minus the power of 1/alpha)
    e: int = 0  # max power of the tied 1/alpha
    qmin: int = 0  # least number of query index variables in a term
    rows_carried: tuple = ()  # does an input entry of every term carry each row index component?
    cols_carried: tuple = ()
    tag: str | None = None  # "E", "ones", "rowsumE", "offset", "normaliser", "I", "zero", "var"


@dataclass(frozen=True)
class Abs:
    """An abstract matrix: its row sorts and its column blocks."""

    rows: tuple
    blocks: tuple

    @property
    def block(self) -> Block:
        if len(self.blocks) != 1:
            raise NotNatural("an operation needs a single column block here")
        return self.blocks[0]

    @property
    def is_scalar(self) -> bool:
        return self.rows == () and len(self.blocks) == 1 and self.blocks[0].cols == ()


def variable(rows, cols=(), tag="var") -> Abs:
    """A free input matrix whose rows and columns have the given sorts."""
    rows, cols = tuple(rows), tuple(cols)
    return Abs(rows, (Block(cols, _of(rows + cols), 0, (rows + cols).count(QUERY),
                            (True,) * len(rows), (True,) * len(cols), tag),))


def scalar_variable() -> Abs:
    """A free scalar input (beta, the LoRA scale, the offset n or log n)."""
    return Abs((), (Block((), {}, 0, 0, (), (), "var"),))


SCALAR_ONE = Abs((), (Block((), {}, 0, 0, (), (), None),))


def identity(sort) -> Abs:
    return Abs((sort,), (Block((sort,), {sort: 1}, 0, int(sort == QUERY), (False,), (False,), "I"),))


def exp_of_logits() -> Abs:
    """E = exp(S) freed: an input entry E_ij of sorts (q, kv)."""
    return Abs((QUERY,), (Block((TIED,), {QUERY: 1, TIED: 1}, 0, 1, (True,), (True,), "E"),))


def _contract(a: Block, b: Block, shared) -> Block:
    for i, s in enumerate(shared):
        if not (a.cols_carried[i] or b.rows_carried[i]):
            raise NotNatural(f"bare sum over a {s} index (no input entry carries it)")
    tag = "rowsumE" if a.tag == "E" and b.tag == "ones" else None
    return Block(b.cols, _sub(_add(a.count, b.count), shared), a.e + b.e, max(a.qmin, b.qmin),
                 a.rows_carried, b.cols_carried, tag)


def _scale(s: Block, m: Block) -> Block:
    tag = "zero" if "zero" in (s.tag, m.tag) else None
    return replace(m, count=_add(s.count, m.count), e=s.e + m.e, qmin=max(s.qmin, m.qmin), tag=tag)


def matmul(A: Abs, B: Abs) -> Abs:
    if A.is_scalar and not B.is_scalar:
        return Abs(B.rows, tuple(_scale(A.block, b) for b in B.blocks))
    if B.is_scalar and not A.is_scalar:
        return Abs(A.rows, tuple(_scale(B.block, b) for b in A.blocks))
    if A.is_scalar and B.is_scalar:
        return Abs((), (_scale(A.block, B.block),))
    a = A.block
    if a.tag == "zero" or any(b.tag == "zero" for b in B.blocks):
        return Abs(A.rows, tuple(replace(b, tag="zero") for b in B.blocks))
    if a.cols != B.rows:
        raise NotNatural(f"contraction of {a.cols} with {B.rows}")
    if a.tag == "I":
        return Abs(A.rows, B.blocks)
    out = []
    for b in B.blocks:
        if b.tag == "I":
            out.append(replace(a, cols=b.cols))
            continue
        out.append(_contract(a, b, a.cols))
    return Abs(A.rows, tuple(out))


def _sum_tag(a: Block, b: Block):
    """A softmax normaliser n 1 + E 1 (either order) keeps a tag: it may be divided by (Theorem 2)."""
    tags = {a.tag, b.tag}
    if tags == {"rowsumE", "offset"}:
        return "normaliser"
    return None


def add(A: Abs, B: Abs) -> Abs:
    if all(b.tag == "zero" for b in A.blocks):
        return B
    if all(b.tag == "zero" for b in B.blocks):
        return A
    if A.rows != B.rows or len(A.blocks) != len(B.blocks):
        raise NotNatural("sum of differently shaped operands")
    out = []
    for a, b in zip(A.blocks, B.blocks):
        if a.cols != b.cols:
            raise NotNatural("sum of differently shaped blocks")
        out.append(Block(a.cols, _max(a.count, b.count), max(a.e, b.e), min(a.qmin, b.qmin),
                         tuple(x and y for x, y in zip(a.rows_carried, b.rows_carried)),
                         tuple(x and y for x, y in zip(a.cols_carried, b.cols_carried)), _sum_tag(a, b)))
    return Abs(A.rows, tuple(out))


def transpose(A: Abs) -> Abs:
    a = A.block
    return Abs(a.cols, (replace(a, cols=A.rows, rows_carried=a.cols_carried, cols_carried=a.rows_carried),))


def hadamard(A: Abs, B: Abs) -> Abs:
    a, b = A.block, B.block
    if A.rows != B.rows or a.cols != b.cols:
        raise NotNatural("Hadamard product of differently shaped operands")
    return Abs(A.rows, (Block(a.cols, _sub(_add(a.count, b.count), A.rows + a.cols), a.e + b.e,
                              max(a.qmin, b.qmin),
                              tuple(x or y for x, y in zip(a.rows_carried, b.rows_carried)),
                              tuple(x or y for x, y in zip(a.cols_carried, b.cols_carried)), None),))


def face_split(A: Abs, B: Abs) -> Abs:
    a, b = A.block, B.block
    if A.rows != B.rows:
        raise NotNatural("face split of operands with different rows")
    return Abs(A.rows, (Block(a.cols + b.cols, _sub(_add(a.count, b.count), A.rows), a.e + b.e,
                              max(a.qmin, b.qmin),
                              tuple(x or y for x, y in zip(a.rows_carried, b.rows_carried)),
                              a.cols_carried + b.cols_carried, None),))


def face_contract(C: Abs, T: Abs) -> Abs:
    c, t = C.block, T.block
    n = len(c.cols)
    if C.rows != T.rows or t.cols[:n] != c.cols:
        raise NotNatural(f"FaceContract of {c.cols} with a block of index {t.cols}")
    for i, s in enumerate(c.cols):
        if not (c.cols_carried[i] or t.cols_carried[i]):
            raise NotNatural(f"bare sum over a {s} index in FaceContract")
    return Abs(C.rows, (Block(t.cols[n:], _sub(_add(c.count, t.count), C.rows + c.cols), c.e + t.e,
                              max(c.qmin, t.qmin),
                              tuple(x or y for x, y in zip(c.rows_carried, t.rows_carried)),
                              t.cols_carried[n:], None),))


def row_dot(A: Abs, B: Abs) -> Abs:
    h = hadamard(A, B).block
    for i, s in enumerate(h.cols):
        if not h.cols_carried[i]:
            raise NotNatural(f"bare sum over a {s} index in RowDot")
    return Abs(A.rows, (replace(h, cols=(), cols_carried=()),))


def trace(A: Abs) -> Abs:
    a = A.block
    if a.cols != A.rows:
        raise NotNatural("trace of a non-square operand")
    for i, s in enumerate(a.cols):
        if not (a.cols_carried[i] or a.rows_carried[i]):
            raise NotNatural(f"bare sum over a {s} index in a trace")
    return Abs((), (Block((), _sub(a.count, a.cols), a.e, a.qmin, (), (), None),))


def power(A: Abs, n: int) -> Abs:
    if not A.is_scalar or n < 0:
        raise NotNatural("only non-negative integer powers of scalars are einsum terms")
    out = SCALAR_ONE
    for _ in range(n):
        out = matmul(out, A)
    return out


def inverse_diag(v: Abs) -> Abs:
    b = v.block
    if b.cols != () or v.rows != (QUERY,):
        raise NotNatural("1/alpha of something other than a query-row column")
    if b.tag in NORMALISERS:  # a softmax normaliser: a tied 1/alpha_i (diag: its two indices are one)
        return Abs(v.rows, (Block(v.rows, {QUERY: 1, TIED: -1}, b.e + 1, 1, (True,), (True,), None),))
    if b.tag == "var":  # a free input alpha: 1/alpha_i is a free variable b_i (a polynomial ring)
        return diag(v)
    raise NotNatural("division by an expression that is neither a free input nor a softmax normaliser")


def diag(v: Abs) -> Abs:
    b = v.block
    if b.cols != ():
        raise NotNatural("diag of a non-column")
    return Abs(v.rows, (replace(b, cols=v.rows, cols_carried=b.rows_carried, tag=None),))


def fill(value: Abs, rows, cols) -> Abs:
    """The scalar `value` broadcast to rows x cols: its indices are output indices no entry carries.
    A free scalar broadcast to a query column is the Softmax_1 offset column n 1 (tag "offset")."""
    if not value.is_scalar:
        raise NotNatural("Fill of a non-scalar")
    b = value.block
    tag = "offset" if b.tag == "var" and rows == (QUERY,) and cols == () else ("zero" if b.tag == "zero" else None)
    return Abs(rows, (Block(cols, _add(b.count, _of(rows + cols)), b.e, b.qmin + (rows + cols).count(QUERY),
                            (False,) * len(rows), (False,) * len(cols), tag),))


@dataclass
class IndexCounter:
    """Abstract interpreter: `env` maps input / given step names to `Abs` values, `sorts` maps the
    derivations' size symbols (L, L_kv, d, r, k, ...) to sort names."""

    env: dict
    sorts: dict
    trace_steps: dict = field(default_factory=dict)

    def run(self, derivation, names, given=()) -> dict:
        for s in derivation.needed(names, given):
            if s.name not in given:
                self.env[s.name] = self(s.expr)
        return self.env

    def _sorts_of(self, n):
        n = sp.sympify(n)
        if n == 1:
            return ()
        if n in self.sorts:
            return (self.sorts[n],)
        raise NotNatural(f"a dimension {n} that is not a single sort")

    def _block_size(self, cols):
        inv = {s: sym for sym, s in self.sorts.items()}
        out = sp.S.One
        for s in cols:
            out *= inv[s]
        return out

    def __call__(self, e):  # noqa: C901 - one dispatch table, as the Interpreter's
        if isinstance(e, (sp.MatrixSymbol, sp.Symbol)):
            if e.name not in self.env:
                raise NotNatural(f"no sorts declared for input {e.name}")
            return self.env[e.name]
        if isinstance(e, sp.OneMatrix):
            rows, cols = self._sorts_of(e.shape[0]), self._sorts_of(e.shape[1])
            return Abs(rows, (Block(cols, _of(rows + cols), 0, (rows + cols).count(QUERY),
                                    (False,) * len(rows), (False,) * len(cols), "ones"),))
        if isinstance(e, sp.Identity):
            return identity(self._sorts_of(e.shape[0])[0])
        if isinstance(e, (sp.MatMul, sp.Mul)):
            args = list(e.args)
            out = self(args[0])
            for a in args[1:]:
                out = matmul(out, self(a))
            return out
        if isinstance(e, (sp.MatAdd, sp.Add)):
            vals = [self(a) for a in e.args]
            out = vals[0]
            for v in vals[1:]:
                out = add(out, v)
            return out
        if isinstance(e, sp.Transpose):
            return transpose(self(e.arg))
        if isinstance(e, sp.HadamardProduct):
            vals = [self(a) for a in e.args]
            out = vals[0]
            for v in vals[1:]:
                out = hadamard(out, v)
            return out
        if isinstance(e, ElementwiseApplyFunction):
            if e.function(sp.Symbol("t")) != sp.exp(sp.Symbol("t")):
                raise NotNatural(f"elementwise {e.function}")
            arg = self(e.expr)
            if arg.rows == (QUERY,) and arg.block.cols == (TIED,):
                return exp_of_logits()
            if arg.rows == (TIED,) and arg.block.cols == (QUERY,):  # SymPy writes exp(S)^T as exp(S^T)
                return transpose(exp_of_logits())
            if arg.block.tag == "offset":  # e^(log n - 0) = n: the proofs free n as a positive scalar
                return arg
            raise NotNatural("exp of something other than the (q, kv) logits or the offset log n")
        if isinstance(e, sp.Inverse) and isinstance(e.arg, DiagMatrix):
            return inverse_diag(self(e.arg.args[0]))
        if isinstance(e, DiagMatrix):
            return diag(self(e.args[0]))
        if isinstance(e, RowMax):  # the proofs evaluate the shift as 0 (shift invariance is separate)
            S = self(e.arg)
            return Abs(S.rows, (Block((), {}, 0, 0, (True,), (), "zero"),))
        if isinstance(e, Fill):
            return fill(self(e.value), self._sorts_of(e.shape[0]), self._sorts_of(e.shape[1]))
        if isinstance(e, FaceSplit):
            return face_split(*(self(a) for a in e.args))
        if isinstance(e, HStack):
            vals = [self(b) for b in e.args]
            if len({v.rows for v in vals}) != 1:
                raise NotNatural("HStack of blocks with different rows")
            return Abs(vals[0].rows, tuple(b for v in vals for b in v.blocks))
        if isinstance(e, ColSlice):
            M = self(e.args[0])
            start, stop = e.args[1:]
            offsets = [sp.S.Zero]
            for b in M.blocks:
                offsets.append(offsets[-1] + self._block_size(b.cols))
            at = lambda x: [i for i, o in enumerate(offsets) if sp.expand(o - x) == 0]  # noqa: E731
            i, j = at(start), at(stop)
            if not i or not j or j[0] <= i[0]:
                raise NotNatural(f"ColSlice [{start}, {stop}) does not cut its operand at block "
                                 f"boundaries {offsets} (as polynomials in the sizes)")
            return Abs(M.rows, M.blocks[i[0]:j[0]])
        if isinstance(e, FaceContract):
            return face_contract(*(self(a) for a in e.args))
        if isinstance(e, RowDot):
            return row_dot(*(self(a) for a in e.args))
        if isinstance(e, sp.Trace):
            return trace(self(e.arg))
        if isinstance(e, sp.MatPow):
            if not (e.exp.is_Integer and e.exp >= 1):
                raise NotNatural(f"matrix power {e}")
            M = self(e.base)
            out = M
            for _ in range(int(e.exp) - 1):
                out = matmul(out, M)
            return out
        if isinstance(e, sp.Pow):
            if not e.exp.is_Integer:
                raise NotNatural(f"power {e}")
            return power(self(e.base), int(e.exp))
        if e.is_Number:
            return SCALAR_ONE
        raise NotNatural(f"no index count for {type(e).__name__}: {e}")


def derivative(loss: Abs, *, in_exp: bool = False) -> Abs:
    """The brute-force side: d loss / d theta (any input entry) has at most the loss's counts;
    E_ij d loss / d E_ij (the derivative in the logit S_ij) also raises the 1/alpha power by one."""
    b = loss.block
    return Abs((), (replace(b, e=b.e + 1 if in_exp else b.e, tag=None),))


@dataclass(frozen=True)
class Sizes:
    """The size an identity must be checked at: `sizes` (sort -> n), `query_rows` (the L values to
    run under Theorem 2), whether Theorem 2 applies (`tied`), and the counts per output."""

    sizes: dict
    query_rows: tuple
    tied: bool
    counts: dict

    def describe(self) -> str:
        parts = [f"{s}={n}" for s, n in sorted(self.sizes.items()) if s != QUERY]
        rows = "/".join(map(str, self.query_rows)) if self.tied else str(self.sizes.get(QUERY, 1))
        return f"q={rows} " + " ".join(parts)

    def covers(self, ran: dict, query_rows=None) -> bool:
        """A check run at `ran` (sort -> n; `query_rows`: the L values run) is at least this size."""
        if any(ran.get(s, 1) < n for s, n in self.sizes.items() if s != QUERY or not self.tied):
            return False
        return not self.tied or set(self.query_rows) <= set(query_rows or (ran.get(QUERY, 1),))


def required_sizes(sides: dict, *, minimum: dict | None = None) -> Sizes:
    """`sides`: output name -> list of `Abs` values (the two sides of the identity for that output,
    e.g. brute force and closed form). Returns the size of Theorem 1, or of Theorem 2 when a term
    carries E or a tied 1/alpha."""
    tied = any(b.e > 0 or b.tag in ("E",) + NORMALISERS for vals in sides.values() for v in vals for b in v.blocks)
    sizes = dict(minimum or {})
    counts = {}
    query_rows = {1}
    for name, vals in sides.items():
        count, e, qmin, q_out = {}, 0, 10**9, False
        for v in vals:
            for b in v.blocks:
                if b.tag == "zero":
                    continue
                count = _max(count, b.count)
                e = max(e, b.e)
                qmin = min(qmin, b.qmin)
                q_out = q_out or QUERY in v.rows + b.cols
        need = {s: max(n, 1) for s, n in count.items()}
        if tied:
            need[TIED] = max(count.get(TIED, 0) + e, 1)
            if count.get(QUERY, 0) > 1:
                raise NotNatural(f"{name}: a term with {count[QUERY]} query indices (Theorem 2 needs <= 1)")
            if not q_out and qmin == 0:
                query_rows.add(2)
            need.pop(QUERY, None)
        counts[name] = need
        for s, n in need.items():
            sizes[s] = max(sizes.get(s, 1), n)
    sizes[QUERY] = 1 if tied else sizes.get(QUERY, 1)
    return Sizes(sizes, tuple(sorted(query_rows)), tied, counts)
