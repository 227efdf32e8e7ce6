"""LoRAProblem validation: every bad input raises the package's own error naming the argument."""

import math

import numpy as np
import pytest

from lora_proofcheck import InvalidInputError, InvalidTypeError, LoRAProblem, ProofcheckError


def parts(L=5, d=3, r=2, adapt="QV", seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    g = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    return dict(X=g(L, d), Y=g(L, d), W={m: g(d, d) for m in "QKV"},
                A={m: g(r, d) for m in adapt}, B={m: g(d, r) for m in adapt}, alpha=2.0)


def build(**changes):
    kw = parts()
    kw.update(changes)
    return LoRAProblem(kw.pop("X"), kw.pop("Y"), kw.pop("W"), kw.pop("A"), kw.pop("B"), **kw)


def test_valid_problem_properties():
    p = build()
    assert (p.N, p.L, p.L_kv, p.d, p.r, p.adapted) == (1, 5, 5, 3, 2, ("Q", "V"))
    assert p.beta == pytest.approx(1 / math.sqrt(3)) and p.scale == 1.0 and not p.cross
    assert "LoRAProblem(" in repr(p)


def _with(name, value):
    kw = parts()
    if "[" in name:
        outer, key = name[0], name[3]
        kw[outer] = dict(kw[outer], **{key: value(kw[outer][key])})
    else:
        kw[name] = value(kw[name])
    return kw


@pytest.mark.parametrize("name", ["X", "Y", 'W["K"]', 'A["Q"]', 'B["V"]'])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_entries(name, bad):
    def poison(a):
        a = a.copy()
        a.flat[1] = bad
        return a
    kw = _with(name, poison)
    with pytest.raises(InvalidInputError, match=f"{name}.*NaN or infinite".replace("[", r"\[").replace("]", r"\]")):
        LoRAProblem(kw.pop("X"), kw.pop("Y"), kw.pop("W"), kw.pop("A"), kw.pop("B"), **kw)


def test_non_finite_cross_input():
    x_kv = np.ones((4, 3))
    x_kv[0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="X_kv contains NaN"):
        build(X_kv=x_kv)


@pytest.mark.parametrize("changes, match", [
    (dict(X=np.ones(5)), r"X must have shape \(L, d\) or \(N, L, d\)"),
    (dict(Y=np.ones((5, 4))), r"Y must have the shape of X"),
    (dict(W={"Q": np.ones((3, 3)), "K": np.ones((3, 2)), "V": np.ones((3, 3))}), r'W\["K"\] must have shape \(3, 3\)'),
    (dict(W={"Q": np.ones((3, 3)), "V": np.ones((3, 3))}), r"W must hold all of .*missing \['K'\]"),
    (dict(A={"Q": np.ones((2, 4)), "V": np.ones((2, 3))}), r'A\["Q"\] must have shape \(r, 3\)'),
    (dict(B={"Q": np.ones((4, 2)), "V": np.ones((3, 2))}), r'B\["Q"\] must have shape \(3, r\)'),
    (dict(B={"Q": np.ones((3, 1)), "V": np.ones((3, 2))}), r'A\["Q"\] has rank 2 but B\["Q"\] has rank 1'),
    (dict(A={"Q": np.ones((1, 3)), "V": np.ones((2, 3))}, B={"Q": np.ones((3, 1)), "V": np.ones((3, 2))}),
     r"share one rank r, got ranks \[1, 2\]"),
    (dict(A={"Q": np.ones((2, 3))}), r"A and B must adapt the same modules: .*B without A for \['V'\]"),
    (dict(A={}, B={}), r"at least one module"),
    (dict(A={"X": np.ones((2, 3))}), r"A has unknown module name\(s\) \['X'\]"),
    (dict(X_kv=np.ones((4, 2))), r"X_kv must have shape"),
    (dict(X_kv=np.ones((1, 4, 3))), r"X_kv must have as many dimensions as X"),
    (dict(alpha=float("nan")), r"alpha must be finite"),
    (dict(beta=float("inf")), r"beta must be finite"),
    (dict(normalizer_offset=-1.0), r"normalizer_offset must be >= 0"),
    (dict(normalizer_offset=float("nan")), r"normalizer_offset must be finite"),
])
def test_bad_values(changes, match):
    with pytest.raises(InvalidInputError, match=match):
        build(**changes)


@pytest.mark.parametrize("changes, match", [
    (dict(X=np.ones((5, 3), dtype=np.int64)), r"X has dtype int64; only float32 and float64"),
    (dict(Y=np.ones((5, 3), dtype=np.complex128)), r"Y has dtype complex128"),
    (dict(Y=np.ones((5, 3), dtype=np.float32)), r"Y has dtype float32 but X has dtype float64"),
    (dict(X=[[1.0] * 3] * 5), r"X must be an array"),
    (dict(W=[1, 2, 3]), r"W must be a dict"),
    (dict(alpha="2"), r"alpha must be a real number"),
    (dict(alpha=True), r"alpha must be a real number"),
    (dict(normalizer_offset="1"), r"normalizer_offset must be a real number"),
])
def test_bad_types(changes, match):
    with pytest.raises(InvalidTypeError, match=match):
        build(**changes)


def test_mixed_array_libraries():
    xps = pytest.importorskip("array_api_strict")
    with pytest.raises(InvalidTypeError, match="mixed array libraries: X is a numpy array but .*Y is a array_api_strict"):
        build(Y=xps.asarray(np.ones((5, 3))))


def test_errors_are_value_and_type_errors():
    assert issubclass(InvalidInputError, ValueError) and issubclass(InvalidInputError, ProofcheckError)
    assert issubclass(InvalidTypeError, TypeError) and issubclass(InvalidTypeError, ProofcheckError)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(L=0, d=2, r=1), InvalidInputError, "L must be a positive integer"),
    (dict(L=4, d=2, r=1.5), InvalidInputError, "r must be a positive integer"),
    (dict(L=4, d=2, r=1, adapt="QX"), InvalidInputError, "adapt must be"),
    (dict(L=4, d=2, r=1, adapt="QQ"), InvalidInputError, "adapt must be"),
    (dict(L=4, d=2, r=1, dtype="float16"), InvalidTypeError, "dtype must be one of"),
    (dict(L=4, d=2, r=1, logit_bound=-1.0), InvalidInputError, "logit_bound must be positive"),
    (dict(L=4, d=2, r=1, L_kv=3), InvalidInputError, "L_kv differs from L only for cross"),
    (dict(L=4, d=2, r=1, xp="no_such_array_lib"), InvalidInputError, "xp='no_such_array_lib'"),
])
def test_random_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        LoRAProblem.random(**kwargs)


