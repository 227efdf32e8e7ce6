"""The exact path: loss and LoRA gradients through the generated O(L^2 d) kernels.

Dense by default for moderate sizes; for long sequences the query rows are processed in blocks
(every block still sees all keys, so each block's softmax is exact and no online rescaling is
needed): peak memory O(N * block_rows * L_kv + L * d) instead of O(N * L * L_kv).
"""

from __future__ import annotations

from .errors import InvalidInputError, InvalidTypeError
from .kernels import _generated_exact as gen
from .kernels import _generated_lora as gen_lora
from .problem import LoRAProblem

# Dense when the L x L_kv working set (about 6 live arrays) fits this; else blocks of this size.
DENSE_LIMIT_BYTES = 1 << 30
BLOCK_TARGET_BYTES = 1 << 27
LIVE_ARRAYS = 6


def _check_problem(problem) -> LoRAProblem:
    if not isinstance(problem, LoRAProblem):
        raise InvalidTypeError(f"problem must be a LoRAProblem, got {type(problem).__name__}")
    return problem


def choose_block_rows(problem: LoRAProblem, block_rows="auto") -> int | None:
    """Rows per block (None: dense). `block_rows` is "auto", None (dense) or a positive int."""
    if block_rows is None:
        return None
    itemsize = 4 if problem.dtype_name == "float32" else 8
    per_row = LIVE_ARRAYS * problem.N * problem.L_kv * itemsize
    if block_rows == "auto":
        if per_row * problem.L <= DENSE_LIMIT_BYTES:
            return None
        return max(1, min(problem.L, BLOCK_TARGET_BYTES // per_row))
    if isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1:
        raise InvalidInputError(f"block_rows must be 'auto', None or a positive int, got {block_rows!r}")
    return None if block_rows >= problem.L else block_rows


def weight_gradients(problem: LoRAProblem, modules: str, *, block_rows="auto"):
    """Batch-mean loss and {mu: dL/dW_mu} for `modules` (a string over 'QKV')."""
    problem = _check_problem(problem)
    xp = problem.xp
    W = problem.weights()
    kernel = getattr(gen, f"exact_gradients_{modules}")
    args = (problem.Xkv3, W["Q"], W["K"], W["V"])
    rows = choose_block_rows(problem, block_rows)
    if rows is None:
        parts = [kernel(problem.X3, *args, problem.Y3, problem.beta)]
    else:
        parts = (kernel(problem.X3[:, i:i + rows, :], *args, problem.Y3[:, i:i + rows, :], problem.beta)
                 for i in range(0, problem.L, rows))
    total = None
    for part in parts:  # row blocks add up: every term is a sum over query rows
        sums = {k: xp.sum(v, axis=0) for k, v in part.items()}
        total = sums if total is None else {k: total[k] + sums[k] for k in total}
    n = problem.N
    return total["loss"] / n, {m: total[f"dW_{m}"] / n for m in modules}


def loss(problem: LoRAProblem, *, block_rows="auto"):
    """L = 1/(2N) sum_n ||F_n X'_n W_V - Y_n||_F^2, a 0-d array in the input's namespace."""
    problem = _check_problem(problem)
    W = problem.weights()
    total = None
    rows = choose_block_rows(problem, block_rows) or problem.L
    for i in range(0, problem.L, rows):
        part = gen.exact_gradients_V(problem.X3[:, i:i + rows, :], problem.Xkv3, W["Q"], W["K"], W["V"],
                                     problem.Y3[:, i:i + rows, :], problem.beta)["loss"]
        total = problem.xp.sum(part) if total is None else total + problem.xp.sum(part)
    return total / problem.N


def exact_gradients(problem: LoRAProblem, *, block_rows="auto") -> dict:
    """Exact dL/dA_mu and dL/dB_mu for every adapted module, keyed "A_Q", "B_Q", ...

    Arrays are in the input's namespace, dtype and device. `block_rows` picks dense (None) or
    row-blocked evaluation; "auto" goes blocked once the dense working set passes 1 GiB.
    """
    problem = _check_problem(problem)
    _, dW = weight_gradients(problem, "".join(problem.adapted), block_rows=block_rows)
    return lora_factor_gradients(problem, dW)


def lora_factor_gradients(problem: LoRAProblem, dW: dict) -> dict:
    """{"A_mu": (alpha/r) B^T dW_mu, "B_mu": (alpha/r) dW_mu A^T} for the adapted modules."""
    out = {}
    for m in problem.adapted:
        g = gen_lora.lora_gradients(dW[m], problem.A[m], problem.B[m], problem.scale)
        out[f"A_{m}"], out[f"B_{m}"] = g["dA"], g["dB"]
    return out
