"""Settings read from the environment. Imports nothing heavy."""
import os

DEFAULT_BACKEND = "numpy"
DEFAULT_DTYPE = "float32"


def backend_name() -> str:
    """MLP_BACKEND, or numpy. Read on each call so tests and users can change it."""
    return os.environ.get("MLP_BACKEND", "").strip().lower() or DEFAULT_BACKEND


def default_dtype() -> str:
    return os.environ.get("MLP_DTYPE", "").strip().lower() or DEFAULT_DTYPE


OFF = ("0", "false", "no", "off")


def flag(name: str, default: bool) -> bool:
    """An on/off setting: unset or empty gives `default`; 0/false/no/off (any case) turn it
    off; any other value turns it on."""
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value not in OFF