@pytest.mark.parametrize("bound", [0.5, 3.0, 40.0])
@pytest.mark.parametrize("cross", [False, True])
def test_random_logit_bound_holds(bound, cross):
    p = LoRAProblem.random(40, 6, 2, adapt="QKV", logit_bound=bound, cross=cross, L_kv=30 if cross else None, N=2)
    W = p.weights()
    S = p.beta * (p.X3 @ W["Q"]) @ np.swapaxes(p.Xkv3 @ W["K"], -1, -2)
    q = np.linalg.norm(p.X3 @ W["Q"], axis=-1).max()
    k = np.linalg.norm(p.Xkv3 @ W["K"], axis=-1).max()
    assert np.abs(S).max() <= bound * (1 + 1e-12)
    assert p.beta * q * k == pytest.approx(bound, rel=1e-12)  # the Cauchy-Schwarz bound equals it


def test_random_is_reproducible_and_shapes():
    a, b = LoRAProblem.random(7, 3, 2, seed=11), LoRAProblem.random(7, 3, 2, seed=11)
    assert np.array_equal(a.X, b.X) and np.array_equal(a.A["V"], b.A["V"])
    assert a.X.shape == (7, 3) and LoRAProblem.random(7, 3, 2, N=3).X.shape == (3, 7, 3)
    assert LoRAProblem.random(7, 3, 2, dtype="float32").dtype == np.float32


def test_softmax_1_offset_is_kept_and_shown():
    p = LoRAProblem.random(8, 3, 1, normalizer_offset=1.0)
    assert p.normalizer_offset == 1.0 and p.log_n == 0.0 and "normalizer_offset=1" in repr(p)
    assert LoRAProblem.random(8, 3, 1).log_n == -float("inf")
