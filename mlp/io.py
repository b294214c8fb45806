"""Saving and loading models without pickle.

A model file is an uncompressed NumPy .npz archive with two entries: `header`, the JSON
architecture (plus the SHA-256 of the weights) as bytes, and `params`, the flat parameter
buffer. It is written to a temporary file beside the target and renamed over it, so a
crash mid-save never leaves a half-written model. Loading uses allow_pickle=False and
checks the format, the shapes and the checksum.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

from mlp.errors import ModelFileError

FORMAT = "mlp-model"
VERSION = 1


def atomic_write(path, write):
    """Write `path` atomically: `write(f)` into a temporary binary file in the same folder (a
    name of its own: concurrent writers never share one), fsync, rename over `path`. Readers
    see the old file or the new, never half of one."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_npz(path, arrays: dict):
    """Write an .npz to `path` atomically (see `atomic_write`)."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _digest(params: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(params).tobytes()).hexdigest()


def save(model, path, extra_header=None, extra_arrays=None):
    """Write `model` to `path` atomically; checkpoints add their state in the extras."""
    params = model.backend.to_numpy(model.params)
    header = {"format": FORMAT, "version": VERSION, **model.config(), "sha256": _digest(params),
              **(extra_header or {})}
    if model.loss is not None:
        header["compile"] = {"loss": model.loss.name, "optimizer": model.optimizer.config(),
                             "l1": model.l1, "l2": model.l2, "clip_norm": model.clip_norm,
                             "metrics": model.metrics}
    atomic_write_npz(path, {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
                            "params": params, **(extra_arrays or {})})


def read(path):
    """(header dict, params array, other arrays by name) of a model file, checked; the
    archive is opened and verified once."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFileError(f"no model file at {path!r}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            header = json.loads(bytes(archive["header"]).decode())
            params = archive["params"]
            extras = {name: archive[name] for name in archive.files if name not in ("header", "params")}
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError, UnicodeDecodeError) as error:
        raise ModelFileError(
            f"{path!r} is not a readable mlp model file (truncated, damaged or another format): {error}"
        ) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"{path!r} is an .npz archive but not an mlp model file")
    if header.get("version") != VERSION:
        raise ModelFileError(f"{path!r} has model format version {header.get('version')}; "
                             f"this library reads version {VERSION}")
    if params.ndim != 1 or header.get("sha256") != _digest(params):
        raise ModelFileError(f"the weights in {path!r} do not match their checksum: "
                             "the file was modified or damaged")
    return header, params, extras


def load(path, backend=None):
    """The model saved at `path`, on `backend` (default: MLP_BACKEND, else numpy)."""
    from mlp.layers import from_config
    from mlp.model import Sequential

    header, params, _ = read(path)
    try:
        layers = [from_config(c) for c in header["layers"]]
        model = Sequential(layers, backend=backend, dtype=header["dtype"])
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(f"the architecture in {path!r} is invalid: {error}") from None
    if params.shape != (model.n_params,):
        raise ModelFileError(f"{path!r} holds {params.size} parameters but its architecture "
                             f"needs {model.n_params}")
    model.params[...] = model.backend.asarray(params, model.dtype)
    if "compile" in header:
        model.compile(**header["compile"])
    return model
