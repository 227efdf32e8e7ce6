"""Shared fixtures: array namespaces, the gpu marker, Hypothesis profiles, an in-process Dask cluster.

CI sets CI=true, which selects the derandomized "ci" profile below; locally "dev" explores with
random seeds. Every profile sets `derandomize` explicitly (registered profiles otherwise inherit
whatever `settings.default` is at import time).
"""

from __future__ import annotations

import logging
import os
import tempfile

import pytest
from hypothesis import HealthCheck, settings

# the time model's calibrated rates are cached per machine: tests (and the CLI runs they start) read
# the documented defaults, never a user's calibration
os.environ["LORA_PROOFCHECK_CACHE"] = tempfile.mkdtemp(prefix="lora-proofcheck-test-cache-")

settings.register_profile(
    "ci", derandomize=True, deadline=None, database=None, print_blob=True, max_examples=25,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev", derandomize=False, deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "deep", derandomize=False, deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def _cuda_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no CuPy, no driver, no device
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["numpy", "array_api_strict", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """Each array namespace the kernels must run on."""
    if request.param == "numpy":
        import array_api_compat.numpy as module
    elif request.param == "array_api_strict":
        module = pytest.importorskip("array_api_strict")
    else:
        module = pytest.importorskip("cupy")
    return module


@pytest.fixture(scope="module")
def thread_cluster():
    """A module-scoped in-process Dask cluster (2 worker threads, inproc transport; its HTTP server on a
    random port: no fixed ports). `distributed` comes with the test extra."""
    import distributed
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0",
                                  scheduler_port=0, silence_logs=logging.CRITICAL) as cluster:
        yield cluster
