"""What a report run does at each size: `tiny` (tests only), `--quick`, `--full`.

Every random draw of a run comes from `ReportConfig.rng(stream)`: the base seed and a fixed name
per use, so the same seed gives the same instances however many checks run before. The rule is
the sweep engine's (`sweeps.engine.stream_seed`): a grid cell keyed ("property", case, L, R) draws
from the stream "property/{case}/{L}/{R}", whatever runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._lib import xp as _xp
from .._lib.jsonable import jsonable
from .._lib.validate import MAX_SEED, check_seed
from ..errors import InvalidInputError
from ..sweeps.engine import stream_seed

__all__ = ["BACKENDS", "MAX_SEED", "MODES", "SIZES", "ReportConfig", "check_backend", "namespace_of"]

MODES = ("tiny", "quick", "full")
BACKENDS = ("numpy", "cupy")

# Per-mode sizes of every section (kept in one table so the cost of a mode is visible at once).
SIZES = {
    "tiny": dict(
        proofs="fast",
        chain_instances=2,
        as_lemma_trials=20,
        property_L=(48,),
        property_R=(0.5, 2.0),
        property_eps=(1e-4,),
        property_cases=("QV", "QK-cross"),
        frontier_log2L=(8, 12, 16),
        frontier_t=(0.1, 0.25, 0.5, 1.0),
        frontier_d=(4,),
        frontier_c=(0.5,),
        sweep_L=(128,),
        sweep_x=(0.3, 0.8, 1.5, 2.5),
        sweep_degree=3,
        sweep_d=4,
        bench=None,
        timing_L=(64, 128, 256),
    ),
    "quick": dict(
        proofs="quick",
        chain_instances=10,
        as_lemma_trials=200,
        property_L=(64, 200),
        property_R=(0.25, 1.0, 3.0),
        property_eps=(1e-3, 1e-6),
        property_cases=("QV", "QK", "QKV", "QKV-cross"),
        frontier_log2L=tuple(range(8, 31, 2)),
        frontier_t=(0.05, 0.1, 0.15, 0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0),
        frontier_d=(8,),
        frontier_c=(0.25, 0.5),
        sweep_L=(256, 1024, 4096),
        sweep_x=(0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5),
        sweep_degree=4,
        sweep_d=6,
        bench="quick",
        timing_L=(256, 512, 1024, 2048, 4096),
    ),
    "full": dict(
        proofs="full",
        chain_instances=40,
        as_lemma_trials=2000,
        property_L=(64, 256, 1024),
        property_R=(0.1, 0.5, 1.0, 2.0, 4.0),
        property_eps=(1e-3, 1e-6, 1e-9),
        property_cases=("QV", "QK", "KV", "QKV", "QV-cross", "QKV-cross"),
        frontier_log2L=tuple(range(8, 31)),
        frontier_t=(
            0.02,
            0.05,
            0.1,
            0.15,
            0.2,
            0.25,
            0.3,
            0.35,
            0.4,
            0.5,
            0.6,
            0.7,
            0.85,
            1.0,
            1.2,
            1.4,
            1.7,
            2.0,
        ),
        frontier_d=(8, 16),
        frontier_c=(0.25, 0.5, 1.0),
        sweep_L=(256, 1024, 4096, 16384),
        sweep_x=(0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0),
        sweep_degree=4,
        sweep_d=6,
        bench="full",
        timing_L=(256, 512, 1024, 2048, 4096, 8192, 16384),
    ),
}


def namespace_of(backend: str):
    """The array namespace of a report backend ("numpy" or "cupy")."""
    return _xp.resolve_namespace("cupy" if backend == "cupy" else None)


def check_backend(backend: str, name: str = "backend") -> str:
    """'numpy', or 'cupy' where CuPy sees a CUDA device; `name` is what errors call the argument."""
    if backend not in BACKENDS:
        raise InvalidInputError(f"{name} must be 'numpy' or 'cupy', got {backend!r}")
    if backend == "cupy":
        try:
            import cupy  # noqa: PLC0415 - never imported unless asked for by name

            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # noqa: BLE001 - no CuPy, no driver, no device
            raise InvalidInputError(f"{name} cupy: CuPy with a CUDA device is not available here ({exc})") from None
        if count < 1:
            raise InvalidInputError(f"{name} cupy: CuPy found no CUDA device")
    return backend


@dataclass(frozen=True)
class ReportConfig:
    mode: str = "quick"
    seed: int = 0
    backend: str = "numpy"
    bench_file: str | None = None  # a recorded `lora-proofcheck bench` result to summarize instead
    peers_file: str | None = None  # a recorded `lora-proofcheck bench --peers` result to carry
    stress_file: str | None = None  # a recorded `lora-proofcheck stress --out` summary to carry
    audit_file: str | None = None  # a recorded `lora-proofcheck audit` (audit.json): "Where real heads sit"
    sizes: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if self.mode not in MODES:
            raise InvalidInputError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.backend not in BACKENDS:
            raise InvalidInputError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        object.__setattr__(self, "seed", check_seed("seed", self.seed))
        object.__setattr__(self, "sizes", dict(SIZES[self.mode]))

    def seed_for(self, stream: str) -> int:
        """A 32-bit seed derived from the base seed and a stream name (stable across versions)."""
        return stream_seed(self.seed, stream)

    def rng(self, stream: str) -> np.random.Generator:
        return np.random.default_rng(self.seed_for(stream))

    def xp(self):
        """The array namespace of the chosen backend."""
        return namespace_of(self.backend)

    def as_dict(self) -> dict:
        return {"mode": self.mode, "seed": self.seed, "backend": self.backend, "sizes": jsonable(self.sizes)}
