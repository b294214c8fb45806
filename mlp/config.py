"""Settings read from the environment. Imports nothing heavy."""
import os

DEFAULT_BACKEND = "numpy"
DEFAULT_DTYPE = "float32"


def backend_name() -> str:
    """MLP_BACKEND, or numpy. Read on each call so tests and users can change it."""
    return os.environ.get("MLP_BACKEND", "").strip().lower() or DEFAULT_BACKEND


def default_dtype() -> str:
    return os.environ.get("MLP_DTYPE", "").strip().lower() or DEFAULT_DTYPE
