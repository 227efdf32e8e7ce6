"""Environment facts for `lora-proofcheck env` and reports (versions, BLAS, CPU/GPU, git commit)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

__all__ = ["available_memory", "blas", "collect", "cpu", "git_commit", "gpu", "versions"]

PACKAGES = ("lora-proofcheck", "numpy", "scipy", "sympy", "array-api-compat", "array-api-strict",
            "hypothesis", "matplotlib", "tqdm", "rich", "torch", "cupy-cuda13x", "cupy-cuda12x")


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (Linux MemAvailable; else free pages per
    sysconf), or None when neither can be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def blas() -> list:
    import numpy  # noqa: F401, PLC0415 - loads the BLAS threadpoolctl inspects
    from threadpoolctl import threadpool_info  # noqa: PLC0415 - scans the loaded libraries: only when asked

    return [{k: info.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for info in threadpool_info() if info.get("user_api") == "blas"]


def cpu() -> dict:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "cores": cores, "machine": platform.machine(), "system": platform.platform()}


def gpu() -> list:
    """CUDA devices visible to CuPy (empty without CuPy or a device); imports CuPy only if installed."""
    try:
        importlib.metadata.version("cupy-cuda13x")
    except importlib.metadata.PackageNotFoundError:
        try:
            importlib.metadata.version("cupy-cuda12x")
        except importlib.metadata.PackageNotFoundError:
            return []
    try:
        import cupy  # noqa: PLC0415

        n = cupy.cuda.runtime.getDeviceCount()
        return [{"name": cupy.cuda.runtime.getDeviceProperties(i)["name"].decode(),
                 "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion()} for i in range(n)]
    except Exception:  # noqa: BLE001 - no driver / no device: report none
        return []


def git_commit() -> dict:
    root = Path(__file__).resolve().parents[2]  # the checkout holding the package
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True,
                                    text=True, timeout=10, check=True).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"id": None, "dirty": None}
    return {"id": sha, "dirty": dirty}


def collect() -> dict:
    return {"versions": versions(), "blas": blas(), "cpu": cpu(), "gpu": gpu(), "commit": git_commit()}
