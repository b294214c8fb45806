"""A description of the machine and libraries, stored beside every result."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
import sys


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict:
    found = {}
    for package in ("numpy", "numba", "cupy-cuda12x", "cupy-cuda13x", "cupy", "torch", "jax",
                    "jaxlib", "scipy", "pytest-benchmark"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def blas() -> list:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"note": "install threadpoolctl to see BLAS libraries and thread counts"}]
    return [{k: info.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer",
                                      "architecture")} for info in threadpool_info()]


def gpu_name(backends) -> str | None:
    for backend in backends:
        describe = getattr(backend, "device_name", None)
        if describe is not None:
            return describe()
    return None


def describe(backends=(), threads=None, dtype="float32") -> dict:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": gpu_name(backends),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": versions(),
        "blas": blas(),
        "threads": threads,
        "dtype": dtype,
        "command": command_line(),
    }


def command_line() -> str:
    """The command that is running, as a user would type it again."""
    script = os.path.basename(sys.argv[0])
    folder = os.path.basename(os.path.dirname(sys.argv[0]))
    if script == "mlp" or (script == "__main__.py" and folder == "mlp"):
        prefix = "mlp"
    elif script == "__main__.py" and folder == "bench":
        prefix = "mlp bench"
    else:
        prefix = f"python {sys.argv[0]}"
    return " ".join([prefix] + [shlex.quote(arg) for arg in sys.argv[1:]])
