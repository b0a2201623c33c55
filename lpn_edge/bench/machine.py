"""What a benchmark ran on: enough to reproduce it and to judge its figures (load average beside every run)."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def commit() -> str | None:
    """The short commit of the checkout lpn_edge runs from (None outside a git checkout), '+' when it is dirty."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head.stdout.strip() + ("+" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    import importlib.metadata as metadata

    found = {"python": platform.python_version()}
    for package in ("numpy", "torch", "onnxruntime", "faiss-cpu", "tensorrt"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


def gpu_name() -> str | None:
    """The first CUDA device's name via torch when it is installed and sees one (None otherwise)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def describe() -> dict:
    return {"cpu": cpu_name(), "cpus": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity") else None, "gpu": gpu_name(), "load_average_start": load_average(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "commit": commit(), "versions": versions(),
            # numpy's BLAS threads: on a loaded machine a multi-threaded OpenBLAS makes small matmuls 30x slower
            "environment": {name: os.environ[name] for name in THREAD_VARIABLES if name in os.environ}}
