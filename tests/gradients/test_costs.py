"""The cost model: flop formulas read off the derivations (leading terms, a hand count), the functions
evaluating them, and their argument checks."""

from __future__ import annotations

import pytest
import sympy as sp

from lora_proofcheck import InvalidInputError, InvalidTypeError
from lora_proofcheck.derivations import decomposition, lowrank_chain
from lora_proofcheck.gradients import costs


def test_flop_formulas_have_the_expected_leading_terms():
    L, L_kv, d, k = decomposition.L, decomposition.L_kv, decomposition.d, lowrank_chain.k
    outs = ("loss", "dW_Q", "dW_K", "dW_V")
    fe = costs.flops_formula(decomposition.build(), outs)
    # six L x L_kv x d products (S, O, G, pC2, pTC1, FTc) and nine elementwise L x L_kv passes
    assert fe.coeff(L * L_kv * d) == 12 and fe.coeff(L * L_kv).subs(d, 0) == 9
    fl = sp.expand(costs.flops_formula(lowrank_chain.build(), outs))
    # four GEMMs with the features, k x (1 + 2d + d^2) and k x (d^2 + 2d) on each side
    assert fl.coeff(L * k * d**2) == 4 and fl.coeff(L_kv * k * d**2) == 4
    assert fl.coeff(L * k * d) == 8 and fl.coeff(L_kv * k * d) == 8 and fl.coeff(L * k).subs(d, 0) == 2
    assert sp.Poly(fl, L, L_kv).total_degree() == 1  # linear in the sequence lengths
    assert sp.Poly(fe, L, L_kv).total_degree() == 2


def test_flop_formula_matches_a_hand_count():
    """lowrank_gradients_V, step by step: C3 2 L'd^2, Z2 = [1 | C3] 0, Vq = U2^T Z2 2kL'(1 + d),
    T = U1 Vq 2Lk(1 + d), alpha = T[:, :1] + n L, T[:, 1:]/alpha Ld, c Ld, loss 2Ld + 1, Z1 = c/alpha Ld,
    Vk = U1^T Z1 2kLd, Tk = U2 Vk 2L'kd, dW_V = X'^T Tk 2dL'd."""
    L, L_kv, d, k = decomposition.L, decomposition.L_kv, decomposition.d, lowrank_chain.k
    hand = (2 * L_kv * d**2 + 2 * k * L_kv * (1 + d) + 2 * L * k * (1 + d) + L + L * d + L * d + 2 * L * d + 1
            + L * d + 2 * k * L * d + 2 * L_kv * k * d + 2 * d * L_kv * d)
    assert sp.expand(costs.flops_formula(lowrank_chain.build("V"), ("loss", "dW_V")) - hand) == 0


def test_cost_functions_evaluate_the_formulas():
    assert costs.exact_flops(64, 48, 4, "QK", N=3) == 3 * costs.exact_flops(64, 48, 4, "KQ")
    f = costs.lowrank_flops
    # at L = 4096, d = 8 the chain is cheaper than exact at degree 3 (k = 165), dearer at 5 (k = 1287)
    exact_4096 = costs.exact_flops(4096, 4096, 8, "QKV")
    assert f(4096, 4096, 8, 165, "QKV") < exact_4096 < f(4096, 4096, 8, 1287, "QKV")
    steps = [f(L, 500, 8, 45, "QKV") for L in (1000, 2000, 3000)]
    assert steps[2] - steps[1] == steps[1] - steps[0]  # linear in L
    assert costs.lowrank_bytes(8192, 8192, 8, 165, "QKV") < costs.exact_bytes(8192, 8192, 8, "QKV") / 50
    b = costs.lowrank_bytes
    assert 2 * b(100, 100, 4, 15, "Q", itemsize=4) == b(100, 100, 4, 15, "Q")
    assert costs.feature_flops(10, 10, 2, 2) == 2 * 20 * 4 + 20 + 20 * 11


@pytest.mark.parametrize("call, exc, word", [
    (lambda: costs.lowrank_flops(0, 4, 4, 4, "Q"), InvalidInputError, "L"),
    (lambda: costs.lowrank_flops(4, 4, 4, 2.5, "Q"), InvalidTypeError, "k"),
    (lambda: costs.exact_flops(4, 4, 4, "QX"), InvalidInputError, "modules"),
    (lambda: costs.exact_flops(4, 4, 4, ["Q"]), InvalidTypeError, "modules"),
    (lambda: costs.lowrank_bytes(4, 4, 4, 4, "Q", N=True), InvalidTypeError, "N"),
])
def test_cost_input_validation(call, exc, word):
    with pytest.raises(exc, match=word):
        call()

