"""Where compiled Numba kernels live: the cache folder, checked to be private before any generated
module is executed from it (no Numba import here: the backend's reference path never needs one)."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import warnings

from mlp import config as settings


def cache_dir() -> str:
    """Where generated kernels and their compiled code live (MLP_CACHE_DIR to move it)."""
    base = settings.cache_dir() or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "mlp")
    return os.path.join(base, "numba")


_folders = {}  # the configured cache folder -> the folder generated modules go to, checked once


def _unusable_reason(folder):
    """Why generated modules must not be cached in `folder` (None: they may). Numba's cache
    beside a module holds pickled compiled code, and a module is executed when loaded: a
    folder that another user owns, or may write to, could make this process run their code."""
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        info = os.stat(folder)
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            return f"{folder} belongs to another user (uid {info.st_uid})"
        if info.st_mode & 0o077:  # ours, but open to others (an earlier version made it 0755)
            os.chmod(folder, 0o700)
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"{folder} is not writable"
    except OSError as error:
        return f"{folder} cannot be used ({error.strerror or error})"
    return None


def module_folder() -> str:
    """The cache folder, checked once per process (and setting); an unusable one (another user's, not
    writable) is replaced, with one warning naming MLP_CACHE_DIR, by a private temporary
    folder for this process (0700, removed at exit): kernels are compiled as usual, only not
    kept for the next process."""
    configured = cache_dir()
    if configured not in _folders:
        reason = _unusable_reason(configured)
        folder = configured
        if reason is not None:
            folder = tempfile.mkdtemp(prefix="mlp-numba-")
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            warnings.warn(f"the Numba kernel cache cannot be used: {reason}. Compiled kernels go to {folder} "
                          "for this process only; set MLP_CACHE_DIR to a folder of your own to keep them "
                          "between runs.", RuntimeWarning, stacklevel=3)
        _folders[configured] = folder
    return _folders[configured]
