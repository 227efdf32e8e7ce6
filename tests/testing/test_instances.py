"""The shared test instances: every family reaches its logit bound, the edge family sits at both
ends of it, the noise knob moves rows and nothing else, bad arguments are clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import Phase, find, settings

from lora_proofcheck.certification import certificate as cm
from lora_proofcheck.errors import InvalidInputError, InvalidTypeError
from lora_proofcheck.testing import FAMILIES, NOISE, host_inputs, make_problem
from lora_proofcheck.testing.instances import attained_problem, imbalanced
from lora_proofcheck.testing.strategies import problems


def _logits(p):
    h = host_inputs(p)
    W = {m: h["W"][m] + p.scale * h["B"][m] @ h["A"][m] if m in p.adapted else h["W"][m] for m in "QK"}
    return p.beta * (h["X"] @ W["Q"]) @ np.swapaxes(h["X_kv"] @ W["K"], -1, -2)


def _spread(p) -> float:
    sv = np.linalg.svd(np.asarray(p.X), compute_uv=False)
    return sv[1] / sv[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_has_the_logit_bound_asked_for(family):
    p = make_problem(family, 20, 3, 2, R=1.5, adapt="QK", N=2, cross=True, L_kv=9, seed=4, dtype="float32")
    assert p.dtype_name == "float32" and p.N == 2 and p.L_kv == 9
    assert cm.certify(p).logit_bound == pytest.approx(1.5, rel=1e-5)
    assert np.abs(_logits(p)).max() <= 1.5 * (1 + 1e-5)


def test_edge_family_puts_logits_at_both_ends_of_the_bound():
    p = make_problem("edge", 40, 3, 2, R=2.0, seed=3, noise=1e-3)
    S = _logits(p)
    R = cm.certify(p).logit_bound
    assert S.max() > 0.98 * R and S.min() < -0.98 * R


def test_noise_knob_spreads_the_rows_and_defaults_to_the_table():
    assert set(NOISE) == set(FAMILIES) - {"gaussian"}
    for family in NOISE:
        default = make_problem(family, 12, 3, 1, R=1.0, seed=5)
        same = make_problem(family, 12, 3, 1, R=1.0, seed=5, noise=NOISE[family])
        np.testing.assert_array_equal(np.asarray(default.X), np.asarray(same.X))
        tight = make_problem(family, 12, 3, 1, R=1.0, seed=5, noise=NOISE[family] / 100)
        # rows along one direction up to the noise: sigma_2 / sigma_1 of X shrinks with it
        assert _spread(tight) < _spread(default) / 10, family


def test_bad_family_and_noise_are_clear_errors():
    with pytest.raises(InvalidInputError, match="family must be one of"):
        make_problem("adversarial", 8, 2, 1, R=1.0)
    with pytest.raises(InvalidInputError, match="noise must be a finite number > 0"):
        make_problem("aligned", 8, 2, 1, R=1.0, noise=0.0)
    with pytest.raises(InvalidTypeError, match="noise must be a real number"):
        make_problem("edge", 8, 2, 1, R=1.0, noise="0.1")


# ----------------------------------------------------------------------------------------------
# q/k imbalance, the attained instance, and what the `problems` strategy reaches


def _qk_norms(p):
    W = p.weights()
    f = lambda a: float(np.max(np.abs(np.asarray(a, np.float64))))  # noqa: E731
    return f(np.asarray(p.X3, np.float64) @ np.asarray(W["Q"], np.float64)), \
        f(np.asarray(p.Xkv3, np.float64) @ np.asarray(W["K"], np.float64))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_imbalance_keeps_the_logits_and_moves_the_sides_apart(dtype):
    p = make_problem("gaussian", 7, 3, 2, R=2.0, adapt="QKV", cross=True, L_kv=5, seed=3, dtype=dtype)
    q = imbalanced(p, 2.0**5)
    np.testing.assert_array_equal(_logits(q), _logits(p))       # powers of two scale exactly
    (pq, pk), (qq, qk) = _qk_norms(p), _qk_norms(q)
    assert qq / qk == pytest.approx(2.0**10 * pq / pk, rel=1e-6)
    assert q.dtype_name == dtype and q.adapted == p.adapted
    with pytest.raises(InvalidInputError, match="power of two"):
        imbalanced(p, 3.0)


def test_attained_problem_is_what_its_docstring_says():
    p = attained_problem()
    assert np.all(_logits(p) == 0.0) and p.L == 1 and p.L_kv == 2 and p.adapted == ("V",)
    np.testing.assert_array_equal(np.asarray(p.weights()["V"]), [[0.01]])


def test_the_strategy_reaches_imbalance_and_the_edge_of_the_logit_bound():
    """Hypothesis finds, within its budget, draws with q/k imbalance >= 2^8 (the balanced families
    are within ~2^2), draws at R = max_R whose logits reach 0.95 of it (the edge family), and
    Softmax_1 draws: the generator reaches the cases the floors are weakest on."""
    strat = problems(max_L=8, max_d=3, max_R=4.0, imbalance=6, offsets=(0.0, 1.0))
    quiet = settings(max_examples=2000, database=None, phases=[Phase.generate])  # cost: only until found
    found = find(strat, lambda p: (lambda q, k: q / k >= 2.0**8)(*_qk_norms(p)), settings=quiet)
    assert found is not None
    edge = find(strat, lambda p: float(np.abs(_logits(p)).max()) >= 0.95 * 4.0, settings=quiet)
    assert float(np.abs(_logits(edge)).max()) <= 4.0 * (1 + 1e-9)
    assert find(strat, lambda p: p.normalizer_offset > 0, settings=quiet).normalizer_offset == 1.0
