"""Hypothesis strategies of test problems (needs hypothesis: the `test` extra; imported only by tests).

`problems` draws from the adversarial families of `instances.make_problem`; `small_problems` draws
tiny Gaussian instances for exact-arithmetic comparisons. Every draw is noted, so a failing example
prints the instance it ran.
"""

from __future__ import annotations

import json
import os

from hypothesis import note
from hypothesis import strategies as st

from ..problem import LoRAProblem
from .instances import FAMILIES, imbalanced, make_problem

__all__ = ["ADAPTS", "problems", "record_ratio", "small_problems"]

ADAPTS = ("Q", "QV", "QK", "QKV", "V", "K")


@st.composite
def problems(draw, *, max_L=64, max_d=6, ranks=(1, 3), max_R=6.0, dtypes=("float64",), imbalance=0,
             offsets=(0.0,)):
    """A problem of any family: L, L_kv in [2, max_L], d in [1, max_d], r in `ranks` (inclusive
    range), logit bound R in [0.05, max_R], self or cross attention, N in [1, 3], any module subset,
    a normaliser offset from `offsets` (0: softmax, > 0: Softmax_1). `imbalance` = e > 0: q/k
    imbalance 2^j, |j| <= e (`instances.imbalanced`: the same logits, |X W_Q| and |X' W_K| apart).
    R is drawn with its end max_R as an explicit choice (logits at the edge of what is asked), and
    the "edge" family puts every logit near +-R (the Cauchy-Schwarz bound attained)."""
    family = draw(st.sampled_from(FAMILIES))
    d = draw(st.integers(1, max_d))
    L = draw(st.integers(2, max_L))
    cross = draw(st.booleans())
    L_kv = draw(st.integers(2, max_L)) if cross else None
    adapt = draw(st.sampled_from(ADAPTS))
    N = draw(st.integers(1, 3))
    R = draw(st.one_of(st.just(max_R), st.floats(0.05, max_R)))
    seed = draw(st.integers(0, 2**32 - 1))
    r = draw(st.integers(*ranks))
    dtype = draw(st.sampled_from(dtypes))
    offset = draw(st.sampled_from(offsets))
    j = draw(st.integers(-imbalance, imbalance)) if imbalance else 0
    note(f"{family} L={L} L_kv={L_kv} d={d} r={r} adapt={adapt} N={N} R={R:.3g} seed={seed} {dtype} "
         f"offset={offset} imbalance=2^{j}")
    p = make_problem(family, L, d, r, R=R, adapt=adapt, N=N, cross=cross, L_kv=L_kv, seed=seed, dtype=dtype,
                     normalizer_offset=offset)
    return imbalanced(p, 2.0**j) if j else p


@st.composite
def small_problems(draw, xp=None):
    """A tiny Gaussian Q,K,V problem (L, L_kv <= 12, d <= 5), batched or not, self or cross, softmax or
    Softmax_1 (normaliser offset 1)."""
    cross = draw(st.booleans())
    return LoRAProblem.random(
        draw(st.integers(1, 12)), draw(st.integers(1, 5)), draw(st.integers(1, 2)), adapt="QKV",
        N=draw(st.integers(1, 3)), cross=cross, L_kv=draw(st.integers(1, 12)) if cross else None,
        logit_bound=draw(st.sampled_from([0.1, 1.0, 4.0])), seed=draw(st.integers(0, 2**31)), xp=xp,
        normalizer_offset=draw(st.sampled_from([0.0, 1.0])),
    )


def record_ratio(ratio: float, label: str, **info) -> None:
    """Append a measured/bound ratio to $LORA_PROOFCHECK_RATIO_LOG, when set (for the figures in reports)."""
    path = os.environ.get("LORA_PROOFCHECK_RATIO_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"label": label, "ratio": ratio, **{k: str(v) for k, v in info.items()}}) + "\n")
