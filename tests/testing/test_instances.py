"""The shared test instances: every family reaches its logit bound, the edge family sits at both
ends of it, the noise knob moves rows and nothing else, bad arguments are clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from lora_proofcheck.certification import certificate as cm
from lora_proofcheck.errors import InvalidInputError, InvalidTypeError
from lora_proofcheck.testing import FAMILIES, NOISE, host_inputs, make_problem


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
