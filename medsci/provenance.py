"""Provenance: file digests, the software/hardware environment, and switching on deterministic torch.

Task-agnostic. Nothing here raises for a missing optional package, a missing ``git`` or a source tree that
is not a git checkout: provenance is recorded as well as it can be, with ``None`` where a fact is unknown.

Byte-reproducibility of generated files needs the same inputs, weights, sampler settings and seeds *and*
the same software and hardware (torch version, BLAS/cuDNN kernels, device model, thread count can all change
the last bits of floating-point results). :func:`environment` records exactly those facts so that a
difference between two runs can be traced to its cause.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from medsci import __version__

#: Packages whose versions are recorded (when installed) by :func:`environment`.
PACKAGES = ("torch", "monai", "numpy", "nibabel", "SimpleITK", "pydicom", "safetensors", "scipy")

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (constant memory for any file size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed distribution versions (``None`` for a package that is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("model name", "Model", "cpu model", "Hardware"):
                    return value.strip() or None
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def _threads() -> dict[str, int | None]:
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    out: dict[str, int | None] = {"cpu_count": os.cpu_count(), "usable_cpus": affinity, "torch_threads": None,
                                  "torch_interop_threads": None}
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch  # noqa: F811
        except ImportError:
            return out
    out["torch_threads"] = int(torch.get_num_threads())
    out["torch_interop_threads"] = int(torch.get_num_interop_threads())
    return out


def _torch_facts() -> dict[str, Any] | None:
    try:
        import torch
    except ImportError:
        return None
    facts: dict[str, Any] = {
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": None,
        "cuda_available": False,
        "devices": [],
        "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "cpu_capability": None,  # the SIMD kernels torch dispatches to (AVX2, AVX512, ...): they change bits
    }
    try:
        facts["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:
        pass
    try:
        facts["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:  # a broken CUDA install must not stop provenance being written
        facts["cudnn"] = None
    try:
        if torch.cuda.is_available():
            facts["cuda_available"] = True
            facts["devices"] = [{"name": torch.cuda.get_device_name(i),
                                 "capability": list(torch.cuda.get_device_capability(i))}
                                for i in range(torch.cuda.device_count())]
    except Exception:
        pass
    return facts


def git_commit(path: str | Path | None = None) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool | None}`` of the git checkout holding the medsci sources.

    ``None`` when the package is not inside a git checkout (e.g. installed from a wheel), when ``git`` is not
    installed, or on any git failure. The package's own ``__init__.py`` must be tracked by that repository,
    so a medsci installed inside someone else's repository (a virtual environment in a project) is not
    mistaken for a checkout of medsci. Read-only: optional index locks are disabled.
    """
    folder = Path(path) if path is not None else Path(__file__).resolve().parent
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                                  timeout=10, env=env, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None or len(commit.strip()) < 40:
        return None
    if path is None and git("ls-files", "--error-unmatch", "__init__.py") is None:
        return None  # the package folder sits inside an unrelated repository
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def deterministic_settings() -> dict[str, Any]:
    """What is currently switched on for reproducible numerics (torch's global flags and the env vars)."""
    out: dict[str, Any] = {
        "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED"),
    }
    try:
        import torch
    except ImportError:
        return out
    out.update({
        "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled()),
        "deterministic_warn_only": bool(torch.is_deterministic_algorithms_warn_only_enabled()),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    })
    return out


def enable_determinism(seed: int | None = None, warn_only: bool = True) -> dict[str, Any]:
    """Switch torch to deterministic kernels and seed every generator; returns :func:`deterministic_settings`.

    ``CUBLAS_WORKSPACE_CONFIG`` is set only if unset; it takes effect for cuBLAS handles created afterwards,
    so call this before the first CUDA matrix product. With ``warn_only`` (default) an operation that has no
    deterministic implementation warns instead of failing. Seeds torch (CPU and every CUDA device), numpy
    and ``random`` when ``seed`` is given.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    if seed is not None:
        import numpy as np

        random.seed(seed)
        np.random.seed(seed % (2**32))
        torch.manual_seed(seed)  # also seeds every CUDA device
    return deterministic_settings()


def environment() -> dict[str, Any]:
    """Software and hardware facts that can change the bits of a computed result."""
    return {
        "medsci_version": __version__,
        "medsci_git": git_commit(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "threads": _threads(),
        "packages": package_versions(),
        "torch": _torch_facts(),
        "deterministic": deterministic_settings(),
    }
