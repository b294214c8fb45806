"""Backend registry. A backend is a module in this folder (the file name is its name)
that defines `Backend`; `MLP_BACKEND=name` or `backend="name"` picks one, and only the
chosen module (and its array package) is imported.
"""
from __future__ import annotations

import importlib
import pkgutil

from mlp import config
from mlp.backends._base import Backend
from mlp.errors import BackendUnavailableError

__all__ = ["Backend", "get_backend", "available", "names", "BackendUnavailableError"]

_instances: dict[str, Backend] = {}


def names() -> list[str]:
    """Every backend this installation knows, installed or not."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get_backend(name: str | Backend | None = None) -> Backend:
    """The backend called `name` (default: MLP_BACKEND, else numpy).

    Raises ValueError for an unknown name (listing the valid ones) and
    BackendUnavailableError when its package is missing (naming the extra to install)
    or it has no device.
    """
    if isinstance(name, Backend):
        return name
    if name is None:
        name = config.backend_name()
    if not isinstance(name, str):
        raise TypeError(f"backend must be a name or a Backend; got {type(name).__name__}")
    key = name.strip().lower()
    if key not in _instances:
        known = names()
        if key not in known:
            raise ValueError(f"Unknown backend {name!r}. Valid backends: {', '.join(known)}.")
        module = importlib.import_module(f"{__name__}.{key}")
        _instances[key] = module.Backend()
    return _instances[key]


def available() -> list[str]:
    """The backends that can run on this machine (this imports each one to find out)."""
    return [name for name in names() if unavailable_reason(name) is None]


def unavailable_reason(name: str) -> str | None:
    """None when `name` can run here, else why not (package missing, no device...)."""
    try:
        get_backend(name)
    except BackendUnavailableError as error:
        return str(error)
    return None
