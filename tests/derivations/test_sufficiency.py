"""The index counter (`derivations.sufficiency`) against its definition: the largest number of distinct
index values of a sort in one monomial, brute-forced at a size above the count, is at most the count
(and attains it where the theorems need it), and what is no einsum family is refused."""

from __future__ import annotations

import itertools
import re

import pytest
import sympy as sp

from lora_proofcheck.derivations import decomposition
from lora_proofcheck.derivations import decomposition_proofs as dp
from lora_proofcheck.derivations import sufficiency as su
from lora_proofcheck.derivations.interpreter import Interpreter, symbol_matrix
from lora_proofcheck.derivations.negative_controls import cayley_hamilton_2
from lora_proofcheck.derivations.nodes import ColSlice, Fill, HStack, divide_rows, ones, rowsum


def _max_distinct(matrix, sorts_of, pattern=r"_(\d+)_(\d+)$"):
    """Largest number of distinct index values of each sort in one monomial of any entry (indices
    from symbol names name_i_j; `sorts_of(name)` gives the sorts of i and j)."""
    worst = {}
    for x in matrix:
        for term in sp.Add.make_args(sp.expand(x)):
            seen = {}
            for sym in term.free_symbols:
                m = re.search(pattern, sym.name)
                if not m:
                    continue
                for s, i in zip(sorts_of(sym.name), m.groups()):
                    if s:
                        seen.setdefault(s, set()).add(int(i))
            for s, idx in seen.items():
                worst[s] = max(worst.get(s, 0), len(idx))
    return worst


def test_counter_bounds_cayley_hamilton_monomials():
    M = symbol_matrix("m", 4, 4)
    t1, t2 = M.trace(), (M * M).trace()
    ch2 = M * M - t1 * M + (t1**2 - t2) / 2 * sp.eye(4)
    seen = _max_distinct(ch2, lambda n: ("d", "d"))
    W = sp.MatrixSymbol("W_K", decomposition.d, decomposition.d)
    count = su.IndexCounter({"W_K": su.variable(("d",), ("d",))}, dp.SORTS)(cayley_hamilton_2(W)).block.count
    assert seen["d"] <= count["d"] == 3
    assert seen["d"] == 3  # attained: CH_2 is not 0 at d = 3, so d = 3 is where a check sees it


@pytest.mark.parametrize("n", [0, 1])
def test_padded_softmax_identity_has_at_most_the_counted_key_indices(n):
    """Theorem 2's kv bound (t'_kv + e = 3 for p) against the definition: at L = 1, L_kv = 5 every
    monomial of alpha^3 p (alpha = n + sum_j E_j expanded; n = 0 and the Softmax_1 n = 1) has <= 3
    distinct key indices, and 3 occur."""
    L_kv, d = 5, 1
    E = sp.Matrix(1, L_kv, lambda i, j: sp.Symbol(f"E_{i}_{j}", positive=True))
    C3, Y = symbol_matrix("v", L_kv, d), symbol_matrix("y", 1, d)
    log_n = sp.log(sp.Integer(n)) if n else -sp.oo
    I = Interpreter({"u": E, "C3": C3, "Y": Y, "log_n": log_n, "m": sp.zeros(1, 1)},
                    {decomposition.L: 1, decomposition.L_kv: L_kv, decomposition.d: d})
    I.run(decomposition.build(), ["p"], given=("u", "C3", "m"))  # u = E unshifted (m = 0)
    alpha = sum(E) + n
    N = sp.Matrix(1, L_kv, lambda i, j: sp.cancel(I.env["p"][i, j] * alpha**3))
    seen = _max_distinct(N, lambda name: {"E": (None, "kv"), "v": ("kv", None)}.get(name[0], (None, None)))
    bound = dp.prove_p_is_dL_dS().data["counts"]["p"]["kv"]
    assert seen["kv"] == bound == 3


def test_offset_adds_no_index_and_keeps_the_normaliser():
    """n 1 + E 1 is a softmax normaliser (a tied 1/alpha); n 1 alone, or E 1 + X 1, is not one."""
    L, L_kv = decomposition.L, decomposition.L_kv
    Em, Xm = sp.MatrixSymbol("E", L, L_kv), sp.MatrixSymbol("X", L, L_kv)
    env = {"E": su.exp_of_logits(), "X": su.variable(("q",), ("kv",)), "n": su.scalar_variable()}
    C = su.IndexCounter(env, dp.SORTS)
    F = C(divide_rows(Em, rowsum(Em) + Fill(sp.Symbol("n"), L))).block
    assert (F.e, F.count) == (1, {"q": 1, "kv": 0})  # E_ij / alpha_i: one key index, one 1/alpha
    with pytest.raises(su.NotNatural, match="normaliser"):
        C(divide_rows(Em, rowsum(Em) + rowsum(Xm)))
    with pytest.raises(su.NotNatural, match="normaliser"):
        C(divide_rows(Em, Fill(sp.Symbol("n"), L) + Fill(sp.Symbol("n"), L)))


def test_counter_refuses_what_is_not_an_einsum():
    C = su.IndexCounter({"T": su.variable(("q",), ("d",)), "beta": su.scalar_variable()}, dp.SORTS)
    with pytest.raises(su.NotNatural, match="bare sum"):  # 1^T (beta 1) = beta L: no entry carries the sum
        C(ones(1, decomposition.L) * Fill(sp.Symbol("beta"), decomposition.L))
    T = sp.MatrixSymbol("T", decomposition.L, decomposition.d)
    H = HStack(T, T)
    with pytest.raises(su.NotNatural, match="block boundaries"):  # cuts a block
        C(ColSlice(H, 1, 2 * decomposition.d))
    assert len(C(ColSlice(H, decomposition.d, 2 * decomposition.d)).blocks) == 1


def test_sizes_cover():
    need = su.Sizes({"q": 1, "kv": 3, "d": 1}, (1, 2), True, {})
    assert need.covers({"kv": 3, "d": 2}, (1, 2)) and not need.covers({"kv": 3, "d": 2}, (1,))
    assert not need.covers({"kv": 2, "d": 5}, (1, 2))
    assert list(itertools.islice(iter(need.describe().split()), 1)) == ["q=1/2"]
